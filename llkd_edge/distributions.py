"""From a model's token log-probs to a distribution over labels: pure numpy, no model here.

A label's raw log-prob is the log of the summed probability of the first tokens of its verbaliser's
variants (``label_logprobs``, with the ids two labels share dropped by ``label_token_ids``); rows are
normalised over the labels and contextually calibrated (Zhao et al. 2021, ``calibrated_distribution``).
The teacher (teacher.py) and the synthesis screen (synthesis.py) use these; the unit tests check them
without a model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of shape (N, K) scores (the runtime's and training's, so ONNX and PyTorch probabilities
    are computed alike)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def label_logprobs(vocab_logprobs: np.ndarray, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Shape (V,) vocab log-probs -> shape (K,) log of each label's summed token probability."""
    out = np.empty(len(token_ids))
    for k, ids in enumerate(token_ids):
        lp = vocab_logprobs[list(ids)]
        m = lp.max()
        out[k] = m + np.log(np.exp(lp - m).sum())
    return out


CALIBRATION_FLOOR = 1e-12  # content-free probabilities below this count as this (log(0) would give NaN rows)


def calibrated_distribution(raw: np.ndarray, content_free: np.ndarray | None) -> np.ndarray:
    """Raw label log-probs, shape (N, K) -> label distribution, shape (N, K), rows summing to 1.

    ``content_free`` is the mean label distribution (shape (K,)) on content-free inputs, or None for no
    calibration. Calibration divides each row by it (in log space: subtracts the log of the mean
    probabilities, not the mean of the log-probs) and renormalises; entries are floored at
    ``CALIBRATION_FLOOR`` first, so a zero boosts its label strongly but never yields NaN.
    """
    logq = log_softmax(raw, axis=-1)
    if content_free is not None:
        cf = np.asarray(content_free, dtype=np.float64)
        if cf.shape != logq.shape[-1:] or not np.all(np.isfinite(cf)) or cf.min() < 0:
            raise ValueError(f"content_free must be a finite non-negative vector of shape ({logq.shape[-1]},)")
        logq = log_softmax(logq - np.log(np.maximum(cf, CALIBRATION_FLOOR)), axis=-1)
    return np.exp(logq)


class LabelClash(ValueError):
    """Two labels' answer words start with the same token, so their probabilities cannot be told apart."""

    def __init__(self, first: int, second: int, token: int | None):
        super().__init__(f"labels {first} and {second} share token {token}")
        self.first, self.second, self.token = first, second, token


def label_token_ids(firsts: Sequence[dict[str, int]], primaries: Sequence[str]) -> list[list[int]]:
    """Each label's first-token ids, with every id that two labels share dropped from both.

    ``firsts[k]`` maps label k's verbaliser variants (" sport", "Sport", ...) to their first token id;
    ``primaries[k]`` is the variant an answer most likely starts with. A label keeps at least its primary
    token: a primary that is missing, or that any variant of another label also starts with, raises
    ``LabelClash`` (k, other label, token), since dropping it would leave the label with no token, or with
    only the forms an answer rarely takes.
    """
    if len(firsts) != len(primaries):
        raise ValueError(f"{len(firsts)} labels' variants but {len(primaries)} primaries")
    for k, (forms, primary) in enumerate(zip(firsts, primaries)):
        token = forms.get(primary)
        if token is None:
            raise LabelClash(k, k, None)
        for j, other in enumerate(firsts):
            if j != k and token in other.values():
                raise LabelClash(min(k, j), max(k, j), token)
    counts = Counter(t for forms in firsts for t in set(forms.values()))
    return [sorted({t for t in forms.values() if counts[t] == 1}) for forms in firsts]


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shape (N, K) -> shape (N,), in nats."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(probs * np.log(p)).sum(axis=-1)


