"""Pool calibration: the teacher's labels as stored (contextual calibration) and with the pool's mean
distribution divided out (batch calibration), or with the pool's class prior estimated by EM (Saerens et al.,
2002) put back after it, on every built-in dataset; and what students learn from the first two.

    python -m bench.calibration                 # teacher table on 4 datasets, students (llkd, all) x 3 seeds on 3
    python -m bench.calibration --teacher-only  # the teacher table alone: no training, seconds once labelled

The prior is always estimated on the pool (the study's 1000 train texts after its validation slice) and
applied to the test texts: no gold label is used to fit it. Labels and cells come from (and go to) the
study's store and cells (runs/study), so texts labelled there are not labelled again.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import RESULTS, arguments, markdown_table, record, write_report
from bench.study import DEFAULT_TEACHER, FULL, Cells, labelled_split, mean_std
from llkd_edge.distributions import pool_divisor, pool_prior
from llkd_edge.files import read_json
from llkd_edge.labels.labelling import gold_scores, recalibrated

TEACHER_DATASETS = ("bbc-news", "reuters-r8", "20newsgroups", "election-tweets")
STUDENT_DATASETS = ("bbc-news", "reuters-r8", "20newsgroups")
METHODS = ("llkd", "all")
STUDY = RESULTS / "study" / "study.json"


def calibrated_split(split, prior):
    labels = split.labels.names
    return replace(split, pool=replace(split.pool, rows=recalibrated(split.pool.rows, labels, prior)),
                   test=replace(split.test, rows=recalibrated(split.test.rows, labels, prior)))


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--teacher-only", action="store_true")
    parser.add_argument("--work", default="runs/study", help="label store and cells (default: the study's)")
    parser.add_argument("--out", default=str(RESULTS / "calibration.json"))
    args = parser.parse_args()
    from tqdm.auto import tqdm

    work = Path(args.work)
    store = str(work / "labels.sqlite")
    plan = replace(FULL, datasets=TEACHER_DATASETS)
    tuned = read_json(STUDY)["tuned_learning_rate"] if STUDY.exists() else {}
    started = time.perf_counter()
    teacher_rows, student_rows = [], []
    splits = {}
    for dataset in TEACHER_DATASETS:
        split = labelled_split(DEFAULT_TEACHER, dataset, plan, plan.pool, store)
        prior = pool_prior([r.probs for r in split.pool.rows])
        splits[dataset] = (split, calibrated_split(split, prior))
        em = calibrated_split(split, pool_divisor(np.array([r.probs for r in split.pool.rows]), "em"))
        for name, part in (("contextual (as stored)", split), ("contextual + batch", splits[dataset][1]),
                           ("contextual + EM prior", em)):
            test, pool = gold_scores(part.test, split.labels.names), gold_scores(part.pool, split.labels.names)
            predicted = {r.label for r in part.test.rows}
            teacher_rows.append({"dataset": dataset, "calibration": name, "test": test, "pool": pool,
                                 "labels_predicted": len(predicted), "labels": len(split.labels.names),
                                 "prior": [round(float(p), 4) for p in prior]})
    if not args.teacher_only:
        bar = tqdm(total=len(STUDENT_DATASETS) * 2 * len(METHODS) * len(plan.seeds), unit="cell", desc="students")
        for dataset in STUDENT_DATASETS:
            lr = tuned.get(dataset, plan.learning_rates[-1])
            for cal, split in zip(("none", "batch"), splits[dataset]):
                cells = Cells(work / "cells", replace(plan, pool_calibration=cal), args.threads, bar)
                for method in METHODS:
                    got = [cells.get(split, plan.pool, method, seed, lr) for seed in plan.seeds]
                    student_rows.append({"dataset": dataset, "pool_calibration": cal, "method": method,
                                         "learning_rate": lr, "seeds": list(plan.seeds),
                                         "macro_f1": mean_std([c["test"]["macro_f1"] for c in got]),
                                         "accuracy": mean_std([c["test"]["accuracy"] for c in got]),
                                         "per_seed_macro_f1": [round(c["test"]["macro_f1"], 4) for c in got],
                                         "fraction_used": mean_std([c["fraction_used"] for c in got])})
        bar.close()
    table = markdown(teacher_rows, student_rows)
    print(table)
    report = {**record(args.threads, "scikit-learn"), "plan": {"pool": plan.pool, "test": plan.test, "val": plan.val,
              "seeds": plan.seeds, "student": plan.student, "epochs": plan.epochs, "max_length": plan.max_length},
              "teacher": teacher_rows, "students": student_rows, "seconds": round(time.perf_counter() - started, 1)}
    write_report(Path(args.out), report, table)
    print(f"wrote {args.out}")
    return 0


def markdown(teacher_rows: list[dict], student_rows: list[dict]) -> str:
    lines = ["Teacher (gemma3-270m, zero-shot) on the first 500 test texts; prior fitted on the 1000-text pool.", "",
             markdown_table(["dataset", "calibration", "test accuracy", "test macro-F1", "labels predicted",
                             "pool pseudo-label accuracy"],
                            [[r["dataset"], r["calibration"], f"{r['test']['accuracy']:.3f}", f"{r['test']['macro_f1']:.3f}",
                              f"{r['labels_predicted']} of {r['labels']}", f"{r['pool']['accuracy']:.3f}" if r["pool"] else "-"]
                             for r in teacher_rows])]
    if student_rows:
        lines += ["", "Students (minilm-l2, 4 epochs, 64 tokens, the study's learning rates), test macro-F1 over seeds.", "",
                  markdown_table(["dataset", "pool calibration", "method", "test macro-F1", "per seed", "accuracy",
                                  "pool used"],
                                 [[r["dataset"], r["pool_calibration"], r["method"],
                                   f"{r['macro_f1']['mean']:.3f} ± {r['macro_f1']['std']:.3f}",
                                   ", ".join(f"{x:.3f}" for x in r["per_seed_macro_f1"]),
                                   f"{r['accuracy']['mean']:.3f}", f"{r['fraction_used']['mean']:.1%}"]
                                  for r in student_rows])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
