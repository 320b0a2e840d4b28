"""A few gold labels per class (`distill --gold`): teacher alone, the student it teaches, the gold-only probe,
and the student taught by both, on every built-in set, 3 seeds of gold draws, 4/8/16 gold texts per class.

    python -m bench.gold                  # ~1 h on 2 cores once the study's teacher labels are stored
    python -m bench.gold --per-class 8    # one gold size only
    python -m bench.gold --per-class 8 --variant balanced-sqrt   # another way to train the gold-taught student

Data as in bench/study.py (the same label store, so no teacher time when the study has run): the pool is
the train split's texts 200-1200 in its fixed order, the test set the first 500 test texts. Gold texts are
drawn from the pool (seeded, `per` of each class, fewer where a class has fewer) and taken out of it, as
`distill --gold` does; their teacher labels are already stored, so a draw costs no teacher time. The
teacher-alone student trains on the whole pool (gold texts included, with the teacher's labels), one per
seed. Every student is `minilm-l2` with 64 tokens (the study's, for time), the teacher's labels batch
calibrated (distill's default) and LLKD selection. Each finished cell is one JSON file under WORK/cells.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import RESULTS, arguments, markdown_table, record, save_plot, write_report
from bench.study import FULL, DEFAULT_TEACHER, labelled_split, mean_std
from llkd_edge.config import TrainConfig
from llkd_edge.data import Dataset
from llkd_edge.student.pool import learn_from_gold
from llkd_edge.distributions import pool_prior
from llkd_edge.files import read_json, write_json
from llkd_edge.labels.labelling import recalibrated
from llkd_edge.metrics import classification_scores

DATASETS = ("bbc-news", "reuters-r8", "20newsgroups", "election-tweets")
SEEDS = (0, 1, 2)
SIZES = (8, 4, 16)  # 8 first: the bar is judged there
PLAN = replace(FULL, datasets=DATASETS)
STUDENT = dict(student="minilm-l2", max_length=64, epochs=4, batch_size=32, selection="llkd",
               llkd_floor=0.0)  # the paper's rule, as its cells were made
# How the student taught by teacher + gold trains (--variant; the teacher-alone student always trains as STUDENT).
VARIANTS = {"default": {},  # cells of "default" were made with class balance 0 (before gold.CLASS_BALANCE) "soft": dict(soft_labels=True), "all": dict(selection="all"),
            "soft-all": dict(soft_labels=True, selection="all"), "balanced": {}, "balanced-sqrt": {},
            "l6": dict(student="minilm-l6", max_length=128)}  # distill's default student, balance as distill's
BALANCE = {"balanced": 1.0, "balanced-sqrt": 0.5, "l6": 0.5}  # gold.sample_weights' class balance, per variant
OWN_BASELINE = ("l6",)  # variants with another student: their teacher-alone student is that student too


def _scores(y: list[str], probs: np.ndarray, names) -> dict:
    return classification_scores(y, [names[j] for j in probs.argmax(axis=1)], names)


def draw(gold: list[str], names, per: int, seed: int) -> np.ndarray:
    """Indices of ``per`` texts of each class (fewer where there are fewer), seeded."""
    rng = np.random.default_rng(seed)
    y = np.array(gold)
    return np.concatenate([rng.permutation(np.flatnonzero(y == name))[:per] for name in names])


def train_student(texts_or_pool, probs, names, seed: int, threads: int, variant: str = "default"):
    from llkd_edge.student.pool import Pool
    from llkd_edge.student.train import build_student, predict_proba, train

    pool = texts_or_pool if isinstance(texts_or_pool, Pool) else Pool(texts_or_pool, probs)
    config = TrainConfig(seed=seed, threads=threads, **{**STUDENT, **VARIANTS[variant]})
    student = build_student(config.student, names, seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llkd-gold-") as tmp:
        train(student, pool, config, Path(tmp), progress=False)
    return student, time.perf_counter() - started, lambda texts: predict_proba(student, texts, config.max_length)


def run(work: Path, threads: int, sizes: tuple[int, ...], store: str, variant: str = "default",
        datasets: tuple[str, ...] = DATASETS, seeds: tuple[int, ...] = SEEDS) -> dict:
    from tqdm.auto import tqdm

    from llkd_edge.labels.gold import Probe  # noqa: F401  (sklearn present before an hour of work)
    from llkd_edge.teacher.encoder import embed

    cells: dict[str, dict] = {}
    (work / "cells").mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(datasets) * len(seeds) * (1 + len(sizes)), unit="cell", desc="gold", dynamic_ncols=True)
    for dataset in datasets:
        split = labelled_split(DEFAULT_TEACHER, dataset, PLAN, PLAN.pool, store)
        names = split.labels.names
        prior = pool_prior([r.probs for r in split.pool.rows])
        pool_probs = np.array([r.probs for r in recalibrated(split.pool.rows, names, prior)])
        test_probs = np.array([r.probs for r in recalibrated(split.test.rows, names, prior)])
        test_x = None
        for per in (0, *sizes):
            for seed in seeds:
                own = per == 0 and variant in OWN_BASELINE
                tag = "" if variant == "default" or (per == 0 and not own) else f"__{variant}"
                path = work / "cells" / f"{dataset}__gold{per}__s{seed}{tag}.json"
                if path.exists():
                    cells[path.name] = read_json(path)
                    bar.update(1)
                    continue
                bar.set_description(f"{dataset} gold {per}/class seed {seed}")
                if per == 0:  # the student from the teacher alone
                    _, seconds, predict = train_student(split.pool.texts, pool_probs, names, seed, threads,
                                                        variant if own else "default")
                    cell = {"student": _scores(split.test.gold, predict(split.test.texts), names),
                            "train_seconds": round(seconds, 1)}
                else:
                    chosen = draw(split.pool.gold, names, per, seed)
                    rest = np.setdiff1d(np.arange(len(split.pool.texts)), chosen)
                    gold = Dataset(f"{dataset}:gold", [split.pool.texts[i] for i in chosen],
                                   [split.pool.gold[i] for i in chosen])
                    started = time.perf_counter()
                    pool, judgement = learn_from_gold([split.pool.texts[i] for i in rest], pool_probs[rest], gold,
                                                      pool_probs[chosen], names, seed,
                                                      balance=BALANCE.get(variant, 0.0))  # 0: as first measured
                    gold_seconds = time.perf_counter() - started
                    _, seconds, predict = train_student(pool, None, names, seed, threads, variant)
                    if test_x is None:
                        test_x = embed(split.test.texts)
                    cell = {"student": _scores(split.test.gold, predict(split.test.texts), names),
                            "gold_only": _scores(split.test.gold, judgement.probe.predict(test_x), names),
                            "taught_labels": _scores(split.test.gold, judgement.labels_for(test_probs, test_x), names),
                            "pool_label_accuracy": float(np.mean([names[j] == split.pool.gold[i] for i, j in
                                                                  zip(rest, pool.probs[: len(rest)].argmax(1))])),
                            "judgement": judgement.record(), "gold_seconds": round(gold_seconds, 1),
                            "train_seconds": round(seconds, 1), "gold_texts": len(chosen)}
                cell.update(dataset=dataset, per_class=per, seed=seed,
                            variant=variant if per or own else "default",
                            teacher=_scores(split.test.gold, test_probs, names))
                write_json(path, cell)
                cells[path.name] = cell
                bar.update(1)
    bar.close()
    return {"cells": sorted(cells.values(), key=lambda c: (c["dataset"], c["per_class"], c["seed"]))}


def summary(cells: list[dict]) -> list[dict]:
    rows = []
    for dataset in DATASETS:
        alone = [c for c in cells if c["dataset"] == dataset and c["per_class"] == 0]
        for per in sorted({c["per_class"] for c in cells if c["dataset"] == dataset and c["per_class"]}):
            mixed = [c for c in cells if c["dataset"] == dataset and c["per_class"] == per]
            row = {"dataset": dataset, "per_class": per, "seeds": len(mixed),
                   "teacher": mean_std([c["teacher"]["macro_f1"] for c in mixed]),
                   "student_teacher_alone": mean_std([c["student"]["macro_f1"] for c in alone]),
                   "gold_only": mean_std([c["gold_only"]["macro_f1"] for c in mixed]),
                   "taught_labels": mean_std([c["taught_labels"]["macro_f1"] for c in mixed]),
                   "student_combined": mean_std([c["student"]["macro_f1"] for c in mixed]),
                   "chosen": sorted({c["judgement"]["chosen"] for c in mixed}),
                   "teacher_named_below": sum(c["judgement"]["teacher_below_gold_only"] for c in mixed),
                   "gold_seconds": mean_std([c["gold_seconds"] for c in mixed]),
                   "train_seconds": mean_std([c["train_seconds"] for c in mixed])}
            best_other = max(row["student_teacher_alone"]["mean"], row["gold_only"]["mean"])
            row["combined_minus_best_other"] = round(row["student_combined"]["mean"] - best_other, 4)
            row["seeds_beating_both"] = sum(
                c["student"]["macro_f1"] > max(c["gold_only"]["macro_f1"], a["student"]["macro_f1"])
                for c in mixed for a in alone if a["seed"] == c["seed"])
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    def pm(s):
        return f"{s['mean']:.3f} ± {s['std']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}"

    return markdown_table(
        ["dataset", "gold/class", "teacher", "student (teacher alone)", "gold-only probe", "labels taught",
         "student (teacher + gold)", "vs best other", "seeds beating both", "chosen source", "s: gold step / train"],
        [[r["dataset"], r["per_class"], pm(r["teacher"]), pm(r["student_teacher_alone"]), pm(r["gold_only"]),
          pm(r["taught_labels"]), pm(r["student_combined"]), f"{r['combined_minus_best_other']:+.3f}",
          f"{r['seeds_beating_both']}/{r['seeds']}", ", ".join(r["chosen"]),
          f"{r['gold_seconds']['mean']:.0f} / {r['train_seconds']['mean']:.0f}"] for r in rows])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]  # those run: no empty panels
    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3.4), sharey=False, squeeze=False)
    axes = axes[0]
    for ax, dataset in zip(axes, datasets):
        mine = sorted((r for r in rows if r["dataset"] == dataset), key=lambda r: r["per_class"])
        x = [r["per_class"] for r in mine]
        for key, label, style in (("student_combined", "student, teacher + gold", "o-"),
                                  ("gold_only", "gold-only probe", "s--"),
                                  ("student_teacher_alone", "student, teacher alone", ":"),
                                  ("teacher", "teacher", "-.")):
            ax.errorbar(x, [r[key]["mean"] for r in mine], yerr=[r[key]["std"] for r in mine], fmt=style,
                        label=label, capsize=3)
        ax.set_title(dataset)
        ax.set_xlabel("gold texts per class")
        ax.set_xticks(x)
    axes[0].set_ylabel("macro-F1 (test)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_plot(fig, path)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--per-class", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--work", default="runs/gold")
    parser.add_argument("--store", default="runs/study/labels.sqlite")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="default",
                        help="how the student taught by teacher + gold trains (cells kept apart per variant)")
    parser.add_argument("--out", default=None, help="default: bench/results/gold.json, gold-VARIANT.json for others")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    args = parser.parse_args()
    started = time.perf_counter()
    report = run(Path(args.work), args.threads, tuple(args.per_class), args.store, args.variant, tuple(args.datasets),
                 tuple(args.seeds))
    rows = summary(report["cells"])
    report.update(record(args.threads, "torch", "transformers", "scikit-learn"), summary=rows,
                  student=STUDENT, variant={args.variant: VARIANTS[args.variant]},
                  seconds=round(time.perf_counter() - started, 1))
    out = Path(args.out or RESULTS / ("gold.json" if args.variant == "default" else f"gold-{args.variant}.json"))
    write_report(out, report, markdown(rows))
    plot(rows, out.with_suffix(".png"))
    print(markdown(rows))


if __name__ == "__main__":
    main()
