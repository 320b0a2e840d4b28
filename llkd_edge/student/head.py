"""``--head probe``: the student's classification head set, before training, to a logistic regression fitted on the
student's own (frozen, untrained) features of the pool's texts against the pool's labels.

Linear probing, then fine-tuning (Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution", ICLR 2022): a randomly initialised head sends large, wrong gradients into the pretrained
layers in the first steps, which on a few hundred noisy labels the student never recovers from; a head that already
reads the pretrained features well lets fine-tuning start from the probe's answers (bench/RESULTS.md, "A probe
for a head"). The features are whatever the head reads (a BERT student's pooler output, a static student's unit
mean), taken by a hook on the head in eval mode, so the saved model, its ONNX graph and every runtime are unchanged.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import UserError

PROBE_C = 1.0  # as relabel.PROBE_C: hundreds of noisy teacher labels


def auto_head(signal: dict | None) -> str:
    """``--head auto``: the probe head where a probe can follow the teacher's labels (the signal test's kappa at least
    ``config.RELABEL_MIN_KAPPA``, the line under which ``--relabel probe`` stands aside), else the random head. Where
    a probe on the texts cannot reproduce the labels, a head started from one fits their noise (slo-sentiment lost
    0.05-0.06 with it on every seed; bench/RESULTS.md, "A probe for a head"). No signal test: random."""
    from ..config import RELABEL_MIN_KAPPA

    kappa = (signal or {}).get("kappa")
    return "probe" if kappa is not None and kappa >= RELABEL_MIN_KAPPA else "random"
ABSENT = 10.0  # a class no pool label has: its logit this far under the lowest present one


def head_layer(model):
    """The student's final linear layer (BERT's ``classifier``, the static student's ``head``)."""
    for name in ("classifier", "head"):
        layer = getattr(model, name, None)
        if layer is not None and hasattr(layer, "weight") and getattr(layer.weight, "ndim", 0) == 2:
            return layer
    raise UserError(f"--head probe: this student ({type(model).__name__}) has no linear head to set; use --head random")


def features(torch, model, batches) -> np.ndarray:
    """Shape (N, D): what the head reads for each batch of ``batches`` ((input_ids, attention_mask) pairs), eval mode."""
    layer, seen = head_layer(model), []
    hook = layer.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().float().cpu().numpy()))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for input_ids, mask in batches:
                model(input_ids=input_ids, attention_mask=mask)
    finally:
        hook.remove()
        model.train(was_training)
    return np.concatenate(seen)


def probe_weights(x: np.ndarray, y: np.ndarray, k: int, c: float = PROBE_C,
                  sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(weight (K, D), bias (K,)): a logistic regression of labels ``y`` on ``x`` (each sample weighted by
    ``sample_weight``, if given), as logits over all K classes (a two-class fit's one score split evenly between
    its classes; a class with no label far below the rest)."""
    from sklearn.linear_model import LogisticRegression

    present = np.unique(y)
    if len(present) < 2:
        raise UserError("--head probe: the pool's labels are all one class; nothing for a probe to learn")
    fit = LogisticRegression(C=c, max_iter=3000).fit(x, y, sample_weight=sample_weight)
    coef, intercept = fit.coef_, fit.intercept_
    if coef.shape[0] == 1:  # binary: p(second) = sigmoid(z), the same as a softmax over (-z/2, z/2)
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.zeros((k, x.shape[1]))
    bias = np.full(k, intercept.min() - ABSENT)
    weight[fit.classes_], bias[fit.classes_] = coef, intercept
    return weight, bias


def set_from_probe(torch, model, batches, labels: np.ndarray, sample_weight: np.ndarray | None = None) -> dict:
    """Set ``model``'s head to a probe of ``labels`` (N,) on its own features of ``batches``; a record of it.
    ``sample_weight`` (N,): how much each label counts, as in training (gold texts, per-class trust); None when all
    count alike. Labels of one class (a learning curve's small slice of a pool with a rare class) leave the head
    as it was: random."""
    started = time.perf_counter()
    layer = head_layer(model)
    if len(np.unique(labels)) < 2:
        return {"head": "random", "probe_skipped": "the pool's labels are all one class"}
    x = features(torch, model, batches)
    weight, bias = probe_weights(x, labels, layer.weight.shape[0], sample_weight=sample_weight)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))
    agreement = float(np.mean((x @ weight.T + bias).argmax(1) == labels))
    return {"head": "probe", "probe_c": PROBE_C, "probe_fits_pool": round(agreement, 4),
            "seconds": round(time.perf_counter() - started, 2)}
