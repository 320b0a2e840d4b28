"""Do the teacher's labels carry signal? A label-free test (no gold label), pure numpy over sentence embeddings
(``teacher.encoder.embed`` makes them).

Answer information (``distributions.answer_information``) measures how sure the answers are; a two-class teacher
that answers 0.6/0.4 the right way 70% of the time scores near zero on it. Here instead a linear probe on the frozen
encoder's embeddings learns the teacher's labels with 5-fold cross-fitting (each text predicted by a probe that
never saw its label), and its agreement with the labels is set against the same probe on the labels permuted
(same label counts, no link to the text). Labels that follow the texts are predictable beyond the permuted ones;
labels at chance are not.

The probe is ridge regression onto the one-hot labels (closed form: a D x D solve per fold), so the test can afford
``PERMUTATIONS`` permuted fits in about a second. It tells whether the labels depend on the text in a way that
similar texts share, not whether they are right: a teacher that is consistently wrong passes it too, and a task the
encoder cannot see (a language it was not trained on) fails it (bench/RESULTS.md, "Signal or chance").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PERMUTATIONS = 50  # permuted-label probes the observed one is set against
FOLDS = 5
RIDGE = 1.0  # on unit-length embeddings
MIN_Z = 3.0  # signal: the probe's agreement beats the permuted labels' mean by this many of their sds
MIN_ROWS = 20  # fewer labels than this are not judged


@dataclass(frozen=True)
class Signal:
    n: int  # labels tested
    agreement: float  # share of texts whose label the cross-fitted probe predicts
    chance_agreement: float  # the same on permuted labels (mean over the permutations)
    kappa: float  # (agreement - chance) / (1 - chance): 0 at chance, 1 every label predicted
    z: float  # agreement beyond chance over the permuted labels' standard deviation
    signal: bool  # z >= MIN_Z

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _agreement(x: np.ndarray, labels: np.ndarray, k: int, folds: np.ndarray) -> float:
    """Cross-fitted ridge probe: the share of ``labels`` its argmax predicts."""
    hits = 0
    targets = np.eye(k)[labels]
    for f in range(FOLDS):
        held = folds == f
        fit_x, fit_y = x[~held], targets[~held]
        mean_x, mean_y = fit_x.mean(axis=0), fit_y.mean(axis=0)
        a, b = fit_x - mean_x, fit_y - mean_y
        w = np.linalg.solve(a.T @ a + RIDGE * np.eye(x.shape[1]), a.T @ b)
        predicted = ((x[held] - mean_x) @ w + mean_y).argmax(axis=1)
        hits += int(np.sum(predicted == labels[held]))
    return hits / len(labels)


def probe_signal(x: np.ndarray, labels: np.ndarray, k: int, seed: int = 0, permutations: int = PERMUTATIONS) -> Signal:
    """Whether ``labels`` (N,) over embeddings ``x`` (N, D) carry signal (module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must be in 0..{k - 1}")
    if n < MIN_ROWS or len(set(labels.tolist())) < 2:
        return Signal(n, 1.0, 1.0, 0.0, 0.0, False)
    rng = np.random.default_rng(seed)
    folds = rng.permutation(np.arange(n) % FOLDS)
    agreement = _agreement(x, labels, k, folds)
    null = np.array([_agreement(x, rng.permutation(labels), k, folds) for _ in range(permutations)])
    chance = float(null.mean())
    z = (agreement - chance) / max(float(null.std(ddof=1)), 1 / n)
    return Signal(n, agreement, chance, (agreement - chance) / max(1 - chance, 1e-9), float(z), bool(z >= MIN_Z))
