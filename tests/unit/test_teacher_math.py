import numpy as np
import pytest

from llkd_edge.distributions import calibrated_distribution, entropy, label_logprobs, log_softmax


def test_label_logprobs_sum_the_probability_of_each_labels_tokens():
    vocab = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    out = label_logprobs(vocab, [[0, 1], [3]])
    assert np.allclose(np.exp(out), [0.3, 0.4])


def test_distribution_rows_sum_to_one_and_calibration_removes_a_label_bias():
    # The model says "b" for everything: a content-free input gets the same bias.
    raw = np.log(np.array([[0.2, 0.8], [0.45, 0.55]]))
    content_free = np.array([0.3, 0.7])
    plain = calibrated_distribution(raw, None)
    calibrated = calibrated_distribution(raw, content_free)
    assert np.allclose(plain.sum(axis=1), 1) and np.allclose(calibrated.sum(axis=1), 1)
    assert plain[1].argmax() == 1
    assert calibrated[1].argmax() == 0  # 0.45/0.3 > 0.55/0.7
    assert np.allclose(calibrated_distribution(raw, np.array([0.5, 0.5])), plain)


def test_log_softmax_is_stable_for_large_logits():
    out = log_softmax(np.array([1000.0, 1000.0]))
    assert np.allclose(out, np.log([0.5, 0.5]))


def test_entropy_in_nats():
    assert entropy(np.array([[1.0, 0.0]]))[0] == pytest.approx(0.0, abs=1e-9)
    assert entropy(np.array([[0.5, 0.5]]))[0] == pytest.approx(np.log(2))
