"""Classification quality: accuracy and macro-F1 against gold labels (scikit-learn's definitions)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def classification_scores(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1 and the majority-class rate (the accuracy of always answering the most common
    gold label).

    ``macro_f1`` averages the F1 of the labels that occur in ``gold`` or in ``predicted`` (a label predicted
    but never gold, or gold but never predicted, counts with F1 0). A label absent from both says nothing
    about the model, so it is left out: otherwise perfect predictions on a slice that lacks one of three
    labels would score 0.667. ``macro_f1_all_labels`` is the average over every label of ``labels`` (such a
    label counting 0) and ``labels_scored`` the number of labels behind ``macro_f1``.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        raise ValueError("no gold labels to score against")
    from sklearn.metrics import accuracy_score, f1_score

    present = [label for label in labels if label in set(gold) | set(predicted)]
    majority = Counter(gold).most_common(1)[0][1] / len(gold)
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, labels=present, average="macro", zero_division=0)),
        "macro_f1_all_labels": float(f1_score(gold, predicted, labels=list(labels), average="macro", zero_division=0)),
        "labels_scored": len(present),
        "majority_rate": float(majority),
        "n": len(gold),
    }


def per_class_f1(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """label -> F1 (4 decimals) for every label that occurs in ``gold``; what a model card's weak classes read."""
    from sklearn.metrics import f1_score

    present = [label for label in labels if label in set(gold)]
    scores = f1_score(gold, predicted, labels=present, average=None, zero_division=0)
    return {label: round(float(f), 4) for label, f in zip(present, scores)}


def calibration(confidence, correct, bins: int = 10) -> dict:
    """A reliability table: equal-width confidence bins over [0, 1], each with its count, mean confidence
    and accuracy (None when empty), plus the expected calibration error (count-weighted mean gap)."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    if conf.ndim != 1 or conf.shape != ok.shape or len(conf) == 0:
        raise ValueError("confidence and correct must be non-empty and of the same shape (N,)")
    if conf.min() < 0 or conf.max() > 1:
        raise ValueError("confidence must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)  # (0.1, 0.2] -> bin 1; 0 -> bin 0
    rows, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        count = int(sel.sum())
        acc = float(ok[sel].mean()) if count else None
        mean_conf = float(conf[sel].mean()) if count else None
        if count:
            ece += count / len(conf) * abs(acc - mean_conf)
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                     "confidence": mean_conf, "accuracy": acc})
    return {"bins": rows, "ece": float(ece), "accuracy": float(ok.mean()), "n": int(len(conf))}
