"""A handful of gold-labelled texts (``--gold FILE``), used everywhere: to judge the teacher, as a gold-only
baseline, to correct the teacher's labels on the pool, and as trusted training samples.

Pure numpy + scikit-learn over sentence embeddings (``encoder.embed`` makes them); nothing here loads a model.

The three label sources, each judged on the gold texts without ever scoring a text it was fitted on:

- ``teacher``: the LLM's (calibrated) distribution; it never saw the gold texts, so plain accuracy.
- ``gold_only``: a linear probe (logistic regression on frozen, mean-pooled encoder embeddings, SetFit
  without the contrastive tuning), cross-validated.
- ``combined``: a product of experts ``p ∝ p_teacher^a * p_gold_only^b`` with (a, b) chosen on out-of-fold
  log-loss, so it can ignore a useless teacher (a = 0) or a useless probe (b = 0); nested cross-validation.

On the four built-in sets with 4, 8 or 16 gold texts per class (bench/gold.py), this product was the best
of several combinations tried (a stacked logistic regression over both log-distributions, the product with
per-class biases): the per-class biases helped reuters-r8 but overfitted two-class sets at 4 per class.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..data import Dataset, text_key
from ..errors import DataError

FLOOR = 1e-6  # probabilities are floored here before logs: a zero from one expert must not veto the other
TEACHER_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
PROBE_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def check_gold_set(gold: Dataset, labels: tuple[str, ...], eval_texts: list[str] | None,
                   demonstrations: tuple[tuple[str, str], ...] = ()) -> Dataset:
    """``gold`` as used for training and judging: each text once, every label known, every class present,
    no text shared with the eval set or with the prompt's few-shot ``demonstrations`` ((text, label) pairs:
    the teacher would be judged on texts it was shown with their answers). Anything else is one
    ``DataError`` line."""
    from ..data import eval_dataset

    if gold.gold is None:
        raise DataError(f"{gold.name}: --gold needs gold labels (a `label` column, or --label-column)")
    gold = eval_dataset(gold)  # non-empty texts with a label, each once
    unknown = sorted({g for g in gold.gold if g not in labels})
    if unknown:
        raise DataError(f"{gold.name}: --gold labels not in the label set: {', '.join(map(repr, unknown[:5]))} "
                        f"(labels: {', '.join(labels)})")
    counts = Counter(gold.gold)
    missing = [name for name in labels if not counts.get(name)]
    if missing:
        raise DataError(f"{gold.name}: --gold needs at least 1 text per class; none for {', '.join(missing)}")
    if eval_texts:
        held = {text_key(t) for t in eval_texts}
        shared = sum(text_key(t) in held for t in gold.texts)
        if shared:
            raise DataError(f"{gold.name}: {shared} of its texts are also in the eval set; a gold text used for "
                            "training would be scored as unseen (remove them from one of the two files)")
    shown = {text_key(t) for t, _ in demonstrations}
    shared = sum(text_key(t) in shown for t in gold.texts)
    if shared:
        raise DataError(f"{gold.name}: {shared} of its texts are also --few-shot examples; the teacher would be "
                        "judged on texts it was shown with their answers (give each text to one of the two options)")
    return gold


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of an accuracy of ``correct`` out of ``n`` (sound for small n)."""
    if n < 1 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n >= 1, got {correct} of {n}")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def cv_folds(y: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds over the gold texts: 5, or fewer when a class has fewer texts (at least 2); plain
    folds when some class has a single text (it cannot be in two folds)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if len(y) < 2:
        raise DataError("--gold needs at least 2 texts")
    present = np.bincount(y)[np.unique(y)]
    if present.min() < 2:
        return list(KFold(min(5, len(y)), shuffle=True, random_state=seed).split(y))
    with warnings.catch_warnings():  # "least populated class has only N members" is expected here
        warnings.simplefilter("ignore")
        return list(StratifiedKFold(min(5, int(present.min())), shuffle=True, random_state=seed).split(y, y))


