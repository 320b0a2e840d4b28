"""Fewer teacher calls (`distill --label-budget`): the student taught on the share of the pool that active
rounds pick, against random rounds of the same size and against the whole pool labelled.

    python -m bench.active                       # 3 datasets x 3 budgets x 2 strategies x 3 seeds; resumes
    python -m bench.active --datasets bbc-news --seeds 0
    python -m bench.active --strategies active coverage random --fill none probe --report-only
                                                 # the table and plot of every cell run so far
    python -m bench.active --student minilm-l3 --max-length 128 --pool 4000 --epochs 1 --fill tempered \
        --datasets 20newsgroups                  # issue 18's large pools (bench/llkd_rules.py's regime and
                                                 # labels; its floor100 cells are the full-pool points)

`--fill probe` cells train the student on the picks plus the rest of the pool labelled by the rounds' probe,
as distill does by default (`--fill-rest`); `none` on the picks alone (`--no-fill-rest`).

Data and student as in bench/study.py and bench/calibration.py: the study's 1000-text pools with their
stored teacher labels (gemma3-270m), so a round "asks" the store, not the teacher; the first 500 test texts;
`minilm-l2` at 64 tokens, 4 epochs, LLKD, the study's tuned learning rate, labels batch-calibrated over the
texts labelled (as distill reads them). The full-pool point is calibration.py's `batch` / `llkd` cell, reused.
The rounds are `active.run_rounds` itself, with the step distill uses by default (5% of the pool).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import RESULTS, markdown_table, record, save_plot, write_report
from bench.study import (DEFAULT_TEACHER, FULL, Cells, labelled_split, mean_std, pool_arguments, pool_embeddings,
                         run_cell)
from llkd_edge.labels.active import budget_count, fill_rest, run_rounds
from llkd_edge.config import STRATEGIES
from llkd_edge.config import LabelBudget
from llkd_edge.distributions import pool_prior
from llkd_edge.files import read_json, write_json
from llkd_edge.labels.labelling import Labelled, recalibrated
from llkd_edge.metrics import classification_scores

DATASETS = ("bbc-news", "reuters-r8", "20newsgroups")
BUDGETS = (0.1, 0.2, 0.4)
PLAN = replace(FULL, pool_calibration="batch")
STUDY = RESULTS / "study" / "study.json"
COLOURS = {"active": "tab:blue", "balanced": "tab:brown", "confident": "tab:purple", "coverage": "tab:green",
           "random": "tab:orange"}
MARKERS = {"active": "o", "balanced": "v", "confident": "D", "coverage": "^", "random": "s"}
FILLS = {"none": ("", ""), "probe": ("__fill", "+fill"), "tempered": ("__filltempered", "+fill-tempered")}


def subset(split, picked: np.ndarray, x: np.ndarray | None = None, temper: bool = False):
    """``split`` with its pool cut to ``picked`` (in pick order), the rows batch-calibrated over those; with the
    pool's embeddings ``x``, the rest follows, each text with the distribution of the probe fitted on the picks
    (``active.fill_rest``, ``--fill-rest``)."""
    rows = [split.pool.rows[i] for i in picked]
    rows = recalibrated(rows, split.labels.names, pool_prior([r.probs for r in rows]))
    order = list(picked)
    if x is not None:
        rest, probs = fill_rest(x, picked, np.array([split.pool.rows[i].probs for i in picked]), temper)
        names = split.labels.names
        rows += [replace(split.pool.rows[i], probs=tuple(map(float, p)), label=names[int(p.argmax())],
                         confidence=float(p.max())) for i, p in zip(rest, probs)]
        order += rest.tolist()
    pool = Labelled([split.pool.texts[i] for i in order], rows, [split.pool.gold[i] for i in order],
                    len(order), 0, len(order), 0, 0, 0.0)
    return replace(split, pool=pool)


def probe_scores(x, test_x, split, picked: np.ndarray, rows) -> dict:
    """The probe the rounds use, fitted on the picked texts' calibrated labels, scored on the test texts."""
    from llkd_edge.labels.gold import Probe

    names = split.labels.names
    y = np.array([names.index(r.label) for r in rows])
    p = Probe.fit(x[picked], y, len(names)).predict(test_x)
    return classification_scores(split.test.gold, [names[j] for j in p.argmax(1)], names)


