"""``distill --teacher auto``: the packaged LLM alone, or its log-linear pool with the encoder teacher
(``teacher.zeroshot``), chosen on the pool without labels.

Both label the pool (through the store, each under its own key, so the run that follows reads them back). Where
their labels agree beyond chance (Cohen's kappa of the pool-calibrated labels at least ``AGREEMENT_MIN``), the
encoder can read the task and the run learns from the pool, the encoder weighted ``ENCODER_WEIGHT`` to the LLM's 1
(``--teacher LLM,encoder*2``); where they do not, one of them cannot read the task, nothing label-free says which
(bench/RESULTS.md, "Signal or chance"), and the run keeps the LLM, today's teacher.

Set on the built-in sets (bench/RESULTS.md, "The teacher chosen without labels"): on 600-800 pool texts the two
agree at kappa 0.30-0.78 on the English sets and 0.02 on the Slovenian comments (the encoder is English-only); the
weight 2 is where the pool came within 0.01 of the better member on every English set, and a fit to those sets.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import DEFAULT_TEACHER, WEIGHT_MARK, DistillConfig
from ..data import Dataset, text_key
from ..distributions import batch_calibrated, pool_prior
from ..errors import DataError, UserError
from ..files import lies_inside, read_json, write_json
from ..teacher.zeroshot import NAME as ENCODER
from .labelling import label_dataset

AGREEMENT_MIN = 0.15
ENCODER_WEIGHT = 2
ALONE = DEFAULT_TEACHER
POOLED = f"{DEFAULT_TEACHER},{ENCODER}{WEIGHT_MARK}{ENCODER_WEIGHT:g}"
CHOICE_FILE = "teacher_choice.json"


def agreement(first: np.ndarray, second: np.ndarray) -> float:
    """Cohen's kappa between two teachers' labels of the same texts, each read batch-calibrated (its own mean over
    the texts divided out, as distill reads a pool by default): 0 at chance, 1 when they always agree."""
    from sklearn.metrics import cohen_kappa_score

    a = batch_calibrated(first, pool_prior(first)).argmax(1)
    b = batch_calibrated(second, pool_prior(second)).argmax(1)
    if len(set(a.tolist()) | set(b.tolist())) == 1:
        return 1.0  # both give one and the same label everywhere: kappa is 0/0 there
    return float(cohen_kappa_score(a, b))


def choose(llm: np.ndarray, encoder: np.ndarray) -> dict:
    """The record of the choice from the two teachers' rows on the pool texts, (N, K) each."""
    kappa = round(agreement(llm, encoder), 4) if len(llm) else 0.0
    return {**choose_record(kappa >= AGREEMENT_MIN, kappa), "texts": len(llm)}


def choose_record(pooled: bool, kappa: float) -> dict:
    """The choice as recorded and said: the teacher taken, the agreement and why."""
    return {"teacher": POOLED if pooled else ALONE, "agreement": kappa, "agreement_min": AGREEMENT_MIN,
            "candidates": [ALONE, POOLED],
            "why": (f"the LLM and the encoder teacher agree on the pool (kappa {kappa:.2f} >= {AGREEMENT_MIN}): "
                    f"their pool, the encoder weighted {ENCODER_WEIGHT}" if pooled else
                    f"the LLM and the encoder teacher hardly agree on the pool (kappa {kappa:.2f} < {AGREEMENT_MIN}): "
                    "one of them cannot read the task, so the LLM alone")}


def check_auto(config: DistillConfig, source: Dataset | None) -> None:
    """What ``--teacher auto`` needs, checked before any teacher or student time: one line when it is missing."""
    if source is None or config.label_budget or config.prompt == "auto" or config.backend != "local":
        raise UserError("--teacher auto labels every pool text with both teachers in this process, the prompt as "
                        "given: give a data file (not a label store), without --label-budget, --prompt auto and "
                        f"--backend ray, or name the teacher ({ALONE}, or {POOLED})")


def _read_choice(path: Path, run_dir: Path) -> dict:
    """A kept choice, checked field by field (the folder may come from someone else): one line when it is not one."""
    try:
        if not path.is_file() or not lies_inside(run_dir, path) or path.stat().st_size > 65536:
            raise ValueError("not a small file in the run folder")
        record = read_json(path)
        kappa = record["agreement"]
        if (record["teacher"] not in (ALONE, POOLED) or isinstance(kappa, bool)
                or not isinstance(kappa, (int, float)) or not -1.0 <= kappa <= 1.0
                or (kappa >= AGREEMENT_MIN) != (record["teacher"] == POOLED)):  # made by this rule, this line
            raise ValueError("not a choice")
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path}: not a teacher choice of this version; choose another --out") from None
    return {**choose_record(record["teacher"] == POOLED, float(kappa)), "texts": record.get("texts")}


def auto_teacher(config: DistillConfig, source: Dataset | None, held_out: set[str], run_dir: Path, progress: bool,
                 open_teacher) -> tuple[DistillConfig, dict]:
    """``--teacher auto``: the config with the teacher chosen, and the choice's record, kept in RUN_DIR so a resumed
    run learns from the teacher it started with. ``held_out``: the ``data.text_key`` of the eval and gold texts,
    left out of the agreement as of the pool; ``open_teacher(scoring, teacher_config)`` opens a teacher."""
    check_auto(config, source)
    path = run_dir / CHOICE_FILE
    if path.exists() or path.is_symlink():  # a resumed run: its choice, checked
        record = _read_choice(path, run_dir)
    else:
        both = open_teacher(config.scoring, replace(config.teacher, model=f"{ALONE},{ENCODER}"))
        try:
            rows = [label_dataset(source, member, config.store, progress=progress, role="pool", member=True).rows
                    for member in both.members]
        finally:
            both.close()
        kept = [i for i, r in enumerate(rows[0]) if text_key(r.text) not in held_out]
        if not kept:
            raise DataError("--teacher auto: every pool text is also an eval or gold text; nothing to choose on "
                            "(give a pool apart from the eval set)")
        k = len(config.scoring.labels.names)
        llm, enc = (np.array([rows[m][i].probs for i in kept], dtype=np.float64).reshape(len(kept), k)
                    for m in (0, 1))
        record = choose(llm, enc)
        write_json(path, record)
        if progress:
            print(f"--teacher auto: {record['teacher']} ({record['why']})", file=sys.stderr, flush=True)
    return replace(config, teacher=replace(config.teacher, model=record["teacher"])), record
