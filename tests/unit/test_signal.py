"""The label-free signal test (labels/signal.py): labels that follow the texts pass it, however unsure the teacher
was; labels that do not, fail it. Embeddings here are points whose classes a linear probe can separate."""

import numpy as np

from llkd_edge.labels.signal import probe_signal


def _points(n=300, k=2, d=16, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    centres = rng.normal(size=(k, d)) * 1.5
    x = centres[truth] + rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True), truth, rng


def test_a_teacher_right_on_70_percent_of_two_classes_has_signal_and_random_labels_have_none():
    x, truth, rng = _points()
    noisy = np.where(rng.random(len(truth)) < 0.7, truth, 1 - truth)
    found = probe_signal(x, noisy, 2, seed=0)
    assert found.signal and found.kappa > 0.2 and found.z > 3
    for seed in range(3):
        chance = probe_signal(x, rng.integers(0, 2, len(truth)), 2, seed=seed)
        assert not chance.signal and chance.kappa < 0.15, chance


def test_skewed_labels_at_chance_are_not_signal_though_the_probe_agrees_with_most_of_them():
    x, truth, rng = _points(k=3)
    skewed = np.where(rng.random(len(truth)) < 0.8, 0, rng.integers(1, 3, len(truth)))
    found = probe_signal(x, skewed, 3, seed=1)
    assert found.agreement > 0.7 and not found.signal


def test_one_label_for_every_text_is_no_signal():
    x, truth, _ = _points()
    assert not probe_signal(x, np.zeros_like(truth), 2).signal
