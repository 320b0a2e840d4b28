"""The teacher's labels checked by a cross-fitted probe (`distill --relabel probe`, relabel.py): how many of
the pool's labels are right, the teacher on the test texts, and the students taught by each.

    python -m bench.relabel                                # 4 datasets; students on 3 of them x 3 seeds; resumes
    python -m bench.relabel --datasets bbc-news --seeds 0

Data and students as in bench/calibration.py (the study's 1000-text pools and stored gemma3-270m labels,
the first 500 test texts, `minilm-l2` at 64 tokens, 4 epochs, LLKD, the study's tuned learning rates),
labels batch-calibrated. The `batch` students are calibration.py's cells, reused. Embeddings: the packaged
MiniLM-L6, mean-pooled, 128 tokens (as distill makes them), cached in runs/active/DATASET_pPOOL_tTEST.npz.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import RESULTS, markdown_table, record, write_report
from bench.study import (DEFAULT_TEACHER, FULL, Cells, labelled_split, mean_std, pool_arguments, pool_embeddings,
                         run_cell)
from llkd_edge.distributions import pool_prior
from llkd_edge.files import read_json, write_json
from llkd_edge.labels.gold import Probe
from llkd_edge.labels.labelling import recalibrated, with_probs
from llkd_edge.metrics import classification_scores
from llkd_edge.student.relabel import PROBE_C, cross_fitted, relabelled

DATASETS = ("bbc-news", "reuters-r8", "20newsgroups", "election-tweets")
STUDENT_DATASETS = ("bbc-news", "reuters-r8", "20newsgroups")
PLAN = replace(FULL, pool_calibration="batch")
STUDY = RESULTS / "study" / "study.json"


def run(work: Path, threads: int, datasets, seeds, store: str) -> dict:
    from tqdm.auto import tqdm

    tuned = read_json(STUDY)["tuned_learning_rate"]
    bar = tqdm(total=sum(2 * len(seeds) for d in datasets if d in STUDENT_DATASETS), unit="cell", desc="relabel")
    labels, students = [], []
    (work / "cells").mkdir(parents=True, exist_ok=True)
    for dataset in datasets:
        split = labelled_split(DEFAULT_TEACHER, dataset, PLAN, PLAN.pool, store)
        names = split.labels.names
        x, test_x = pool_embeddings(dataset, split)  # the cache bench/active.py fills
        prior = pool_prior([r.probs for r in split.pool.rows])
        pool_rows, test_rows = recalibrated(split.pool.rows, names, prior), recalibrated(split.test.rows, names, prior)
        teacher = np.array([r.probs for r in pool_rows])
        test_teacher = np.array([r.probs for r in test_rows])
        started = time.perf_counter()
        oof = cross_fitted(x, teacher.argmax(1), len(names), seed=0)
        product = relabelled(teacher, x, seed=0)
        seconds = time.perf_counter() - started
        probe = Probe.fit(x, teacher.argmax(1), len(names), PROBE_C).predict(test_x)  # all pool labels: test texts
        test_product = test_teacher * np.clip(probe, 1e-6, 1)
        gold = np.array([names.index(g) for g in split.pool.gold])

        def test_f1(p):
            return classification_scores(split.test.gold, [names[j] for j in p.argmax(1)], names)["macro_f1"]

        labels.append({"dataset": dataset, "relabel_seconds": round(seconds, 2),
                       **{f"pool_accuracy_{name}": float(np.mean(p.argmax(1) == gold))
                          for name, p in (("teacher", teacher), ("probe", oof), ("product", product))},
                       "changed": float(np.mean(product.argmax(1) != teacher.argmax(1))),
                       **{f"test_macro_f1_{name}": test_f1(p)
                          for name, p in (("teacher", test_teacher), ("probe", probe), ("product", test_product))}})
        if dataset not in STUDENT_DATASETS:
            continue
        lr = tuned[dataset]
        whole = replace(split, pool=replace(split.pool, rows=pool_rows), test=replace(split.test, rows=test_rows))
        fixed = replace(whole, pool=replace(whole.pool, rows=with_probs(split.pool.rows, product, names)))
        reused = Cells(Path("runs/study/cells"), PLAN, threads, bar)
        for seed in seeds:
            base = reused.get(whole, len(whole.pool.texts), "llkd", seed, lr)
            path = work / "cells" / f"{dataset}__probe__s{seed}.json"
            if path.exists():
                cell = read_json(path)
            else:
                bar.set_description(f"{dataset} relabelled seed {seed}")
                cell = run_cell(fixed, PLAN, len(fixed.pool.texts), "llkd", seed, lr, PLAN.epochs, threads)
                write_json(path, cell)
            bar.update(1)
            students += [{"dataset": dataset, "labels": "teacher (batch)", "seed": seed, "test": base["test"]},
                         {"dataset": dataset, "labels": "teacher x probe", "seed": seed, "test": cell["test"]}]
    bar.close()
    return {"labels": labels, "students": students}


def markdown(report: dict) -> str:
    lines = ["Labels on the 1000-text pool (accuracy against its gold labels) and on the first 500 test texts "
             "(macro-F1); probe = cross-fitted on the pool, fitted on all of it for the test texts.", "",
             markdown_table(["dataset", "pool: teacher", "pool: probe", "pool: teacher x probe", "labels changed",
                             "test: teacher", "test: probe", "test: teacher x probe", "seconds"],
                            [[r["dataset"], f"{r['pool_accuracy_teacher']:.3f}", f"{r['pool_accuracy_probe']:.3f}",
                              f"{r['pool_accuracy_product']:.3f}", f"{r['changed']:.1%}",
                              f"{r['test_macro_f1_teacher']:.3f}", f"{r['test_macro_f1_probe']:.3f}",
                              f"{r['test_macro_f1_product']:.3f}", f"{r['relabel_seconds']:.1f}"]
                             for r in report["labels"]]), ""]
    rows = []
    for dataset in dict.fromkeys(s["dataset"] for s in report["students"]):
        for kind in ("teacher (batch)", "teacher x probe"):
            got = [s["test"]["macro_f1"] for s in report["students"] if (s["dataset"], s["labels"]) == (dataset, kind)]
            m = mean_std(got)
            rows.append([dataset, kind, f"{m['mean']:.3f} ± {m['std']:.3f}", ", ".join(f"{v:.3f}" for v in got)])
    lines += ["Students (minilm-l2, LLKD, 4 epochs, 64 tokens), test macro-F1 over seeds.", "",
              markdown_table(["dataset", "taught with", "student macro-F1", "per seed"], rows)]
    return "\n".join(lines)


def main() -> None:
    args = pool_arguments(__doc__, "relabel", DATASETS).parse_args()
    started = time.perf_counter()
    report = run(Path(args.work), args.threads, tuple(args.datasets), tuple(args.seeds), args.store)
    report.update(record(args.threads, "torch", "scikit-learn"), probe_c=PROBE_C,
                  seconds=round(time.perf_counter() - started, 1))
    write_report(Path(args.out), report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