def large_plan(student: str, max_length: int, pool: int, epochs: int):
    """Issue 18's large-pool regime: bench/llkd_rules.py's plan for the same student and pool, with distill's
    default rule (floor100), so its `floor100` cells are this bench's full-pool points; None for the study's."""
    if (student, max_length, pool, epochs) == (PLAN.student, PLAN.max_length, PLAN.pool, PLAN.epochs):
        return None
    return replace(PLAN, student=student, max_length=max_length, pool=pool, epochs=epochs,
                   train=(("llkd_floor", 1.0),))


def run(work: Path, threads: int, datasets, seeds, store: str, budgets=BUDGETS, strategies=("active", "random"),
        fills=("none",), report_only: bool = False, large=None) -> list[dict]:
    """The cells (read back when run before, else run now); ``report_only``: those run before alone. ``large``:
    a plan from ``large_plan`` (its student at its registered learning rate; cell names carry the regime)."""
    from tqdm.auto import tqdm

    plan = large or PLAN
    if large:
        from llkd_edge.registry import registry

        rate = registry("students")[plan.student]["learning_rate"]
        tuned = {d: rate for d in datasets}
        regime = f"__{plan.student}_n{plan.pool}_e{plan.epochs}"
    else:
        tuned, regime = read_json(STUDY)["tuned_learning_rate"], ""
    (work / "cells").mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(datasets) * len(seeds) * (1 + len(budgets) * len(strategies) * len(fills)), unit="cell", desc="active")
    cells = []
    for dataset in datasets:
        split = labelled_split(DEFAULT_TEACHER, dataset, plan, plan.pool, store)
        names, n, lr = split.labels.names, len(split.pool.texts), tuned[dataset]
        x, test_x = pool_embeddings(dataset, split, work)
        raw = np.array([r.probs for r in split.pool.rows])
        step = max(2 * len(names), round(LabelBudget(1.0).step * n))
        # calibration.py's cells (llkd_rules.py's floor100 ones for a large plan): no training if there
        full = Cells(Path("runs/llkd_rules/cells" if large else "runs/study/cells"), plan, threads, bar)
        prior = pool_prior(raw)
        whole = replace(split, pool=replace(split.pool, rows=recalibrated(split.pool.rows, names, prior)),
                        test=replace(split.test, rows=recalibrated(split.test.rows, names, prior)))
        for seed in seeds:
            cell = full.get(whole, n, "llkd", seed, lr)
            cells.append({"dataset": dataset, "strategy": "full", "budget": 1.0, "seed": seed, "teacher_calls": n,
                          "test": cell["test"], "train_seconds": cell["train_seconds"],
                          "probe": probe_scores(x, test_x, split, np.arange(n), whole.pool.rows)})
            for budget, strategy, fill in ((b, s, f) for b in budgets for s in strategies for f in fills):
                tail = FILLS[fill][0]
                path = work / "cells" / f"{dataset}__{strategy}__b{budget:g}__s{seed}{tail}{regime}.json"
                if path.exists() or report_only:
                    cells.extend([read_json(path)] if path.exists() else [])
                    bar.update(1)
                    continue
                bar.set_description(f"{dataset} {strategy} {budget:.0%} seed {seed}")
                started = time.perf_counter()
                picked, _, select = run_rounds(x, budget_count(budget, n), step, strategy, seed, lambda i: raw[i])
                select_seconds = time.perf_counter() - started
                sub = subset(split, picked, x if fill != "none" else None, fill == "tempered")
                got = run_cell(sub, plan, len(sub.pool.texts), "llkd", seed, lr, plan.epochs, threads)
                gold = np.array(sub.pool.gold)
                m = len(picked)
                out = {"dataset": dataset, "strategy": strategy + FILLS[fill][1], "budget": budget,
                       "seed": seed, "filled": len(gold) - m,
                       "filled_labels_right": float(np.mean([r.label == g for r, g in zip(sub.pool.rows[m:], gold[m:])]))
                       if fill != "none" and len(gold) > m else None,
                       "teacher_calls": len(picked), "rounds": len(select), "select_seconds": round(select_seconds, 2),
                       "test": got["test"], "train_seconds": got["train_seconds"],
                       "probe": probe_scores(x, test_x, split, picked, sub.pool.rows[:m]),
                       "label_accuracy": float(np.mean([r.label == g for r, g in zip(sub.pool.rows[:m], gold[:m])])),
                       "gold_classes_covered": int(len(set(gold[:m].tolist())))}
                write_json(path, out)
                cells.append(out)
                bar.update(1)
    bar.close()
    return cells


