"""Teacher ensembles (``--teacher a,b,...``): several GGUF teachers asked the same question, their answers
pooled into one distribution per text.

Each member labels into the store under its own key, exactly as it would alone (so its rows are reusable by a
run that asks that member alone, and a killed run resumes per member); the pooled distribution is a read-time
transform, like pool calibration, and is never stored. Pooling is log-linear with equal weights (the
normalised geometric mean of the members' calibrated distributions), or with the weights given
(``--teacher a,b*2``: the weighted geometric mean): a label wins when no member finds it
unlikely, and a member that is sure counts for more than one that is not. bench/ensemble.py measured it
against each member alone and against other weightings.

An ``Ensemble`` implements ``backend.TeacherBackend``; ``labelling.label_dataset`` sends each member through
the store and pools their rows with ``pooled``. This module imports no llama_cpp: its members do.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..config import ScoringConfig, stable_hash
from ..distributions import entropy
from ..registry import ModelFile
from ..store import LabelRow, ScoringKey


def log_linear_pool(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Shape M x (N, K) -> (N, K): exp(sum_m w_m log p_m), renormalised per row; equal weights by default.

    Zeros are floored at 1e-12, so one member's certain "no" does not veto a label outright."""
    if not probs:
        raise ValueError("log_linear_pool needs at least one member's (N, K) array")
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probs])
    if stacked.ndim != 3:
        raise ValueError(f"each member's probabilities must have shape (N, K); got {stacked.shape[1:]}")
    w = np.full(len(stacked), 1.0 / len(stacked)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(stacked),) or not np.all(np.isfinite(w)) or w.min() < 0 or w.sum() <= 0:
        raise ValueError(f"weights must be {len(stacked)} non-negative numbers, not all zero; got {weights!r}")
    logp = np.tensordot(w / w.sum(), np.log(np.clip(stacked, 1e-12, 1.0)), axes=1)
    out = np.exp(logp - logp.max(axis=-1, keepdims=True))
    return out / out.sum(axis=-1, keepdims=True)


def pooled_rows(member_rows: Sequence[Sequence[LabelRow]], labels: Sequence[str],
                weights: Sequence[float] | None = None) -> list[LabelRow]:
    """The members' rows for the same texts (same order) -> one row per text with the pooled distribution
    (``log_linear_pool``, equal weights unless given); label-token mass is the members' mean, tokens and
    truncation the first member's."""
    if not member_rows or len({len(rows) for rows in member_rows}) > 1:
        raise ValueError("pooled_rows needs one equally long row list per member")
    if not member_rows[0]:
        return []
    probs = log_linear_pool([np.array([r.probs for r in rows]) for rows in member_rows], weights)
    ent = entropy(probs)
    return [LabelRow(text=first.text, probs=tuple(float(p) for p in probs[i]), label=labels[int(probs[i].argmax())],
                     confidence=float(probs[i].max()), entropy=float(ent[i]),
                     label_mass=float(np.mean([rows[i].label_mass for rows in member_rows])),
                     n_tokens=first.n_tokens, truncated=first.truncated)
            for i, first in enumerate(member_rows[0])]


@dataclass
class Ensemble:
    """Several teachers behind one ``TeacherBackend``: ``key`` and ``details`` name them all."""

    members: list  # TeacherBackend each, in the order given
    weights: tuple[float, ...] | None = None  # in the pool, per member (``--teacher a,b*2``); None: equal
    retried_batches: int = 0

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ValueError("an ensemble needs at least two teachers")
        if self.weights is not None and len(self.weights) != len(self.members):
            raise ValueError("an ensemble's weights: one per member")

    @property
    def pooling(self) -> str:
        """How the members are pooled, as recorded (equal weights keep the words runs before weights recorded)."""
        if self.weights is None:
            return "log-linear, equal weights"
        return "log-linear, weights " + ":".join(f"{w:g}" for w in self.weights)

    @property
    def scoring(self) -> ScoringConfig:
        return self.members[0].scoring

    @property
    def model(self) -> ModelFile:
        """A stand-in file record: the members' names joined with ``+``; sha256 over the members' digests."""
        first = self.members[0].model
        return ModelFile("+".join(m.model.name for m in self.members), first.path,
                         stable_hash([m.model.sha256 for m in self.members]), "ensemble",
                         " + ".join(dict.fromkeys(m.model.licence for m in self.members)))

    @property
    def key(self) -> ScoringKey:
        """Identifies the pooled answers in a run's provenance (the store holds only the members' rows)."""
        return ScoringKey(self.model.sha256, stable_hash({"members": [m.key.config_hash for m in self.members],
                                                          "pooling": self.pooling}))

    @property
    def prompt_style(self) -> str:
        """The members' style when they share one (prompt candidates are built for it), else ``mixed``."""
        styles = {m.prompt_style for m in self.members}
        return styles.pop() if len(styles) == 1 else "mixed"

    @property
    def details(self) -> dict:
        return {"pooling": self.pooling,
                "members": [{"teacher": m.model.name, "sha256": m.model.sha256, "config_hash": m.key.config_hash,
                             **m.details} for m in self.members]}

    @property
    def prompt(self) -> str:
        return "\n\n".join(f"[{m.model.name}]\n{m.prompt}" for m in self.members)

    @property
    def label_tokens(self) -> dict:
        return {m.model.name: m.label_tokens for m in self.members}

    def use(self, scoring: ScoringConfig) -> None:
        for member in self.members:
            member.use(scoring)

    def pooled(self, member_rows: Sequence[Sequence[LabelRow]]) -> list[LabelRow]:
        """``pooled_rows`` with this ensemble's labels."""
        if len(member_rows) != len(self.members):
            raise ValueError("pooled needs one row list per member")
        return pooled_rows(member_rows, self.scoring.labels.names, self.weights)

    def score_batches(self, batches: Iterable[list[str]]) -> Iterator[list[LabelRow]]:
        """Pooled rows batch by batch, nothing stored (``label_dataset`` stores each member's rows instead)."""
        for texts in batches:
            yield self.pooled([member.score(texts) for member in self.members])

    def close(self) -> None:
        for member in self.members:
            member.close()