@dataclass
class Probe:
    """Logistic regression on embeddings; ``predict`` gives all K columns even for classes it never saw."""

    k: int
    model: object = None
    constant: np.ndarray | None = None

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, k: int, c: float = 10.0) -> Probe:
        if len(set(y.tolist())) < 2:  # one class only (a tiny fold): predict its share
            constant = np.bincount(y, minlength=k) / len(y)
            return cls(k, None, constant)
        from sklearn.linear_model import LogisticRegression

        # C=10: weak regularisation suits unit-length 384-d embeddings and a few clean texts per class
        # (C=1 scored lower on reuters-r8 and bbc-news at 8 per class); on hundreds of noisy teacher
        # labels C=1 is better (relabel.py).
        return cls(k, LogisticRegression(C=c, max_iter=3000).fit(x, y))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Shape (N, D) -> (N, K)."""
        if self.model is None:
            return np.tile(self.constant, (len(x), 1))
        out = np.zeros((len(x), self.k))
        out[:, self.model.classes_] = self.model.predict_proba(x)
        return out


def out_of_fold(x: np.ndarray, y: np.ndarray, k: int, folds) -> np.ndarray:
    """Shape (N, K): each gold text's probe distribution from a probe that was not fitted on it."""
    out = np.zeros((len(y), k))
    for fit_on, held in folds:
        out[held] = Probe.fit(x[fit_on], y[fit_on], k).predict(x[held])
    return out


@dataclass(frozen=True)
class Product:
    """``p ∝ teacher^a * probe^b``, rows renormalised."""

    a: float
    b: float

    def __call__(self, teacher: np.ndarray, probe: np.ndarray) -> np.ndarray:
        z = self.a * np.log(np.clip(teacher, FLOOR, 1.0)) + self.b * np.log(np.clip(probe, FLOOR, 1.0))
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    @classmethod
    def fit(cls, teacher: np.ndarray, probe: np.ndarray, y: np.ndarray) -> Product:
        """The powers with the lowest log-loss on ``y`` (ties: the earlier pair, so fewer/lower powers)."""
        best, chosen = math.inf, cls(1.0, 1.0)
        for a, b in itertools.product(TEACHER_POWERS, PROBE_POWERS):
            if a == b == 0:
                continue
            candidate = cls(a, b)
            p = candidate(teacher, probe)[np.arange(len(y)), y]
            loss = float(-np.log(np.clip(p, 1e-12, 1.0)).mean())
            if loss < best - 1e-9:
                best, chosen = loss, candidate
        return chosen


