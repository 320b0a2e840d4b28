"""student/head.py: a logistic regression turned into a K-way linear head, set through a hook on the head."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from llkd_edge.errors import UserError
from llkd_edge.student.head import probe_weights, set_from_probe


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def blobs(k, n=60, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    y = rng.integers(0, k, n)
    return centres[y] + rng.normal(size=(n, d)), y


def test_a_two_class_probe_gives_the_same_probabilities_as_logistic_regression():
    x, y = blobs(2)
    weight, bias = probe_weights(x, y, 2)
    fit = LogisticRegression(C=1.0, max_iter=3000).fit(x, y)
    assert weight.shape == (2, 8)
    np.testing.assert_allclose(softmax(x @ weight.T + bias), fit.predict_proba(x), atol=1e-6)


def test_a_class_no_label_has_is_never_the_answer_and_the_rest_match_the_fit():
    x, y = blobs(3)
    y = np.where(y == 1, 0, y)  # class 1 of 4: no label; class 3: none either
    weight, bias = probe_weights(x, y, 4)
    fit = LogisticRegression(C=1.0, max_iter=3000).fit(x, y)
    p = softmax(x @ weight.T + bias)
    assert p[:, [1, 3]].max() < 1e-3
    np.testing.assert_array_equal(p.argmax(1), fit.predict(x))


def test_sample_weights_count_as_they_do_in_training():
    x, y = blobs(3, n=90, seed=1)
    w = np.where(y == 2, 5.0, 0.2)  # e.g. gold texts of class 2 at --gold-weight, doubtful labels elsewhere
    weight, bias = probe_weights(x, y, 3, sample_weight=w)
    fit = LogisticRegression(C=1.0, max_iter=3000).fit(x, y, sample_weight=w)
    np.testing.assert_allclose(softmax(x @ weight.T + bias), fit.predict_proba(x), atol=1e-6)
    unweighted, _ = probe_weights(x, y, 3)
    assert not np.allclose(weight, unweighted, atol=1e-3)


def test_labels_of_one_class_are_refused_in_one_line():
    x, _ = blobs(2)
    with pytest.raises(UserError, match="one class"):
        probe_weights(x, np.zeros(len(x), dtype=int), 3)


class Toy(torch.nn.Module):
    """A fixed feature map and a ``head``: what the hook must read is the head's input, not the model's."""

    def __init__(self, k):
        super().__init__()
        self.features = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, k)

    def forward(self, input_ids, attention_mask):
        return self.head(torch.tanh(self.features(input_ids.float())))


def test_the_head_is_set_to_the_probe_of_what_it_reads_and_the_model_answers_as_the_probe():
    torch.manual_seed(0)
    x, y = blobs(3, n=90)
    model = Toy(3).train()
    before = model.features.weight.detach().clone()
    inputs = torch.tensor(x, dtype=torch.float32)
    batches = [(inputs[i : i + 32], None) for i in range(0, 90, 32)]
    record = set_from_probe(torch, model, batches, y)
    assert model.training  # the features were read in eval mode, and the mode it found is restored
    model.eval()
    with torch.no_grad():
        answers = model(inputs, None).argmax(1).numpy()
        hidden = torch.tanh(model.features(inputs)).numpy()
    fit = LogisticRegression(C=1.0, max_iter=3000).fit(hidden, y)
    np.testing.assert_array_equal(answers, fit.predict(hidden))
    assert record["head"] == "probe" and record["probe_fits_pool"] == pytest.approx(np.mean(answers == y), abs=1e-4)
    assert torch.equal(model.features.weight, before)  # only the head moves


def test_a_model_without_a_linear_head_is_refused():
    class Headless(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return input_ids

    with pytest.raises(UserError, match="no linear head"):
        set_from_probe(torch, Headless(), [], np.array([0, 1]))


def test_labels_of_one_class_leave_the_random_head_and_say_so():
    # a learning curve's 25% slice of a pool with a rare class can hold one class: the run goes on with a random head
    torch.manual_seed(0)
    model = Toy(2)
    before = model.head.weight.detach().clone()
    record = set_from_probe(torch, model, [(torch.zeros(4, 8), None)], np.zeros(4, dtype=int))
    assert record == {"head": "random", "probe_skipped": "the pool's labels are all one class"}
    assert torch.equal(model.head.weight, before)


def test_auto_takes_the_probe_head_only_where_a_probe_can_follow_the_teachers_labels():
    from llkd_edge.config import RELABEL_MIN_KAPPA, TrainConfig
    from llkd_edge.student.head import auto_head

    assert auto_head({"kappa": RELABEL_MIN_KAPPA, "n": 600}) == "probe"
    assert auto_head({"kappa": 0.62, "n": 600}) == "probe"
    assert auto_head({"kappa": RELABEL_MIN_KAPPA - 0.01, "n": 600}) == "random"  # slo-sentiment's 0.15-0.19
    assert auto_head(None) == auto_head({}) == "random"  # no signal test ran (too few labels)
    assert TrainConfig(head="auto").head == "auto"
    with pytest.raises(UserError, match="--head must be one of random, probe, auto"):
        TrainConfig(head="linear")