def summary(cells: list[dict]) -> list[dict]:
    rows = []
    for key in sorted({(c["dataset"], c["strategy"], c["budget"]) for c in cells}, key=lambda k: (k[0], k[2], k[1])):
        got = [c for c in cells if (c["dataset"], c["strategy"], c["budget"]) == key]
        rows.append({"dataset": key[0], "strategy": key[1], "budget": key[2], "seeds": len(got),
                     "teacher_calls": got[0]["teacher_calls"],
                     "macro_f1": mean_std([c["test"]["macro_f1"] for c in got]),
                     "per_seed": [round(c["test"]["macro_f1"], 3) for c in got],
                     "probe_macro_f1": mean_std([c["probe"]["macro_f1"] for c in got]),
                     "label_accuracy": mean_std([c["label_accuracy"] for c in got]) if "label_accuracy" in got[0] else None,
                     "train_seconds": mean_std([c["train_seconds"] for c in got]),
                     "select_seconds": mean_std([c.get("select_seconds", 0.0) for c in got])})
    return rows


def markdown(rows: list[dict]) -> str:
    def pm(s):
        return f"{s['mean']:.3f} ± {s['std']:.3f}"

    return markdown_table(
        ["dataset", "teacher calls (share)", "strategy", "student macro-F1", "per seed", "probe macro-F1",
         "labels right", "train s", "select s"],
        [[r["dataset"], f"{r['teacher_calls']} ({r['budget']:.0%})", r["strategy"], pm(r["macro_f1"]),
          ", ".join(map(str, r["per_seed"])), pm(r["probe_macro_f1"]),
          f"{r['label_accuracy']['mean']:.3f}" if r["label_accuracy"] else "-",
          f"{r['train_seconds']['mean']:.0f}", f"{r['select_seconds']['mean']:.1f}"] for r in rows])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        full = [r for r in rows if r["dataset"] == dataset and r["strategy"] == "full"]
        strategies = sorted({r["strategy"] for r in rows if r["dataset"] == dataset} - {"full"})
        for strategy in strategies:  # a colour per strategy; solid: fill, dotted: tempered fill, dashed: none
            got = sorted([r for r in rows if r["dataset"] == dataset and r["strategy"] == strategy] + full,
                         key=lambda r: r["budget"])
            base, _, fill = strategy.partition("+")
            ax.errorbar([r["budget"] * 100 for r in got], [r["macro_f1"]["mean"] for r in got],
                        yerr=[r["macro_f1"]["std"] for r in got], fmt=MARKERS.get(base, "o") + (
                            {"fill": "-", "fill-tempered": ":"}.get(fill, "--")), color=COLOURS.get(base), capsize=3,
                        label=strategy, alpha=0.9)
        ax.set_title(dataset)
        ax.set_xlabel("teacher calls, % of the pool")
        ax.set_ylabel("student macro-F1 (test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_plot(fig, path)


def main() -> None:
    parser = pool_arguments(__doc__, "active", DATASETS)
    parser.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=["active", "random"])
    parser.add_argument("--report-only", action="store_true", help="only the cells already run (the full-pool "
                        "point excepted); train nothing else")
    parser.add_argument("--fill", nargs="+", choices=tuple(FILLS), default=["none"],
                        help="probe: the student also learns the rest, labelled by the probe (distill --fill-rest); "
                        "tempered: the probe's distributions no more confident on average than the teacher's")
    parser.add_argument("--student", default=PLAN.student)
    parser.add_argument("--max-length", type=int, default=PLAN.max_length)
    parser.add_argument("--pool", type=int, default=PLAN.pool, help="pool texts after the validation slice")
    parser.add_argument("--epochs", type=int, default=PLAN.epochs)
    args = parser.parse_args()
    large = large_plan(args.student, args.max_length, args.pool, args.epochs)
    plan = large or PLAN
    if large and args.out == parser.get_default("out"):
        args.out = str(Path(args.out).with_name(f"active_{plan.student}_n{plan.pool}_e{plan.epochs}.json"))
    started = time.perf_counter()
    cells = run(Path(args.work), args.threads, tuple(args.datasets), tuple(args.seeds), args.store,
                tuple(args.budgets), tuple(args.strategies), tuple(args.fill),
                args.report_only, large)
    rows = summary(cells)
    report = {**record(args.threads, "torch", "scikit-learn"), "cells": cells, "summary": rows,
              "student": {"name": plan.student, "max_length": plan.max_length, "epochs": plan.epochs},
              "pool": plan.pool, "selection": "llkd, floor100" if large else "llkd, the paper's rule",
              "budgets": args.budgets, "seconds": round(time.perf_counter() - started, 1)}
    out = Path(args.out)
    write_report(out, report, markdown(rows))
    plot(rows, out.with_suffix(".png"))
    print(markdown(rows))


if __name__ == "__main__":
    main()
