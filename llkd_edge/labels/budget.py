"""``distill --label-budget`` and ``label --budget``: the teacher labels the part of a pool that ``active.py``
picks, in rounds, through the label store (``labelling.label_within_budget`` is the entry point). Every label goes into the store as it comes, so a killed run resumes without asking the teacher
again, and a later run with a larger budget (same pool, strategy, step and seed) re-makes the same first
rounds from stored labels and pays only for the new ones.

The pool's embeddings (the packaged sentence encoder, ``encoder.embed``) are kept beside the label store
(``labels.sqlite`` -> ``labels.embeddings.npz``) with the hash of the texts they belong to: a resumed or
larger-budget run on the same pool reads them back, and the run folder stays empty until labelling is
done (so a run killed in its rounds is started again like any other).
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .active import budget_count, fill_rest, run_rounds
from ..config import LabelBudget
from ..data import Dataset
from ..files import atomic_path
from ..store import unique_texts


@dataclass(frozen=True)
class Filled:
    """``--fill-rest``: the pool texts the teacher never labelled, each with the distribution of the probe fitted
    on the teacher's labels (``active.fill_rest``), tempered to be no more confident on average than the
    teacher's. Trained on beside the teacher's rows, never stored or counted as teacher labels."""

    texts: list[str]
    probs: np.ndarray  # (M, K)


def _embeddings(texts: list[str], path: Path, progress: bool) -> np.ndarray:
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()
    if path.exists():
        try:
            with np.load(path) as saved:
                if str(saved["texts_sha256"]) == digest:
                    return saved["x"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable or another pool: made again
    from ..teacher.encoder import embed

    x = embed(texts, progress=progress)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, x=x, texts_sha256=digest)
    return x


def pick_and_label(dataset: Dataset, labels: tuple[str, ...], label, store_path: str, budget: LabelBudget, seed: int,
                   progress: bool = True, calibration: str = "batch") -> tuple[list[int], list, dict, Filled | None]:
    """Label the texts of ``dataset`` (eval and gold texts already taken out) that the rounds pick, up to the
    budget; ``labels``: the label names; ``label(Dataset) -> labelling.Labelled`` asks the teacher through the store. Returns
    the picked texts' indices into ``dataset.texts`` (in the order they were picked), their rows, a record
    for the summary (the budget, each round's picks, teacher calls and seconds), and with ``budget.fill_rest``
    the rest of the pool labelled by the probe (else None). ``calibration``: the pool calibration the rounds' probe
    reads the teacher's labels with, as distill will (``active.as_read``)."""
    from tqdm.auto import tqdm

    first, _ = unique_texts(dataset.texts)
    where = list(first.values())
    texts = [dataset.texts[i] for i in where]
    n = len(texts)
    total = budget_count(budget.budget, n)
    step = max(2 * len(labels), round(budget.step * n))
    started = time.perf_counter()
    x = _embeddings(texts, Path(store_path).with_suffix(".embeddings.npz"), progress)
    embed_seconds = time.perf_counter() - started
    rows: list = []
    rounds: list[dict] = []
    bar = tqdm(total=total, unit="text", desc=f"labelling {dataset.name} within budget", disable=not progress,
               dynamic_ncols=True)

    def ask(chosen: np.ndarray) -> np.ndarray:
        got = label(Dataset(dataset.name, [texts[i] for i in chosen]))
        rows.extend(got.rows)
        rounds.append({"round": len(rounds), "picked": len(chosen), "labelled_total": len(rows),
                       "teacher_calls": got.labelled, "label_seconds": round(got.seconds, 2)})
        bar.update(len(chosen))
        bar.set_postfix(round=len(rounds), asked=sum(r["teacher_calls"] for r in rounds))
        return np.array([r.probs for r in got.rows])

    picked, probs, select_seconds = run_rounds(x, total, step, budget.strategy, seed, ask, calibration)
    bar.close()
    filled = None
    filled_right = None
    if budget.fill_rest:
        rest, rest_probs = fill_rest(x, picked, probs, temper=True, calibration=calibration)  # no surer than the teacher: bench/RESULTS.md
        filled = Filled([texts[i] for i in rest], rest_probs)
        gold = [dataset.gold[where[i]] for i in rest] if dataset.gold is not None else []
        known = [(p.argmax(), g) for p, g in zip(rest_probs, gold) if g in labels]
        if known:  # DATA's own gold labels, where it has them: only ever reported
            filled_right = round(float(np.mean([labels[j] == g for j, g in known])), 4)
    for r, s in zip(rounds, select_seconds):
        r["select_seconds"] = round(s, 2)
    calls = sum(r["teacher_calls"] for r in rounds)
    if progress:
        print(f"{dataset.name}: the teacher labelled {len(picked)} of {n} texts ({calls} asked now, "
              f"{len(picked) - calls} already stored) in {len(rounds)} rounds; {n - len(picked)} left unlabelled",
              file=sys.stderr)
    record = {**{f: getattr(budget, f) for f in ("budget", "strategy", "step", "fill_rest")}, "pool_texts": n,
              "texts_labelled": len(picked), "step_texts": step, "teacher_calls": calls,
              "texts_filled": len(filled.texts) if filled else 0, "filled_labels_right": filled_right,
              "label_seconds": round(sum(r["label_seconds"] for r in rounds), 2),
              "embed_seconds": round(embed_seconds, 2), "rounds": rounds}
    return [where[i] for i in picked], rows, record, filled


def without(dataset: Dataset, held: set[str]) -> Dataset:
    """``dataset`` without the texts whose ``data.text_key`` is in ``held`` (eval and gold texts: never
    worth a teacher call in the pool)."""
    from ..data import text_key

    keep = [i for i, t in enumerate(dataset.texts) if text_key(t) not in held]
    return replace(dataset, texts=[dataset.texts[i] for i in keep],
                   gold=None if dataset.gold is None else [dataset.gold[i] for i in keep])