def pool_prior(probs: np.ndarray) -> np.ndarray:
    """Shape (N, K) -> (K,): the mean label distribution over a pool, the teacher's bias that batch calibration
    divides out."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError("pool_prior needs a non-empty (N, K) array")
    return probs.mean(axis=0)


def batch_calibrated(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Batch calibration (Zhou et al., 2023): each row divided by the pool's mean distribution ``prior`` and
    renormalised, so that no label is favoured over the pool as a whole. Shape (N, K) -> (N, K).

    Applied on top of contextual calibration; ``prior`` is floored like the content-free distribution.
    It assumes the classes are not far from balanced in the pool: on a skewed pool it moves predictions
    towards the rare classes (see bench/RESULTS.md for what that costs and buys per dataset).
    """
    probs = np.asarray(probs, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != probs.shape[-1:] or not np.all(np.isfinite(prior)) or prior.min() < 0:
        raise ValueError(f"prior must be a finite non-negative vector of shape ({probs.shape[-1]},)")
    out = probs / np.maximum(prior, CALIBRATION_FLOOR)
    return out / out.sum(axis=-1, keepdims=True)


def em_prior(probs: np.ndarray, iterations: int = 200, tol: float = 1e-6) -> np.ndarray:
    """Shape (N, K) -> (K,): the class prior of a pool estimated by EM (Saerens et al., 2002) from rows that
    assume a uniform prior (batch-calibrated ones): reweight each row by the current prior, renormalise, and
    take the new prior as the mean row, until it stops moving. Needs no gold label."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError("em_prior needs a non-empty (N, K) array")
    prior = np.full(probs.shape[1], 1.0 / probs.shape[1])
    for _ in range(iterations):
        weighted = probs * prior
        weighted /= weighted.sum(axis=1, keepdims=True)
        new = weighted.mean(axis=0)
        if np.abs(new - prior).max() < tol:
            return new
        prior = new
    return prior


def pool_divisor(probs: np.ndarray, method: str) -> np.ndarray | None:
    """What a pool calibration divides every teacher row by (``batch_calibrated``), fitted on the pool's rows
    ``probs`` (N, K); None for ``none``. ``batch``: the mean row, so no label is favoured over the pool.
    ``em``: the mean row over the EM estimate of the pool's class prior (``em_prior``), meant to divide the
    bias out but keep a class that is common in the pool common. Measured only (bench/calibration.py), not
    offered: the teacher's own mean row is a fixed point of that EM (rows weighted by it give back the
    stored rows, whose mean it is), so it converges to the teacher's bias and restores it."""
    if method == "none":
        return None
    prior = pool_prior(probs)
    if method == "batch":
        return prior
    if method == "em":
        divisor = np.maximum(prior, CALIBRATION_FLOOR) / np.maximum(em_prior(batch_calibrated(probs, prior)),
                                                                   CALIBRATION_FLOOR)
        return divisor / divisor.sum()
    raise ValueError(f"unknown pool calibration {method!r}")


def mutual_information(probs: np.ndarray) -> float:
    """I(text; answer) over rows of answer distributions: H(mean row) - mean H(row), in nats (Sorensen et al.,
    2022). 0 when every text gets the same answer distribution; at most log K."""
    probs = np.asarray(probs, dtype=np.float64)
    return float(entropy(probs.mean(axis=0, keepdims=True))[0] - entropy(probs).mean())


def answer_information(probs: np.ndarray) -> float:
    """``mutual_information`` after batch calibration, as a share of log K: how much the teacher's answers
    depend on the text, 0 (not at all) to 1 (a confident, evenly spread answer for every text). Needs no gold
    labels; on the built-in sets it is lowest where the teacher is at chance and highest where it is mostly right
    (figures in bench/RESULTS.md). High information is necessary for good labels, not sufficient: confident
    answers can be confidently wrong."""
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[-1]
    if k < 2 or len(probs) == 0:
        return 0.0
    return mutual_information(batch_calibrated(probs, pool_prior(probs))) / float(np.log(k))
