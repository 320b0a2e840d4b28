"""The training pool: texts with the distributions the student learns (``Pool``), and how distill builds it from
the teacher's labelled pool: held-out texts left out, the probe's relabelling, ``--gold``'s judged labels and
gold samples, ``--fill-rest``'s probe-labelled texts, and the per-class minimum. Numpy and scikit-learn; the
encoder (torch) only where a probe needs embeddings.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import RELABEL_MIN_KAPPA, DistillConfig, LabelSet
from ..data import Dataset, text_key
from ..errors import DataError
from ..files import atomic_path
from ..labels.gold import CLASS_BALANCE, GoldJudgement, judge, sample_weights
from ..labels.labelling import Labelled, recalibrated
from ..store import text_hash
from .runs import RELABELLED


@dataclass(frozen=True)
class Pool:
    """The training pool: texts with the teacher's distributions. ``probs`` has shape (N, K).

    ``trusted`` (shape (N,), bool): gold-labelled samples, trained on in every batch they fall in, whatever
    the selection method says, with weight ``TrainConfig.gold_weight``; they neither move nor are judged by
    the selection thresholds. ``weights`` (shape (N,)): a multiplier on each sample's loss weight (the
    per-class trust of its label, gold.sample_weights). Both default to none trusted and all ones.
    """

    texts: list[str]
    probs: np.ndarray
    trusted: np.ndarray | None = None
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.texts)
        object.__setattr__(self, "trusted", np.zeros(n, dtype=bool) if self.trusted is None
                           else np.asarray(self.trusted, dtype=bool))
        object.__setattr__(self, "weights", np.ones(n) if self.weights is None
                           else np.asarray(self.weights, dtype=np.float64))
        if self.probs.shape[0] != n or self.trusted.shape != (n,) or self.weights.shape != (n,):
            raise ValueError(f"pool parts disagree: {n} texts, probs {self.probs.shape}, trusted "
                             f"{self.trusted.shape}, weights {self.weights.shape}")

    @property
    def pseudo(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def conf(self) -> np.ndarray:
        return self.probs.max(axis=1)

    def fingerprint(self) -> str:
        """sha256 of everything training reads from the pool (texts, distributions, trust, weights): a run resumed
        on a pool that changed since its checkpoint (a store that gained rows, a shrunk DATA) is refused."""
        import hashlib

        digest = hashlib.sha256("\x00".join(self.texts).encode("utf-8", "surrogatepass"))
        for part in (np.asarray(self.probs, dtype=np.float64), self.trusted, self.weights):
            digest.update(np.ascontiguousarray(part).tobytes())
        return digest.hexdigest()


def without(pool: Labelled, texts: list[str]) -> tuple[Labelled, int]:
    """``pool`` without any text that equals one of ``texts`` up to whitespace and case."""
    held = {text_key(t) for t in texts}
    keep = [i for i, t in enumerate(pool.texts) if text_key(t) not in held]
    if len(keep) == len(pool.texts):
        return pool, 0
    gold = None if pool.gold is None else [pool.gold[i] for i in keep]
    trimmed = Labelled([pool.texts[i] for i in keep], [pool.rows[i] for i in keep], gold, pool.total,
                       pool.labelled, pool.cached, pool.skipped, pool.duplicates, pool.seconds)
    return trimmed, len(pool.texts) - len(keep)


def plus_filled(training, filled, shown: list[str]):
    """``--fill-rest``: the training pool with the texts the teacher never labelled appended, each with the
    rounds' probe distribution (``budget.Filled``; a --few-shot example stays out), untrusted, weight 1."""
    held = {text_key(t) for t in shown}
    keep = [i for i, t in enumerate(filled.texts) if text_key(t) not in held]
    return Pool(training.texts + [filled.texts[i] for i in keep],
                np.vstack([training.probs, filled.probs[keep]]) if keep else training.probs,
                trusted=np.r_[training.trusted, np.zeros(len(keep), bool)],
                weights=np.r_[training.weights, np.ones(len(keep))]), len(keep)


def learn_from_gold(texts: list[str], probs: np.ndarray, gold: Dataset, gold_probs: np.ndarray,
                    labels: tuple[str, ...], seed: int, progress: bool = False, balance: float = CLASS_BALANCE):
    """The training pool with ``--gold``: the pool's texts labelled by the source the gold texts judge best
    (teacher, gold-only probe, or their product; ``gold.judge``), each weighted by the trust of its label's
    class, plus the gold texts themselves as trusted samples. Returns ``(Pool, GoldJudgement)``.

    ``probs``/``gold_probs``: shape (N, K)/(G, K), the teacher's distributions, calibrated alike.
    """
    from ..teacher.encoder import embed

    x = embed(texts + gold.texts, progress=progress)
    judgement = judge(gold_probs, x[len(texts):], gold.gold, labels, seed)
    taught = judgement.labels_for(probs, x[: len(texts)])
    onehot = np.eye(len(labels))[[labels.index(g) for g in gold.gold]]
    pool = Pool(texts + gold.texts, np.vstack([taught, onehot]),
                trusted=np.r_[np.zeros(len(texts), bool), np.ones(len(gold.texts), bool)],
                weights=np.r_[sample_weights(taught, judgement.class_trust, balance),
                              np.ones(len(gold.texts))])
    return pool, judgement


