"""`distill` rejects bad input before any model is loaded: one line, exit code 2, nothing touched."""

import json

import pytest
from click.testing import CliRunner

from llkd_edge.cli import main
from llkd_edge.student.train import kept_layers


def run(args):
    return CliRunner().invoke(main, args)


@pytest.fixture
def pool(tmp_path):
    path = tmp_path / "pool.csv"
    path.write_text("text\nfirst text\nsecond text\n", encoding="utf-8")
    return str(path)


def check_error(result, message):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


def test_eval_file_without_label_column(tmp_path, pool):
    evalset = tmp_path / "eval.csv"
    evalset.write_text("text\nsome text\n", encoding="utf-8")
    result = run(["distill", pool, "--labels", "a,b", "--eval", str(evalset), "--out", str(tmp_path / "run")])
    check_error(result, "the eval set needs gold labels")
    assert not (tmp_path / "run").exists()


def test_eval_labels_outside_the_label_set(tmp_path, pool):
    evalset = tmp_path / "eval.csv"
    evalset.write_text("text,label\nsome text,a\nother,zebra\n", encoding="utf-8")
    result = run(["distill", pool, "--labels", "a,b", "--eval", str(evalset), "--out", str(tmp_path / "run")])
    check_error(result, "gold labels not in the label set: 'zebra'")


def test_output_folder_that_is_not_a_run(tmp_path, pool):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = run(["distill", pool, "--labels", "a,b", "--out", str(out)])
    check_error(result, "not empty and not an llkd-edge run")
    assert (out / "precious.txt").read_text() == "keep me"


def test_output_folder_holding_a_different_run(tmp_path, pool):
    out = tmp_path / "run"
    out.mkdir()
    identity = {"data": pool, "train": {"selection": "all"}}
    (out / "config.json").write_text(json.dumps({"identity": identity}))
    result = run(["distill", pool, "--labels", "a,b", "--out", str(out)])
    check_error(result, "holds a different run")
    assert 'train.selection: "all" there, "llkd" now' in result.output  # what to pass to resume it
    assert json.loads((out / "config.json").read_text()) == {"identity": identity}


def test_unknown_selection_and_bad_numbers(tmp_path, pool):
    assert run(["distill", pool, "--labels", "a,b", "--out", str(tmp_path / "r"), "--selection", "magic"]).exit_code == 2
    check_error(run(["distill", pool, "--labels", "a,b", "--out", str(tmp_path / "r"), "--epochs", "0"]), "--epochs")


def test_device_cuda_without_a_gpu_fails_before_any_work(tmp_path, pool):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    check_error(run(["distill", pool, "--labels", "a,b", "--out", str(tmp_path / "r"), "--device", "cuda"]),
                "--device cuda: PyTorch sees no CUDA GPU here")
    assert not (tmp_path / "r").exists()


def test_store_as_data_needs_labels(tmp_path):
    from llkd_edge.store import LabelStore

    LabelStore(tmp_path / "s.sqlite").close()
    check_error(run(["distill", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "r")]), "needs --labels")


def test_kept_layers_are_evenly_spaced_and_keep_both_ends():
    assert kept_layers(6, 6) == [0, 1, 2, 3, 4, 5]
    assert kept_layers(6, 3) == [0, 2, 5]
    assert kept_layers(6, 2) == [0, 5]
    with pytest.raises(ValueError):
        kept_layers(6, 7)
