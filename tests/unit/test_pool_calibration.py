"""Batch calibration of the pool (distributions.batch_calibrated, labelling.recalibrated): pure numpy, by hand."""

import numpy as np
import pytest

from llkd_edge.config import DistillConfig, LabelSet, ScoringConfig
from llkd_edge.distributions import batch_calibrated, em_prior, pool_divisor, pool_prior
from llkd_edge.errors import UserError
from llkd_edge.labels.labelling import recalibrated
from llkd_edge.store import LabelRow


def test_a_teacher_biased_towards_one_label_is_evened_out_over_the_pool():
    # Every text leans to label 0 by the same factor; the pool's mean shows the bias, dividing it out
    # recovers which texts are really about label 1.
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.95, 0.05]])
    prior = pool_prior(probs)
    assert prior == pytest.approx([0.75, 0.25])
    out = batch_calibrated(probs, prior)
    assert out.sum(axis=1) == pytest.approx(np.ones(4))
    assert out.argmax(axis=1).tolist() == [0, 1, 1, 0]  # as stored: all four label 0
    # by hand: [0.6/0.75, 0.4/0.25] = [0.8, 1.6] -> [1/3, 2/3]
    assert out[1] == pytest.approx([1 / 3, 2 / 3])


def test_a_uniform_prior_changes_nothing_and_a_zero_in_it_gives_no_nan():
    probs = np.array([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]])
    assert batch_calibrated(probs, np.full(3, 1 / 3)) == pytest.approx(probs)
    out = batch_calibrated(probs, np.array([0.5, 0.5, 0.0]))
    assert np.isfinite(out).all() and out.argmax(axis=1).tolist() == [2, 2]
    with pytest.raises(ValueError):
        batch_calibrated(probs, np.array([0.5, 0.5]))
    with pytest.raises(ValueError):
        pool_prior(np.empty((0, 3)))


def test_recalibrated_rows_follow_their_new_distribution_and_keep_the_rest():
    rows = [LabelRow("a", (0.6, 0.4), "x", 0.6, 0.67, 0.2, 10, False),
            LabelRow("b", (0.9, 0.1), "x", 0.9, 0.33, 0.3, 12, True)]
    out = recalibrated(rows, ["x", "y"], np.array([0.75, 0.25]))
    assert out[0].label == "y" and out[0].confidence == pytest.approx(2 / 3)
    assert out[0].entropy == pytest.approx(-(1 / 3 * np.log(1 / 3) + 2 / 3 * np.log(2 / 3)))
    assert (out[1].text, out[1].label_mass, out[1].n_tokens, out[1].truncated) == ("b", 0.3, 12, True)
    assert recalibrated(rows, ["x", "y"], None) == rows


def test_an_unknown_pool_calibration_is_one_line():
    with pytest.raises(UserError, match="--pool-calibration"):
        DistillConfig(data="d", out="o", scoring=ScoringConfig(labels=LabelSet.parse("a,b")), pool_calibration="vector")


def test_em_recovers_a_skewed_class_prior_from_rows_calibrated_for_a_uniform_one():
    # Three kinds of text; p(kind | class) is M[class]. A pool of 1000 with classes 60/30/10 holds each kind
    # in proportion to sum_c prior_c M[c, kind]; each row is the posterior a uniform prior gives.
    m = np.array([[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6]])
    true = np.array([0.6, 0.3, 0.1])
    counts = np.rint(1000 * true @ m).astype(int)
    rows = np.repeat((m / m.sum(axis=0)).T, counts, axis=0)
    assert em_prior(rows) == pytest.approx(true, abs=0.01)
    assert em_prior(np.full((4, 3), 1 / 3)) == pytest.approx(np.full(3, 1 / 3))


def test_pool_divisors_none_batch_and_em():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.95, 0.05]])
    assert pool_divisor(probs, "none") is None
    assert pool_divisor(probs, "batch") == pytest.approx(pool_prior(probs))
    em = pool_divisor(probs, "em")
    # dividing by it is batch calibration times the EM prior: the rows keep the pool's estimated class mix
    by_hand = batch_calibrated(probs, pool_prior(probs)) * em_prior(batch_calibrated(probs, pool_prior(probs)))
    assert batch_calibrated(probs, em) == pytest.approx(by_hand / by_hand.sum(axis=1, keepdims=True))
    with pytest.raises(ValueError):
        pool_divisor(probs, "vector")


def test_a_cross_fitted_probe_overrules_teacher_labels_that_similar_texts_contradict():
    from llkd_edge.student.relabel import cross_fitted, relabelled

    # two tight clusters of 20 texts; the teacher says "a" for cluster 0 and "b" for cluster 1, except for
    # three texts of cluster 0 that it calls "b" at 0.6: the probe, fitted without them, sides with their cluster.
    rng = np.random.default_rng(0)
    x = np.vstack([np.eye(2, 16)[0] + 0.05 * rng.standard_normal((20, 16)),
                   np.eye(2, 16)[1] + 0.05 * rng.standard_normal((20, 16))])
    teacher = np.array([[0.9, 0.1]] * 20 + [[0.1, 0.9]] * 20)
    teacher[[3, 7, 11]] = [0.4, 0.6]
    oof = cross_fitted(x, teacher.argmax(1), 2, seed=0)
    assert oof[[3, 7, 11]].argmax(1).tolist() == [0, 0, 0]
    out = relabelled(teacher, x, seed=0)
    assert out.sum(1) == pytest.approx(np.ones(40))
    assert out.argmax(1).tolist() == [0] * 20 + [1] * 20  # the three fixed, every other label kept
    with pytest.raises(UserError, match="--relabel"):
        DistillConfig(data="d", out="o", scoring=ScoringConfig(labels=LabelSet.parse("a,b")), relabel="kmeans")


def test_the_probe_is_the_default_and_is_not_recorded_as_applied_with_gold_texts():
    labels = ScoringConfig(labels=LabelSet.parse("a,b"))
    assert DistillConfig(data="d", out="o", scoring=labels).relabel == "probe"
    # with --gold the gold texts' probe corrects the labels instead: config.json must not claim the relabel
    assert DistillConfig(data="d", out="o", scoring=labels, gold="gold.csv").relabel is None
