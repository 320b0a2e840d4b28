"""Ablation: does it matter whether LLKD reads the student's need with dropout on or off?

    python -m bench.need_ablation            # 3 datasets x 3 seeds x 2 ways, the study's settings
    python -m bench.need_ablation --quick    # bbc-news, 1 seed, small pool: a few minutes

The student's need (normalised entropy of its prediction) decides which samples LLKD keeps. ``train`` reads
it from the training forward pass, where dropout is on (free, but noisy); ``eval`` from an extra no-grad pass
in eval mode (deterministic, about a third more compute). Both train the same student on the same teacher
labels with the same seeds and learning rate (the study's tuned rate per dataset, from
bench/results/study/study.json), so the only difference is the need signal. Cells and labels are shared with
the study (runs/study): a re-run, or a run after the study, recomputes nothing it has.
Writes bench/results/need_ablation.json and prints a Markdown table.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.common import arguments, record, write_report
from bench.study import DEFAULT_TEACHER, FULL, QUICK, Cells, labelled_split, mean_std
from llkd_edge.files import read_json

HERE = Path(__file__).parent
STUDY = HERE / "results" / "study" / "study.json"


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", default=None, help="cells and label store (default: the study's)")
    parser.add_argument("--out", default=None, help="default bench/results/need_ablation.json (--quick: WORK/...)")
    args = parser.parse_args()
    from tqdm.auto import tqdm

    base = QUICK if args.quick else FULL
    work = Path(args.work or ("runs/study-quick" if args.quick else "runs/study"))
    store = str(work / "labels.sqlite")
    tuned = read_json(STUDY)["tuned_learning_rate"] if STUDY.exists() else {}
    started = time.perf_counter()
    bar = tqdm(total=len(base.datasets) * len(base.seeds) * 2, unit="cell", desc="need ablation")
    rows = []
    for dataset in base.datasets:
        split = labelled_split(DEFAULT_TEACHER, dataset, base, base.pool, store)
        lr = tuned.get(dataset, base.learning_rates[-1])
        for need in ("train", "eval"):
            plan = replace(base, need_pass=need)
            cells = Cells(work / "cells", plan, args.threads, bar)
            got = [cells.get(split, plan.pool, "llkd", seed, lr) for seed in plan.seeds]
            rows.append({"dataset": dataset, "need_pass": need, "learning_rate": lr, "seeds": list(plan.seeds),
                         "macro_f1": mean_std([c["test"]["macro_f1"] for c in got]),
                         "accuracy": mean_std([c["test"]["accuracy"] for c in got]),
                         "per_seed_macro_f1": [round(c["test"]["macro_f1"], 4) for c in got],
                         "fraction_used": mean_std([c["fraction_used"] for c in got]),
                         "train_seconds": mean_std([c["train_seconds"] for c in got]),
                         "need_seconds": mean_std([c.get("need_seconds", 0.0) for c in got]),
                         })
    bar.close()
    lines = ["| dataset | need read in | test macro-F1 | per seed | accuracy | pool used | train s/cell | of which need pass |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, a, u, t, n = (r[k] for k in ("macro_f1", "accuracy", "fraction_used", "train_seconds", "need_seconds"))
        lines.append(f"| {r['dataset']} | {r['need_pass']} | {f['mean']:.3f} ± {f['std']:.3f} | "
                     f"{', '.join(f'{x:.3f}' for x in r['per_seed_macro_f1'])} | {a['mean']:.3f} | {u['mean']:.1%} | "
                     f"{t['mean']:.0f} | {n['mean']:.0f} |")
    table = "\n".join(lines)
    print(table)
    report = {**record(args.threads, "scikit-learn"), "plan": {"datasets": base.datasets, "pool": base.pool,
              "test": base.test, "seeds": base.seeds, "student": base.student, "epochs": base.epochs,
              "max_length": base.max_length, "batch_size": base.batch_size},
              "rows": rows, "table": table, "seconds": round(time.perf_counter() - started, 1)}
    out = Path(args.out or (work / "need_ablation.json" if args.quick else HERE / "results" / "need_ablation.json"))
    write_report(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
