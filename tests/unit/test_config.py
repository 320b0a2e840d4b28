import pytest

from llkd_edge.config import LabelSet, ScoringConfig, stable_hash
from llkd_edge.errors import LabelSpecError, UserError


def test_parse_plain_names_uses_names_as_verbalisers():
    labels = LabelSet.parse("business, sports ,tech")
    assert labels.names == ("business", "sports", "tech")
    assert labels.verbalisers == ("business", "sports", "tech")


def test_parse_verbalisers_and_underscores():
    labels = LabelSet.parse("sci_tech=science and technology,world_news")
    assert labels.names == ("sci_tech", "world_news")
    assert labels.verbalisers == ("science and technology", "world news")
    assert LabelSet.parse(labels.spec()) == labels


def test_parse_labels_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("# topics\npos=positive\n\nneg=negative\n", encoding="utf-8")
    labels = LabelSet.parse(str(path))
    assert labels.names == ("pos", "neg")
    assert labels.verbalisers == ("positive", "negative")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("only", "at least 2 labels"),
        ("a,b,a", "duplicate labels: a"),
        ("a=x,b=X", "share the verbaliser"),
        ("a,,b", "empty label"),
        ("", "no labels given"),
        ("missing.txt", "no such labels file"),
    ],
)
def test_bad_label_sets_are_rejected(spec, message):
    with pytest.raises(LabelSpecError, match=message):
        LabelSet.parse(spec)


def test_few_shot_labels_must_be_in_the_label_set():
    with pytest.raises(LabelSpecError, match="not in the label set: c"):
        ScoringConfig(labels=LabelSet.parse("a,b"), few_shot=(("some text", "c"),))


def test_stable_hash_ignores_key_order_but_not_values():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_every_backend_choice_has_a_factory_and_every_factory_a_choice():
    from llkd_edge.config import BACKENDS
    from llkd_edge.teacher.backend import FACTORIES, open_backend

    assert set(FACTORIES) == set(BACKENDS)
    with pytest.raises(ValueError, match="unknown backend"):
        open_backend(None, None, backend="carrier-pigeon")


@pytest.mark.parametrize("bad", [{"max_texts": 0}, {"max_body": 0}, {"read_timeout": 0}, {"max_queue": 0}])
def test_bad_serve_settings_are_one_line_errors(bad):
    from llkd_edge.config_deploy import ServeConfig

    with pytest.raises(UserError):
        ServeConfig("m", **bad)
