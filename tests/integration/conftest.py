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
    from llkd_edge.teacher import Teacher

    teacher = Teacher(gemma_file, ScoringConfig(labels=BBC_LABELS, task=bbc_test.task, max_text_tokens=64), TeacherConfig())
    yield teacher
    teacher.close()
