"""Classification quality: accuracy and macro-F1 against gold labels (scikit-learn's definitions)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def classification_scores(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1 over ``labels`` (every label counts, even one never predicted) and the
    majority-class rate: the accuracy of always answering the most common gold label."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        raise ValueError("no gold labels to score against")
    from sklearn.metrics import accuracy_score, f1_score

    majority = Counter(gold).most_common(1)[0][1] / len(gold)
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, labels=list(labels), average="macro", zero_division=0)),
        "majority_rate": float(majority),
        "n": len(gold),
    }
