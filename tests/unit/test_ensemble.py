"""Teacher ensembles' pure parts: log-linear pooling, pooled rows, and the --teacher a,b spec."""

import numpy as np
import pytest

from llkd_edge.config import LabelSet, ScoringConfig, TeacherConfig
from llkd_edge.teacher.ensemble import Ensemble, log_linear_pool
from llkd_edge.errors import UserError
from llkd_edge.registry import ModelFile
from llkd_edge.store import LabelRow, ScoringKey

LABELS = LabelSet.parse("business,sport,tech")


def test_equal_weights_give_the_normalised_geometric_mean():
    a = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    b = np.array([[0.4, 0.4, 0.2], [0.3, 0.6, 0.1]])
    pooled = log_linear_pool([a, b])
    expected = np.sqrt(a * b) / np.sqrt(a * b).sum(axis=1, keepdims=True)
    assert np.allclose(pooled, expected)
    assert np.allclose(pooled.sum(axis=1), 1.0)
    assert np.allclose(log_linear_pool([a, a]), a)  # a member agreeing with itself changes nothing


def test_a_sure_member_outweighs_an_unsure_one_and_a_zero_does_not_veto():
    sure = np.array([[0.9, 0.05, 0.05]])
    unsure = np.array([[0.3, 0.4, 0.3]])
    assert log_linear_pool([sure, unsure]).argmax() == 0
    vetoed = log_linear_pool([np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]])])
    assert np.all(np.isfinite(vetoed)) and np.isclose(vetoed.sum(), 1.0)


def test_weights_tilt_the_pool_and_bad_ones_are_refused():
    a, b = np.array([[0.8, 0.1, 0.1]]), np.array([[0.1, 0.8, 0.1]])
    assert log_linear_pool([a, b], [3, 1]).argmax() == 0
    assert log_linear_pool([a, b], [1, 3]).argmax() == 1
    for bad in ([1], [1, -1], [0, 0], [1, float("nan")]):
        with pytest.raises(ValueError):
            log_linear_pool([a, b], bad)
    with pytest.raises(ValueError):
        log_linear_pool([])
    with pytest.raises(ValueError):
        log_linear_pool([a[0], b[0]])  # (K,) rows, not (N, K)


class Member:
    """Stands in for a loaded teacher (not under test here): a fixed name, key and prompt style."""

    def __init__(self, name, style="plain"):
        self.model = ModelFile(name, None, name * 4, style, "Apache-2.0")
        self.key = ScoringKey(name * 4, "cfg-" + name)
        self.scoring = ScoringConfig(labels=LABELS)
        self.prompt_style = style
        self.details, self.prompt, self.label_tokens = {"task": "t"}, f"{name}: {{text}}", [[1], [2], [3]]


def row(text, probs, mass=0.5):
    return LabelRow(text, tuple(probs), "", max(probs), 0.0, mass, 7, False)


def test_pooled_rows_carry_the_pooled_distribution_and_its_label():
    ensemble = Ensemble([Member("a"), Member("b")])
    rows = ensemble.pooled([[row("x", (0.7, 0.2, 0.1), 0.2), row("y", (0.2, 0.2, 0.6))],
                            [row("x", (0.5, 0.4, 0.1), 0.4), row("y", (0.1, 0.8, 0.1))]])
    assert [r.text for r in rows] == ["x", "y"]
    assert rows[0].label == "business" and np.isclose(rows[0].label_mass, 0.3)
    p = np.sqrt(np.array([0.2, 0.2, 0.6]) * np.array([0.1, 0.8, 0.1]))
    assert np.allclose(rows[1].probs, p / p.sum()) and rows[1].label == "sport"
    assert np.isclose(rows[1].confidence, max(rows[1].probs)) and rows[1].entropy > 0
    with pytest.raises(ValueError):
        ensemble.pooled([[row("x", (0.7, 0.2, 0.1))], []])


def test_the_ensemble_is_named_and_keyed_by_all_its_members():
    ab, ba = Ensemble([Member("a"), Member("b", "chat")]), Ensemble([Member("b", "chat"), Member("a")])
    assert ab.model.name == "a+b" and ab.prompt_style == "mixed"
    assert ab.key != ba.key and ab.key.teacher_sha256 != "aaaa"
    assert [m["teacher"] for m in ab.details["members"]] == ["a", "b"]
    assert Ensemble([Member("a", "chat"), Member("b", "chat")]).prompt_style == "chat"
    with pytest.raises(ValueError):
        Ensemble([Member("a")])