@dataclass
class GoldJudgement:
    """What the gold texts say about each label source, and the labels the student learns from."""

    n: int
    per_class: dict[str, int]
    folds: int
    scores: dict[str, dict]  # source -> accuracy, 95% interval, correct, per-class recall
    product: Product
    chosen: str
    why: str
    class_trust: list[float]  # per class: how far the chosen source's label k can be trusted (smoothed precision)
    probe: Probe = field(repr=False)

    def record(self) -> dict:
        return {"n": self.n, "per_class": self.per_class, "folds": self.folds, "scores": self.scores,
                "product_powers": {"teacher": self.product.a, "gold_only": self.product.b},
                "chosen": self.chosen, "why": self.why,
                "class_trust": [round(t, 4) for t in self.class_trust],
                "teacher_below_gold_only": self.teacher_below_gold_only}

    @property
    def teacher_below_gold_only(self) -> bool:
        return self.scores["teacher"]["accuracy"] < self.scores["gold_only"]["accuracy"]

    def labels_for(self, teacher: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Shape (N, K): the chosen source's distribution for texts with teacher distributions ``teacher``
        and embeddings ``x`` (the pool, or the eval set)."""
        if self.chosen == "teacher":
            return np.asarray(teacher, dtype=np.float64)
        probe = self.probe.predict(x)
        return probe if self.chosen == "gold_only" else self.product(teacher, probe)


def score_on_gold(predicted: np.ndarray, y: np.ndarray, labels: tuple[str, ...]) -> dict:
    """Accuracy, its 95% Wilson interval, the count behind it, and recall per class. ``predicted``, ``y``:
    shape (G,), class indices."""
    predicted, y = np.asarray(predicted), np.asarray(y)
    correct = int((predicted == y).sum())
    low, high = wilson_interval(correct, len(y))
    recall = {name: round(float((predicted[y == j] == j).mean()), 4) for j, name in enumerate(labels) if (y == j).any()}
    return {"accuracy": round(correct / len(y), 4), "interval": [round(low, 4), round(high, 4)],
            "correct": correct, "n": len(y), "recall": recall}


def judge(teacher: np.ndarray, x: np.ndarray, gold: list[str], labels: tuple[str, ...], seed: int = 0) -> GoldJudgement:
    """Score the three label sources on the gold texts and choose the one the student learns from.

    ``teacher``: shape (G, K), the teacher's distributions on the gold texts (calibrated as the pool's are);
    ``x``: shape (G, D), their embeddings. The choice is the best cross-validated accuracy, ties going to
    ``combined`` then ``gold_only`` (the richer source), since with a few dozen texts accuracies tie often.
    """
    k = len(labels)
    y = np.array([labels.index(g) for g in gold])
    teacher = np.asarray(teacher, dtype=np.float64)
    folds = cv_folds(y, seed)
    probe_oof = out_of_fold(x, y, k, folds)
    combined_oof = np.zeros_like(probe_oof)
    for fit_on, held in folds:  # nested: the powers are chosen without the held-out texts
        inner_probe = (out_of_fold(x[fit_on], y[fit_on], k, cv_folds(y[fit_on], seed)) if len(fit_on) > 1
                       else Probe.fit(x[fit_on], y[fit_on], k).predict(x[fit_on]))
        product = Product.fit(teacher[fit_on], inner_probe, y[fit_on])
        combined_oof[held] = product(teacher[held], Probe.fit(x[fit_on], y[fit_on], k).predict(x[held]))
    predictions = {"teacher": teacher.argmax(1), "gold_only": probe_oof.argmax(1), "combined": combined_oof.argmax(1)}
    scores = {source: score_on_gold(p, y, labels) for source, p in predictions.items()}
    order = ("combined", "gold_only", "teacher")
    chosen = max(order, key=lambda s: (scores[s]["correct"], -order.index(s)))
    others = ", ".join(f"{s} {scores[s]['accuracy']:.3f}" for s in order if s != chosen)
    why = f"best cross-validated accuracy on the {len(y)} gold texts: {chosen} {scores[chosen]['accuracy']:.3f} ({others})"
    hits = predictions[chosen] == y
    trust = [(float(hits[predictions[chosen] == j].sum()) + 1.0) / (float((predictions[chosen] == j).sum()) + 2.0)
             for j in range(k)]  # Laplace-smoothed precision of label j
    return GoldJudgement(
        n=len(y), per_class={name: int((y == j).sum()) for j, name in enumerate(labels)}, folds=len(folds),
        scores=scores, product=Product.fit(teacher, probe_oof, y), chosen=chosen, why=why,
        class_trust=trust, probe=Probe.fit(x, y, k))


# The class-balance power of the taught pool labels' weights (sample_weights). In bench/gold.py's study (figures in
# bench/RESULTS.md) 0.5 and 1 both beat 0 on every set and tie each other; 0.5 is the milder of two equals, and
# does not give one noisy label of a rare class many times the weight of others.
CLASS_BALANCE = 0.5


def sample_weights(probs: np.ndarray, trust: list[float], balance: float = 0.0) -> np.ndarray:
    """Shape (N,): each pool text weighted by the trust of its label's class, relative to the best class,
    so a class the labels get wrong on the gold texts teaches less; times ``(N / (K n_k)) ** balance`` for a
    label of a class the labels give ``n_k`` times, scaled to average 1, so rare classes are not drowned."""
    trust_arr = np.asarray(trust, dtype=np.float64)
    label = np.asarray(probs).argmax(axis=1)
    weights = trust_arr[label] / trust_arr.max()
    if balance:
        counts = np.bincount(label, minlength=len(trust_arr)).astype(np.float64)
        factor = (len(label) / (len(trust_arr) * counts[label])) ** balance
        weights = weights * factor / factor.mean()
    return weights
