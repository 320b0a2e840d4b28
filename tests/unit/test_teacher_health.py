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


def test_answers_that_do_not_depend_on_the_text_are_called_no_better_than_chance():
    rng = np.random.default_rng(0)
    hesitant = rng.dirichlet([50, 50, 50], 60)
    health, warnings = teacher_health(rows_from(hesitant), LABELS)
    assert health["answer_information"] < 0.1
    assert len(warnings) == 1 and "no better than chance" in warnings[0] and "--task" in warnings[0]


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
