"""How to combine the teacher with a few gold labels: the candidates gold.py chose among, without students.

    python -m bench.gold_combiners        # ~3 min once the study's teacher labels are stored

Same data and gold draws as bench/gold.py (pool: train texts 200-1200, test: the first 500 test texts,
gold drawn from the pool, 3 seeds x 4/8/16 per class). Each label source is scored on the test texts by
macro-F1: the teacher (batch calibrated), the gold-only probe, and three ways of combining the two fitted
on the gold texts with the probe's out-of-fold distributions: a stacked logistic regression over both
log-distributions, the product of experts p ∝ teacher^a probe^b (gold.Product, what distill uses), and
the product with a bias per class (L2 0.1, 1 and 10).
"""

from __future__ import annotations

import numpy as np

from bench.common import RESULTS, arguments, markdown_table, record, write_report
from bench.gold import DATASETS, PLAN, SEEDS, draw
from bench.study import DEFAULT_TEACHER, labelled_split, mean_std
from llkd_edge.distributions import pool_prior
from llkd_edge.labels.gold import FLOOR, Probe, Product, cv_folds, out_of_fold
from llkd_edge.labels.labelling import recalibrated

SIZES = (4, 8, 16)


def _logs(*probs):
    return [np.log(np.clip(p, FLOOR, 1.0)) for p in probs]


def stacked(teacher_g, probe_g, y, teacher_t, probe_t, k):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=3000).fit(np.hstack(_logs(teacher_g, probe_g)), y)
    out = np.zeros((len(teacher_t), k))
    out[:, model.classes_] = model.predict_proba(np.hstack(_logs(teacher_t, probe_t)))
    return out


def biased_product(teacher_g, probe_g, y, teacher_t, probe_t, l2):
    """p ∝ teacher^a probe^b exp(c_k): (a, b, c) by L-BFGS on the gold log-loss plus l2 |c|^2."""
    from scipy.optimize import minimize

    a_log, b_log = _logs(teacher_g, probe_g)
    k = teacher_g.shape[1]

    def loss(w):
        z = w[0] * a_log + w[1] * b_log + w[2:]
        z = z - z.max(1, keepdims=True)
        return -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).sum() + l2 * (w[2:] @ w[2:])

    w = minimize(loss, np.r_[1.0, 1.0, np.zeros(k)], method="L-BFGS-B",
                 bounds=[(0, 5), (0, 5)] + [(None, None)] * k).x
    a_t, b_t = _logs(teacher_t, probe_t)
    z = w[0] * a_t + w[1] * b_t + w[2:]
    return z  # argmax is all that is scored


def main() -> None:
    from sklearn.metrics import f1_score

    from llkd_edge.teacher.encoder import embed

    parser = arguments(__doc__)
    parser.add_argument("--store", default="runs/study/labels.sqlite")
    args = parser.parse_args()
    cells = []
    for dataset in DATASETS:
        split = labelled_split(DEFAULT_TEACHER, dataset, PLAN, PLAN.pool, args.store)
        names = list(split.labels.names)
        prior = pool_prior([r.probs for r in split.pool.rows])
        pool_t = np.array([r.probs for r in recalibrated(split.pool.rows, names, prior)])
        test_t = np.array([r.probs for r in recalibrated(split.test.rows, names, prior)])
        pool_x, test_x = embed(split.pool.texts), embed(split.test.texts)
        y_pool = np.array([names.index(g) for g in split.pool.gold])
        y_test = np.array([names.index(g) for g in split.test.gold])
        k = len(names)
        for per in SIZES:
            for seed in SEEDS:
                chosen = draw(split.pool.gold, names, per, seed)
                xg, yg, tg = pool_x[chosen], y_pool[chosen], pool_t[chosen]
                probe = Probe.fit(xg, yg, k)
                probe_t = probe.predict(test_x)
                probe_oof = out_of_fold(xg, yg, k, cv_folds(yg, seed))
                scores = {"teacher": test_t, "gold_only": probe_t,
                          "stacked": stacked(tg, probe_oof, yg, test_t, probe_t, k),
                          "product": Product.fit(tg, probe_oof, yg)(test_t, probe_t)}
                for l2 in (0.1, 1.0, 10.0):
                    scores[f"product+bias l2={l2:g}"] = biased_product(tg, probe_oof, yg, test_t, probe_t, l2)
                cells.append({"dataset": dataset, "per_class": per, "seed": seed,
                              **{name: float(f1_score(y_test, p.argmax(1), average="macro")) for name, p in scores.items()}})
    methods = [m for m in cells[0] if m not in ("dataset", "per_class", "seed")]
    rows = []
    for dataset in DATASETS:
        for per in SIZES:
            mine = [c for c in cells if c["dataset"] == dataset and c["per_class"] == per]
            rows.append([dataset, per, *(f"{mean_std([c[m] for c in mine])['mean']:.3f}" for m in methods)])
    table = markdown_table(["dataset", "gold/class", *methods], rows)
    write_report(RESULTS / "gold_combiners.json", {**record(args.threads, "scikit-learn", "scipy"), "cells": cells},
                 "Test macro-F1 of each label source, mean over 3 gold draws.\n\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
