"""labelling.teacher_health: the warnings a user gets about the teacher's labels when there is no gold label."""

import numpy as np

from llkd_edge.distributions import entropy
from llkd_edge.labels.labelling import teacher_health
from llkd_edge.store import LabelRow

LABELS = ("business", "sports", "tech")


def rows_from(probs, mass=0.5):
    probs = np.asarray(probs, dtype=float)
    return [LabelRow(text=f"text {i}", probs=tuple(p), label=LABELS[int(p.argmax())], confidence=float(p.max()),
                     entropy=float(entropy(p[None])[0]), label_mass=mass, n_tokens=10, truncated=False)
            for i, p in enumerate(probs)]


def test_a_teacher_that_tells_texts_apart_gets_no_warning():
    truth = np.arange(60) % 3
    health, warnings = teacher_health(rows_from(0.1 + 0.7 * np.eye(3)[truth]), LABELS)
    assert warnings == []
    assert health["answer_information"] > 0.3 and health["labels_never_named"] == []
    assert health["mean_confidence"] == 0.8 and health["top_label_share"] == round(1 / 3, 4)


CHANCE = {"n": 60, "agreement": 0.35, "chance_agreement": 0.34, "kappa": 0.01, "z": 0.4, "signal": False}
SIGNAL = {"n": 60, "agreement": 0.7, "chance_agreement": 0.34, "kappa": 0.55, "z": 8.0, "signal": True}


def test_labels_the_signal_test_finds_at_chance_are_called_no_better_than_chance():
    rng = np.random.default_rng(0)
    hesitant = rng.dirichlet([50, 50, 50], 60)
    health, warnings = teacher_health(rows_from(hesitant), LABELS, CHANCE)
    assert health["signal"] == CHANCE
    assert len(warnings) == 1 and "no better than chance" in warnings[0] and "--task" in warnings[0]
    assert "kappa 0.01, z 0.4 on 60 texts" in warnings[0]


def test_an_unsure_teacher_whose_labels_follow_the_texts_is_not_called_chance():
    """The case answer information got wrong: a two-way teacher at 0.6/0.4 that leans the right way. Its answers
    carry little information (they are unsure), but the signal test finds its labels follow the texts."""
    truth = np.arange(60) % 3
    unsure = np.full((60, 3), 0.3)
    unsure[np.arange(60), truth] = 0.4
    health, warnings = teacher_health(rows_from(unsure), LABELS, SIGNAL)
    assert health["answer_information"] < 0.1 and warnings == []


def test_one_label_named_for_most_texts_is_said_plainly():
    truth = np.array([0] * 50 + [1] * 5 + [2] * 5)
    health, warnings = teacher_health(rows_from(0.1 + 0.7 * np.eye(3)[truth]), LABELS)
    assert health["top_label"] == "business" and health["top_label_share"] == round(50 / 60, 4)
    assert any("named 'business' for 83% of the texts" in w for w in warnings)


def test_little_mass_on_the_label_words_is_reported_and_tiny_inputs_are_not_judged():
    truth = np.arange(60) % 3
    _, warnings = teacher_health(rows_from(0.1 + 0.7 * np.eye(3)[truth], mass=0.01), LABELS)
    assert len(warnings) == 1 and "1.0% of its next-token probability" in warnings[0]
    _, few = teacher_health(rows_from(np.full((5, 3), 1 / 3)), LABELS)  # 5 texts: too few to call chance
    assert few == []
    assert teacher_health([], LABELS) == ({}, [])


def test_the_probe_is_skipped_where_it_reproduces_the_labels_too_weakly_and_says_so(tmp_path):
    """distill's --relabel probe decision (pool.training_pool) reads the signal test's kappa: under
    RELABEL_MIN_KAPPA the teacher's labels are trained on as they are, with a warning; nothing is embedded."""
    from llkd_edge.config import RELABEL_MIN_KAPPA, DistillConfig, LabelSet, ScoringConfig
    from llkd_edge.labels.labelling import Labelled
    from llkd_edge.student.pool import training_pool

    probs = 0.1 + 0.7 * np.eye(3)[np.arange(30) % 3]
    rows = rows_from(probs)
    pool = Labelled([r.text for r in rows], rows, None, 30, 30, 0, 0, 0, 0.0)
    config = DistillConfig(data="x.txt", out=str(tmp_path / "run"), scoring=ScoringConfig(labels=LabelSet.parse(",".join(LABELS))))
    weak = {**SIGNAL, "kappa": RELABEL_MIN_KAPPA - 0.01}
    out = training_pool(config, pool, None, None, None, None, {"signal": weak}, tmp_path, False)
    assert out.relabel is None and np.array_equal(out.pool.probs, probs)
    assert len(out.warnings) == 1 and f"kappa {weak['kappa']:.2f} < {RELABEL_MIN_KAPPA}" in out.warnings[0]
