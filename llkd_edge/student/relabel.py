"""The teacher's labels on the pool, checked against the pool's own structure (``distill --relabel probe``):
pure numpy + scikit-learn over sentence embeddings (``encoder.embed`` makes them), no gold label.

A linear probe (``gold.Probe``, logistic regression on the frozen sentence encoder's embeddings) learns
the teacher's labels with 5-fold cross-fitting, so each text gets the distribution of a probe that never
saw its teacher label. A teacher label that disagrees with what similar texts were labelled is then
likely wrong; the product of the two distributions (``p ∝ p_teacher * p_probe``) keeps the teacher's
answer where the probe is unsure and overrules it where the probe is sure and the teacher is not. Compare
confident learning (Northcutt et al., 2021), which finds label errors from cross-validated predictions the
same way; here the errors are corrected rather than dropped.
"""

from __future__ import annotations

import numpy as np

from ..labels.gold import Probe, Product, cv_folds

PROBE_C = 1.0  # hundreds of noisy labels: more regularisation than gold.Probe's default for a few clean ones
RELABELLINGS = ("none", "probe")


def cross_fitted(x: np.ndarray, y: np.ndarray, k: int, seed: int, c: float = PROBE_C) -> np.ndarray:
    """Shape (N, K): each row from a probe fitted on the other folds' labels ``y`` (N,) over ``x`` (N, D)."""
    out = np.zeros((len(y), k))
    for fit_on, held in cv_folds(y, seed):
        out[held] = Probe.fit(x[fit_on], y[fit_on], k, c).predict(x[held])
    return out


def relabelled(probs: np.ndarray, x: np.ndarray, seed: int) -> np.ndarray:
    """Shape (N, K): the teacher's distributions ``probs`` times a cross-fitted probe's, rows renormalised."""
    probs = np.asarray(probs, dtype=np.float64)
    return Product(1.0, 1.0)(probs, cross_fitted(x, probs.argmax(axis=1), probs.shape[1], seed))
