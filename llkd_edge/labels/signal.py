"""Do the teacher's labels carry signal? A label-free test (no gold label), pure numpy + scikit-learn over sentence
embeddings (``teacher.encoder.embed`` makes them).

Answer information (``distributions.answer_information``) measures how sure the answers are; a two-class teacher
that answers 0.6/0.4 the right way 70% of the time scores near zero on it. Here instead a linear probe on the frozen
encoder's embeddings learns the teacher's labels with 5-fold cross-fitting (each text predicted by a probe that
never saw its label), and its agreement with the labels is set against the same probe on the labels permuted
(same label counts, no link to the text). Labels that follow the texts are predictable beyond the permuted ones;
labels at chance are not. A test of whether the labels depend on the text in a way similar texts share, not of
whether they are right: a teacher that is consistently wrong passes it too (bench/RESULTS.md, "Signal or chance").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .gold import Probe, cv_folds

PERMUTATIONS = 4  # permuted-label probes the observed one is set against
PROBE_C = 1.0  # hundreds of noisy labels: as the relabelling probe (student/relabel.py)
MIN_Z = 3.0  # the labels' log-likelihood under the probe must beat the permuted labels' by this many sds
MIN_GAIN = 0.0  # nats per text beyond the permuted labels (an effect-size floor; 0: the z-test alone)


@dataclass(frozen=True)
class Signal:
    agreement: float  # share of texts whose label the cross-fitted probe predicts
    chance_agreement: float  # the same on permuted labels (mean)
    kappa: float  # (agreement - chance) / (1 - chance): 0 at chance, 1 every label predicted
    gain: float  # mean log-likelihood of the labels under the probe, minus the permuted labels' (nats a text)
    z: float  # gain over the permuted labels' standard deviation
    signal: bool

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _fit_score(x: np.ndarray, labels: np.ndarray, k: int, seed: int) -> tuple[float, float]:
    """Cross-fitted probe: (agreement, mean log-likelihood) of ``labels``."""
    out = np.zeros((len(labels), k))
    for fit_on, held in cv_folds(labels, seed):
        out[held] = Probe.fit(x[fit_on], labels[fit_on], k, PROBE_C).predict(x[held])
    picked = out[np.arange(len(labels)), labels]
    return float(np.mean(out.argmax(axis=1) == labels)), float(np.mean(np.log(np.maximum(picked, 1e-9))))


def probe_signal(x: np.ndarray, labels: np.ndarray, k: int, seed: int = 0, permutations: int = PERMUTATIONS) -> Signal:
    """Whether ``labels`` (N,) over embeddings ``x`` (N, D) carry signal (module docstring)."""
    labels = np.asarray(labels)
    if len(set(labels.tolist())) < 2:
        return Signal(1.0, 1.0, 0.0, 0.0, 0.0, False)
    agreement, loglik = _fit_score(x, labels, k, seed)
    rng = np.random.default_rng(seed)
    null = np.array([_fit_score(x, rng.permutation(labels), k, seed) for _ in range(permutations)])
    chance = float(null[:, 0].mean())
    gain = loglik - float(null[:, 1].mean())
    sd = max(float(null[:, 1].std(ddof=1)) if permutations > 1 else 0.0, 1e-3)
    kappa = (agreement - chance) / max(1 - chance, 1e-9)
    return Signal(agreement, chance, kappa, gain, gain / sd, bool(gain / sd >= MIN_Z and gain > MIN_GAIN))
