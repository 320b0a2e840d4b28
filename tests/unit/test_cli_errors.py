"""Bad input ends with one error line and exit code 2, and leaves an existing store exactly as it was.

Every case here fails before a model is loaded, so no model is needed.
"""

import pytest
from click.testing import CliRunner

from llkd_edge.cli import main
from llkd_edge.store import LabelRow, LabelStore, ScoringKey

KEY = ScoringKey("sha", "cfg")


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path) as s:
        s.register(KEY, "t", ["a", "b"], {})
        s.add(KEY, [LabelRow("kept text", (0.9, 0.1), "a", 0.9, 0.3, 0.5, 3, False)])
    return path


def dump(path):
    with LabelStore(path) as s:
        return s.rows(KEY), s.configs()


def run(args):
    return CliRunner().invoke(main, args)


def write(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


CASES = {
    "missing file": (lambda p: ["label", str(p / "nope.csv"), "--labels", "a,b"], "no such file"),
    "empty file": (lambda p: ["label", write(p, "e.csv", b""), "--labels", "a,b"], "empty"),
    "unknown column": (lambda p: ["label", write(p, "c.csv", b"body\nx\n"), "--labels", "a,b"], "no column 'text'"),
    "undecodable bytes": (lambda p: ["label", write(p, "u.csv", b"text\n\xff\xfe bad\n"), "--labels", "a,b"], "UTF-8"),
    "one label": (lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a"], "at least 2 labels"),
    "duplicate labels": (lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b,a"], "duplicate"),
    "no labels": (lambda p: ["label", write(p, "d.csv", b"text\nx\n")], "no label set"),
    "gold not in labels": (
        lambda p: ["label", write(p, "g.csv", b"text,label\nx,a\ny,c\n"), "--labels", "a,b"],
        "not in the label set: 'c'",
    ),
    "only empty texts": (lambda p: ["label", write(p, "w.txt", b"  \n\n \t\n"), "--labels", "a,b"], "no non-empty"),
    "unknown teacher": (
        lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--teacher", "gpt-99"],
        "unknown teacher 'gpt-99'",
    ),
    "missing gguf": (
        lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--teacher", str(p / "m.gguf")],
        "no such model file",
    ),
    "not a gguf": (
        lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--teacher", write(p, "m.gguf", b"PK\x03\x04zip")],
        "not a GGUF file",
    ),
    "ray option without ray": (
        lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--workers", "4"],
        "--workers: only with --backend ray",
    ),
    "no workers": (
        lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--backend", "ray", "--workers", "0"],
        "--workers must be at least 1",
    ),
    "negative gpus": (
        lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--backend", "ray",
                   "--gpus-per-worker", "-1"],
        "--gpus-per-worker must be 0 or more",
    ),
    "gpu layers without ray gpus": (
        lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--backend", "ray",
                   "--n-gpu-layers", "-1"],
        "--n-gpu-layers with --backend ray needs --gpus-per-worker",
    ),
    "unreachable ray cluster": (
        lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--backend", "ray",
                   "--address", "127.0.0.1:9"],
        "cannot reach the Ray cluster at 127.0.0.1:9",
    ),
    "too parallel": (
        lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--parallel", "500"],
        "--parallel must be between 0 (auto) and 64",
    ),
    "bad gpu layers": (
        lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--n-gpu-layers", "-5"],
        "--n-gpu-layers must be -1 (all), 0 or more",
    ),
    "gold texts shown as few-shot examples": (
        lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--gold",
                   write(p, "g.csv", b"text,label\nfirst,a\nsecond,b\n"),
                   "--few-shot", write(p, "f.csv", b"text,label\nFirst ,a\n")],
        "1 of its texts are also --few-shot examples",
    ),
    "eval texts shown as few-shot examples": (
        lambda p: ["distill", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--out", str(p / "run"), "--eval",
                   write(p, "e.csv", b"text,label\nfirst,a\nsecond,b\n"),
                   "--few-shot", write(p, "f.csv", b"text,label\nsecond,b\n")],
        "1 of its texts are also --few-shot examples",
    ),
    "budget options without a budget": (
        lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--budget-strategy", "random"],
        "take effect with --budget only",
    ),
    "fill options without a label budget": (
        lambda p: ["distill", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--out", str(p / "run"),
                   "--no-fill-rest"],
        "take effect with --label-budget only",
    ),
    "option value out of range": (
        lambda p: ["distill", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--out", str(p / "run"),
                   "--llkd-floor", "2"],
        "Invalid value for '--llkd-floor': 2.0 is not in the range 0<=x<=1. (see `",
    ),
    "unknown option": (lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--nope"],
                       "No such option '--nope'"),
    "unknown choice": (
        lambda p: ["distill", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--selection", "best"],
        "Invalid value for '--selection'",
    ),
    "unknown command": (lambda p: ["lable", write(p, "d.csv", b"text\nx\n")], "No such command 'lable'"),
    "bad max tokens": (
        lambda p: ["label", write(p, "d.csv", b"text\nx\n"), "--labels", "a,b", "--max-text-tokens", "0"],
        "max-text-tokens",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_the_store_is_untouched(tmp_path, store, case):
    make_args, message = CASES[case]
    before = dump(store)
    result = run([*make_args(tmp_path), "--store", str(store)])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert message in lines[0]
    assert "Traceback" not in result.output
    assert dump(store) == before


def test_a_usage_error_names_the_help_of_the_command_it_came_from(tmp_path):
    result = CliRunner().invoke(main, ["distill", "d.csv", "--llkd-floor", "-1"], prog_name="llkd-edge")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: Invalid value for '--llkd-floor': -1.0 is not in the range 0<=x<=1. (see `llkd-edge distill --help`)"]


def test_an_unknown_top_level_option_is_one_line_too():
    result = CliRunner().invoke(main, ["--nope"], prog_name="llkd-edge")
    assert result.exit_code == 2
    assert result.output.splitlines() == ["error: No such option '--nope'. (see `llkd-edge --help`)"]


def test_lists_builtins_and_teachers():
    assert "bbc-news" in run(["datasets"]).output
    out = run(["teachers"]).output
    assert "gemma3-270m (default)" in out and "qwen2.5-coder-1.5b-instruct" in out
    assert "encoder: " in out and "openai:http" in out


def test_ray_workers_get_their_cpus_as_threads_and_gpu_layers_only_with_a_gpu_share():
    from llkd_edge.teacher.ray_pool import worker_teacher_config
    from llkd_edge.config import RayConfig, TeacherConfig

    cpu_only = worker_teacher_config(TeacherConfig(n_threads=16), RayConfig(workers=4, cpus_per_worker=3))
    assert (cpu_only.n_threads, cpu_only.n_gpu_layers) == (3, 0)  # never offload where Ray gave no GPU
    gpu = worker_teacher_config(TeacherConfig(), RayConfig(gpus_per_worker=0.5))
    assert gpu.n_gpu_layers is None  # auto: all layers when the worker's llama.cpp build can offload


def test_a_ray_address_is_checked_before_ray_is_asked():
    from llkd_edge.teacher.ray_pool import _check_reachable
    from llkd_edge.errors import UserError

    _check_reachable(None)
    _check_reachable("auto")  # Ray finds a cluster started on this machine itself
    with pytest.raises(UserError, match="expected HOST:PORT"):
        _check_reachable("head:port")
    with pytest.raises(UserError, match="cannot reach the Ray cluster at ray://127.0.0.1:9"):
        _check_reachable("ray://127.0.0.1:9", timeout_s=2)