def relabelled(pool: Labelled, probs: np.ndarray, labels: tuple[str, ...], seed: int, progress: bool):
    """--relabel probe: the pool's distributions times a cross-fitted probe's (relabel.py), and a record."""
    from .relabel import PROBE_C, relabelled as probe_relabelled
    from ..teacher.encoder import embed

    started = time.perf_counter()
    out = probe_relabelled(probs, embed(pool.texts, progress=progress), seed)
    record = {"method": "probe", "probe_c": PROBE_C, "changed": round(float(np.mean(out.argmax(1) != probs.argmax(1))), 4),
              "seconds": round(time.perf_counter() - started, 2)}
    if pool.gold and all(pool.gold):  # a built-in pool: how right the labels are, before and after
        y = np.array([labels.index(g) if g in labels else -1 for g in pool.gold])
        record["pool_accuracy"] = {"teacher": round(float(np.mean(probs.argmax(1) == y)), 4),
                                   "relabelled": round(float(np.mean(out.argmax(1) == y)), 4)}
    return out, record


def check_taught(training, labels: LabelSet, minimum: int) -> None:
    """With --gold: enough texts per class among the labels the student learns from (gold texts included)."""
    counts = Counter(training.probs.argmax(axis=1).tolist())
    short = [f"{name} {counts.get(j, 0)}" for j, name in enumerate(labels.names) if counts.get(j, 0) < minimum]
    if short:
        raise DataError(f"too few texts per class to train: {', '.join(short)} of {len(training.texts)} "
                        f"(need at least {minimum} each; add texts or gold examples, or lower --min-per-class)")


def check_pool(pool: Labelled, labels: LabelSet, minimum: int) -> None:
    counts = Counter(r.label for r in pool.rows)
    short = [f"{name} {counts.get(name, 0)}" for name in labels.names if counts.get(name, 0) < minimum]
    if short:
        raise DataError(
            f"too few texts per class to train: the teacher gave {', '.join(short)} of {len(pool.rows)} "
            f"(need at least {minimum} each; add texts, merge labels, or lower --min-per-class)"
        )


@dataclass
class Training:
    """Phase 3's result: the pool the student trains on and how it was made."""

    pool: Pool
    judgement: GoldJudgement | None = None  # --gold: the label sources judged on the gold texts
    relabel: dict | None = None  # --relabel probe: how many labels it changed, and how many are right
    filled: int = 0  # --fill-rest: texts the teacher never saw, labelled by the rounds' probe
    warnings: list[str] = field(default_factory=list)


def training_pool(config: DistillConfig, pool: Labelled, judged: Labelled | None, gold: Dataset | None,
                  prior: np.ndarray | None, filled, health: dict, run_dir: Path, progress: bool) -> Training:
    """The pool the student learns from: with ``--gold`` the labels the gold texts judge best plus the gold texts
    themselves; else the teacher's (calibrated) distributions, checked by the probe unless they are near chance;
    then ``--fill-rest``'s texts. ``pool``: the teacher's rows, held-out texts already left out and calibrated."""
    labels = config.scoring.labels
    probs = np.array([r.probs for r in pool.rows], dtype=np.float64)
    out = Training(Pool(pool.texts, probs))
    if gold:
        gold_probs = np.array([r.probs for r in recalibrated(judged.rows, labels.names, prior)])
        out.pool, out.judgement = learn_from_gold(pool.texts, probs, Dataset(gold.name, judged.texts, judged.gold),
                                                  gold_probs, labels.names, config.train.seed, progress)
        check_taught(out.pool, labels, config.min_per_class)
        if out.judgement.teacher_below_gold_only:
            t, g = out.judgement.scores["teacher"]["accuracy"], out.judgement.scores["gold_only"]["accuracy"]
            out.warnings.append(f"the teacher ({t:.3f}) does worse on your {out.judgement.n} gold texts than a probe "
                                f"trained on those texts alone ({g:.3f}): its labels count for less here (try another "
                                "--task or teacher, or more gold texts)")
    elif config.relabel:
        signal = health.get("signal")
        if signal is not None and signal["kappa"] < RELABEL_MIN_KAPPA:
            # Labels a probe on the texts can hardly reproduce teach it their noise: it makes them surer, not
            # righter (slo-sentiment: the student fell on every seed; bench/RESULTS.md). So there the teacher's
            # labels are trained on as they are.
            out.warnings.append(f"the pool's labels were not checked by the probe (--relabel {config.relabel}): it "
                                f"reproduces them too weakly to check them (kappa {signal['kappa']:.2f} < "
                                f"{RELABEL_MIN_KAPPA} on {signal['n']} texts; where a probe cannot follow the labels "
                                "it only makes them surer, not righter)")
        else:
            probs, out.relabel = relabelled(pool, probs, labels.names, config.train.seed, progress)
            with atomic_path(run_dir / RELABELLED) as tmp, open(tmp, "wb") as f:
                np.savez(f, text_sha256=np.array([text_hash(t) for t in pool.texts]), probs=probs)
            out.pool = Pool(pool.texts, probs)
    if filled:  # never counted as teacher labels: metrics' data.filled_size, label_budget.texts_filled
        out.pool, out.filled = plus_filled(out.pool, filled, [t for t, _ in config.scoring.few_shot])
    return out
