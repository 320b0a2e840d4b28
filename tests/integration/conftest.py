import pytest

from llkd_edge.config import LabelSet, ScoringConfig, TeacherConfig
from llkd_edge.data import load_builtin

BBC_LABELS = LabelSet.parse(load_builtin("bbc-news:test").labels)


@pytest.fixture(scope="session")
def bbc_test():
    return load_builtin("bbc-news:test")


@pytest.fixture(scope="session")
def gemma_file():
    from llkd_edge.registry import resolve_teacher

    return resolve_teacher("gemma3-270m")


@pytest.fixture(scope="session")
def gemma(gemma_file, bbc_test):
    """The real default teacher, loaded once, with BBC's labels and a short text budget (fast)."""
    from llkd_edge.teacher.llama import Teacher

    teacher = Teacher(gemma_file, ScoringConfig(labels=BBC_LABELS, task=bbc_test.task, max_text_tokens=64), TeacherConfig())
    yield teacher
    teacher.close()


def _invoke(args):
    from click.testing import CliRunner

    from llkd_edge.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result


def _small_distill(student, store, out):
    """``student`` distilled on 240 BBC texts (60 eval) with Gemma's labels in ``store``, short texts: fast."""
    _invoke(["distill", "bbc-news", "--limit", "240", "--eval-limit", "60", "--max-text-tokens", "64",
             "--student", student, "--max-length", "64", "--batch-size", "16", "--epochs", "3",
             "--store", str(store), "--out", str(out)])
    return out


def _export(run, model_dir):
    """(MODEL_DIR, export's output) for ``run`` with the default export settings."""
    return model_dir, _invoke(["export", str(run), "--out", str(model_dir)]).output


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A small real distill run (Gemma labels, MiniLM with 2 layers kept), shared by the export and app tests."""
    out = tmp_path_factory.mktemp("distill") / "run"
    return _small_distill("minilm-l2", out.parent / "labels.sqlite", out)


@pytest.fixture(scope="session")
def exported(run_dir, tmp_path_factory):
    """(MODEL_DIR, export's output) for ``run_dir`` with the default export settings."""
    return _export(run_dir, tmp_path_factory.mktemp("export") / "model")


@pytest.fixture(scope="session")
def static_run_dir(run_dir):
    """The static-embedding student distilled from the same labels as ``run_dir`` (its store: no teacher call)."""
    return _small_distill("static", run_dir.parent / "labels.sqlite", run_dir.parent / "static-run")


@pytest.fixture(scope="session")
def static_exported(static_run_dir, tmp_path_factory):
    """(MODEL_DIR, export's output) for ``static_run_dir`` with the default export settings."""
    return _export(static_run_dir, tmp_path_factory.mktemp("export-static") / "model")