def test_the_teacher_option_names_one_teacher_or_several_distinct_ones():
    assert TeacherConfig(model="gemma3-270m").members == ("gemma3-270m",)
    assert TeacherConfig(model="gemma3-270m, smollm2-135m-instruct").members == ("gemma3-270m", "smollm2-135m-instruct")
    for bad in ("a,,b", "a,a", "a,", ","):
        with pytest.raises(UserError):
            TeacherConfig(model=bad)


def test_a_member_weight_is_a_positive_number_after_a_star():
    weighted = TeacherConfig(model="gemma3-270m, encoder*2")
    assert weighted.members == ("gemma3-270m", "encoder") and weighted.weights == (1.0, 2.0)
    assert TeacherConfig(model="a*0.5,b").weights == (0.5, 1.0) and TeacherConfig(model="a,b").weights is None
    assert TeacherConfig(model="a*3,b*3").weights is None  # equal weights pool as none do
    for bad in ("a*2", "a,b*0", "a,b*-1", "a,b*x", "a,b*2*3", "a,b*inf", "a,b*nan", "a,b*", "a*1e300,b*1e300"):
        with pytest.raises(UserError, match=r"weight|ensemble"):
            TeacherConfig(model=bad)
    with pytest.raises(UserError, match="distill makes"):  # `auto` is resolved by distill, never opened as a name
        from llkd_edge.teacher.backend import open_backend

        open_backend(ScoringConfig(labels=LABELS), TeacherConfig(model="auto"))


def test_weights_change_the_pool_its_key_and_its_record_but_equal_ones_keep_the_old_key():
    plain, weighted = Ensemble([Member("a"), Member("b")]), Ensemble([Member("a"), Member("b")], (1.0, 3.0))
    assert plain.key != weighted.key and plain.key == Ensemble([Member("a"), Member("b")]).key
    assert plain.details["pooling"] == "log-linear, equal weights"  # as runs before weights recorded it
    assert weighted.details["pooling"] == "log-linear, weights 1:3"
    rows = [[row("x", (0.7, 0.2, 0.1))], [row("x", (0.3, 0.6, 0.1))]]
    assert plain.pooled(rows)[0].label == "business" and weighted.pooled(rows)[0].label == "sport"
    p = np.array([0.7, 0.2, 0.1]) ** 0.25 * np.array([0.3, 0.6, 0.1]) ** 0.75
    assert np.allclose(weighted.pooled(rows)[0].probs, p / p.sum())
    with pytest.raises(ValueError):
        Ensemble([Member("a"), Member("b")], (1.0,))


def test_distilling_from_a_store_pools_the_texts_every_member_labelled(tmp_path):
    from types import SimpleNamespace

    from llkd_edge.student.distill import _pool_from_store
    from llkd_edge.errors import StoreError
    from llkd_edge.store import LabelStore

    a, b = Member("a"), Member("b")
    path = str(tmp_path / "labels.sqlite")
    with LabelStore(path) as store:
        store.mark(["x", "y", "z"], "pool", "test")
        for member, rows in ((a, [row("x", (0.7, 0.2, 0.1)), row("y", (0.1, 0.8, 0.1)), row("z", (0.2, 0.2, 0.6))]),
                             (b, [row("z", (0.1, 0.1, 0.8)), row("x", (0.5, 0.4, 0.1))])):
            store.register(member.key, member.model.name, LABELS.names, member.details)
            store.add(member.key, rows)
    pool, _ = _pool_from_store(SimpleNamespace(data=path, limit=None), Ensemble([a, b]), progress=False)
    assert pool.texts == ["x", "z"]  # y: only one member labelled it
    p = np.sqrt(np.array([0.2, 0.2, 0.6]) * np.array([0.1, 0.1, 0.8]))
    assert np.allclose(pool.rows[1].probs, p / p.sum()) and pool.rows[1].label == "tech"
    limited, _ = _pool_from_store(SimpleNamespace(data=path, limit=1), Ensemble([a, b]), progress=False)
    assert limited.texts == ["x"]
    weighted, _ = _pool_from_store(SimpleNamespace(data=path, limit=None), Ensemble([a, b], (1.0, 3.0)),
                                   progress=False)
    p = np.array([0.2, 0.2, 0.6]) ** 0.25 * np.array([0.1, 0.1, 0.8]) ** 0.75
    assert np.allclose(weighted.rows[1].probs, p / p.sum())  # the weights reach what the student learns from
    with pytest.raises(StoreError, match="no rows for c"):
        _pool_from_store(SimpleNamespace(data=path, limit=None), Ensemble([a, Member("c")]), progress=False)


def test_a_ray_pool_refuses_an_ensemble_before_starting_anything():
    from llkd_edge.teacher.backend import open_backend

    with pytest.raises(UserError, match="one teacher per actor"):
        open_backend(ScoringConfig(labels=LABELS), TeacherConfig(model="gemma3-270m,smollm2-135m-instruct"), "ray")
