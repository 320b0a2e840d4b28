"""LLKD's rule, varied (issue 16): gates that cannot collapse, FreeMatch's class terms, weights, soft targets,
against the plain baselines, all on batch-calibrated labels (distill's default).

    python -m bench.llkd_rules                          # every rule x 3 datasets x 3 seeds; resumes at its cells
    python -m bench.llkd_rules --rules paper floor50    # some rules only (two processes can share the cells)
    python -m bench.llkd_rules --report-only            # re-render from the cells already run
    python -m bench.llkd_rules --student minilm-l6 --max-length 128 --datasets 20newsgroups --rules paper all
                                                        # the default student (its registered learning rate);
                                                        # reported in bench/results/llkd_rules_minilm-l6.json
    python -m bench.llkd_rules --label-only --pool 4000   # label the large pools once (the study's store)
    python -m bench.llkd_rules --student minilm-l3 --max-length 128 --pool 4000 --epochs 1 \
        --rules floor100 all confidence random-floor100  # the large-pool regime (bbc-news: its whole train split)
    python -m bench.llkd_rules --relabel probe --student minilm-l6 --max-length 128 --pool 4000 --epochs 1 \
        --datasets 20newsgroups --rules floor100      # pools relabelled as `distill --relabel probe` does (OUT_probe)

The study's small-pool protocol (bench/study.py): gemma3-270m labels from the study's store, the 1000-text pool
after the 200-text validation slice, the first 500 test texts, `minilm-l2`, 4 epochs, 64 tokens, batch 32, the
study's tuned learning rate per dataset, seeds 0, 1, 2. A rule is a selection method plus TrainConfig fields.
Every run also plots test macro-F1 against the samples each rule trained on and its training seconds (OUT_cost.png).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from bench.common import RESULTS, markdown_table, record, save_plot, write_report
from bench.study import (DEFAULT_TEACHER, FULL, Cells, best_learning_rate, labelled_split, mean_std, pool_arguments,
                         probe_relabelled)
from bench.calibration import calibrated_split
from llkd_edge.data import BUILTINS
from llkd_edge.distributions import pool_prior
from llkd_edge.files import read_json
from llkd_edge.labels.labelling import gold_scores
from llkd_edge.student.relabel import RELABELLINGS

DATASETS = ("20newsgroups", "reuters-r8", "bbc-news")
# name -> (method, TrainConfig fields); "paper" is distill's llkd as it ships
RULES: dict[str, tuple[str, tuple]] = {
    "paper": ("llkd", ()),
    "all": ("all", ()),
    "confidence": ("confidence", ()),
    "uncertainty": ("uncertainty", ()),
    "topk": ("topk", ()),
    "random": ("random", ()),
    "student-over-passed": ("llkd", (("llkd_student_stats", "teacher"),)),
    "class-mass": ("llkd", (("llkd_class_terms", "mass"),)),
    "floor50": ("llkd", (("llkd_floor", 0.5),)),
    "floor100": ("llkd", (("llkd_floor", 1.0),)),  # every teacher-passed sample: the student only weights
    "random-floor100": ("random", (("llkd_floor", 1.0),)),  # `all` cut to floor100's count per batch
    # the teacher bar at each class's pool median (half the pool passes), with need weights / alone / random
    "median100": ("llkd", (("llkd_class_terms", "pool-median"), ("llkd_floor", 1.0))),
    "median-confidence": ("confidence", (("llkd_class_terms", "pool-median"),)),
    "random-median100": ("random", (("llkd_class_terms", "pool-median"), ("llkd_floor", 1.0))),
    "weights-one": ("llkd", (("llkd_weights", "one"),)),
    "weights-conf": ("llkd", (("llkd_weights", "conf"),)),
    "soft": ("llkd", (("soft_labels", True),)),
    "warmup25": ("llkd", (("llkd_warmup", 0.25),)),
    "warmup50": ("llkd", (("llkd_warmup", 0.5),)),
    "passed+mass+floor50": ("llkd", (("llkd_student_stats", "teacher"), ("llkd_class_terms", "mass"),
                                     ("llkd_floor", 0.5))),
}
STUDY = RESULTS / "study" / "study.json"


def main() -> int:
    parser = pool_arguments(__doc__, "llkd_rules", DATASETS, tuple(BUILTINS))  # any built-in set on request
    parser.add_argument("--rules", nargs="+", choices=list(RULES), default=list(RULES))
    parser.add_argument("--report-only", action="store_true", help="only the cells already run; train nothing")
    parser.add_argument("--tune-lr", action="store_true",
                        help="each rule picks its own learning rate from the study's three by validation macro-F1 of "
                             "seed 0 (default: every rule gets the rate tuned for `all`)")
    parser.add_argument("--student", default=FULL.student, help="the student (default: the study's minilm-l2)")
    parser.add_argument("--max-length", type=int, default=FULL.max_length, help="student tokens per text")
    parser.add_argument("--learning-rate", type=float, help="for every rule (default: the study's tuned rate per "
                        "dataset for minilm-l2, else the student's registered default)")
    parser.add_argument("--pool", type=int, default=FULL.pool,
                        help="pool texts after the validation slice (at most the train split's; default %(default)s)")
    parser.add_argument("--epochs", type=int, default=FULL.epochs)
    parser.add_argument("--label-only", action="store_true", help="label the pools and test texts; train nothing")
    parser.add_argument("--relabel", choices=RELABELLINGS, default="none",
                        help="probe: each seed's pool relabelled as `distill --relabel probe` makes it")
    args = parser.parse_args()
    if args.out == parser.get_default("out"):  # the L2 small-pool report stays as it is
        suffix = "" if args.student == FULL.student else f"_{args.student}"
        suffix += "" if (args.pool, args.epochs) == (FULL.pool, FULL.epochs) else f"_n{args.pool}_e{args.epochs}"
        suffix += "" if args.relabel == "none" else f"_{args.relabel}"
        suffix += "".join(f"_{d}" for d in args.datasets if d not in DATASETS)  # a set outside the study's three
        args.out = str(Path(args.out).with_name(f"llkd_rules{suffix}.json"))
    from tqdm.auto import tqdm

    work = Path(args.work)
    tuned = read_json(STUDY)["tuned_learning_rate"] if STUDY.exists() and args.student == FULL.student else {}
    plan = replace(FULL, datasets=tuple(args.datasets), seeds=tuple(args.seeds), pool_calibration="batch",
                   student=args.student, max_length=args.max_length, pool=args.pool, epochs=args.epochs,
                   relabel=args.relabel)
    default_lr = plan.learning_rates[-1]
    if args.student != FULL.student:  # its registered rate, halved and doubled for --tune-lr
        from llkd_edge.registry import registry

        default_lr = registry("students")[args.student]["learning_rate"]
        plan = replace(plan, learning_rates=(default_lr / 2, default_lr, default_lr * 2))
    started = time.perf_counter()
    rows, teachers = [], {}
    bar = tqdm(total=len(args.rules) * len(args.datasets) * len(args.seeds), unit="cell", desc="cells",
               disable=args.report_only or args.label_only)
    for dataset in args.datasets:
        split = labelled_split(DEFAULT_TEACHER, dataset, plan, plan.pool, args.store)
        if args.label_only:
            print(f"{dataset}: {len(split.pool.texts)} pool and {len(split.test.texts)} test texts labelled "
                  f"({split.labelled_now} now, {split.label_seconds:.0f} s)")
            continue
        split = calibrated_split(split, pool_prior([r.probs for r in split.pool.rows]))
        splits = {s: split for s in args.seeds}
        if args.relabel == "probe" and not args.report_only:  # a cell's name does not depend on its rows
            splits = {s: probe_relabelled(dataset, split, s) for s in args.seeds}
        teachers[dataset] = gold_scores(split.test, split.labels.names)
        study_lr = args.learning_rate or tuned.get(dataset, default_lr)
        for name in args.rules:
            method, fields = RULES[name]
            cells = Cells(work / "cells", replace(plan, train=fields), args.threads, bar)
            rates = [study_lr]
            if args.tune_lr:  # its own rate, if seed 0 has been run at every rate; the study's rate too, for contrast
                tried = [_cell(cells, splits[args.seeds[0]], method, args.seeds[0], r, args.report_only)
                         for r in plan.learning_rates]
                if all(tried):
                    rates = sorted({study_lr, best_learning_rate(tried)})
            for lr in rates:
                got = [c for c in (_cell(cells, splits[seed], method, seed, lr, args.report_only) for seed in args.seeds)
                       if c]
                if got:
                    label = name if lr == study_lr else f"{name}, own lr {lr:g}"
                    rows.append({**summary(dataset, label, method, fields, got), "learning_rate": lr})
    bar.close()
    if args.label_only:
        return 0
    table = markdown(rows, teachers)
    print(table)
    report = {**record(args.threads, "scikit-learn"),
              "plan": {"pool": plan.pool, "test": plan.test, "val": plan.val, "student": plan.student,
                       "epochs": plan.epochs, "max_length": plan.max_length, "pool_calibration": "batch",
                       "relabel": plan.relabel,
                       "learning_rate": {d: tuned.get(d) for d in args.datasets}},
              "teacher": teachers, "rules": rows, "seconds": round(time.perf_counter() - started, 1)}
    out = Path(args.out)
    write_report(out, report, table)
    plot(rows, teachers, out.with_suffix(".png"), plan.student)
    plot_cost(rows, teachers, out.with_name(f"{out.stem}_cost.png"), plan.student)
    print(f"wrote {out}")
    return 0


def _cell(cells: Cells, split, method: str, seed: int, lr: float, report_only: bool) -> dict | None:
    """The cell, trained now if need be; with ``report_only`` only one already run (else None)."""
    if report_only:
        path = cells.path(split, cells.plan.pool, method, seed, lr)
        return read_json(path) if path.exists() else None
    return cells.get(split, cells.plan.pool, method, seed, lr)


def summary(dataset: str, name: str, method: str, fields: tuple, got: list[dict]) -> dict:
    return {"dataset": dataset, "rule": name, "method": method, "train": dict(fields),
            "seeds": [c["seed"] for c in got],
            "macro_f1": mean_std([c["test"]["macro_f1"] for c in got]),
            "accuracy": mean_std([c["test"]["accuracy"] for c in got]),
            "per_seed_macro_f1": [round(c["test"]["macro_f1"], 4) for c in got],
            "fraction_used": mean_std([c["fraction_used"] for c in got]),
            "accuracy_used": mean_std([c["accuracy_used"] or 0.0 for c in got]),
            "selected_per_epoch": [c["selected_per_epoch"] for c in got],
            "samples_trained": mean_std([sum(c["selected_per_epoch"]) for c in got]),
            "train_seconds": mean_std([c["train_seconds"] for c in got])}


def markdown(rows: list[dict], teachers: dict) -> str:
    out = []
    for dataset, teacher in teachers.items():
        mine = [r for r in rows if r["dataset"] == dataset]
        if not mine:
            continue
        best = max(r["macro_f1"]["mean"] for r in mine)
        out += [f"**{dataset}**: teacher (gemma3-270m, batch-calibrated) test macro-F1 {teacher['macro_f1']:.3f}, "
                f"accuracy {teacher['accuracy']:.3f}.", "",
                markdown_table(["rule", "test macro-F1", "per seed", "accuracy", "pool used", "labels right (used)",
                                "selected per epoch (seed 0)", "train s"],
                               [[f"`{r['rule']}`", ("**" if r["macro_f1"]["mean"] == best else "")
                                 + f"{r['macro_f1']['mean']:.3f} ± {r['macro_f1']['std']:.3f}"
                                 + ("**" if r["macro_f1"]["mean"] == best else ""),
                                 ", ".join(f"{x:.3f}" for x in r["per_seed_macro_f1"]), f"{r['accuracy']['mean']:.3f}",
                                 f"{r['fraction_used']['mean']:.1%}", f"{r['accuracy_used']['mean']:.1%}",
                                 ", ".join(map(str, r["selected_per_epoch"][0])), f"{r['train_seconds']['mean']:.0f}"]
                                for r in mine]), ""]
    return "\n".join(out)


def plot(rows: list[dict], teachers: dict, path: Path, student: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in teachers if any(r["dataset"] == d for r in rows)]
    if not datasets:
        return None
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        mine = [r for r in rows if r["dataset"] == dataset]
        y = range(len(mine))
        ax.barh(list(y), [r["macro_f1"]["mean"] for r in mine], xerr=[r["macro_f1"]["std"] for r in mine],
                color=["tab:orange" if r["method"] == "llkd" else "tab:gray" for r in mine])
        ax.set_yticks(list(y), [r["rule"] for r in mine], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(teachers[dataset]["macro_f1"], color="k", ls="--", lw=1, label="teacher")
        ax.set_title(dataset)
        ax.set_xlabel("test macro-F1 (3 seeds)")
        lo = min(r["macro_f1"]["mean"] for r in mine)
        ax.set_xlim(max(0.0, lo - 0.1), None)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"LLKD rules (orange) and baselines (grey)\nbatch-calibrated gemma3-270m labels, "
                 f"{student}, 3 seeds",
                 fontsize=10)
    fig.tight_layout()
    return save_plot(fig, path)


def plot_cost(rows: list[dict], teachers: dict, path: Path, student: str) -> Path | None:
    """Test macro-F1 against the samples each rule trained on (summed over epochs) and against its training
    seconds, one panel pair per dataset, the teacher as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in teachers if any(r["dataset"] == d for r in rows)]
    if not datasets:
        return None
    fig, axes = plt.subplots(2, len(datasets), figsize=(max(4.5 * len(datasets), 6.5), 7), squeeze=False)
    for col, dataset in enumerate(datasets):
        for ax, key, xlabel in ((axes[0][col], "samples_trained", "samples trained on (all epochs)"),
                                (axes[1][col], "train_seconds", "training seconds")):
            for i, r in enumerate(r for r in rows if r["dataset"] == dataset):
                ax.errorbar(r[key]["mean"], r["macro_f1"]["mean"], yerr=r["macro_f1"]["std"], capsize=3,
                            fmt="os^Dv<>p"[i % 8], color=f"C{i % 10}", label=r["rule"])
            ax.axhline(teachers[dataset]["macro_f1"], color="k", ls="--", lw=1, label="teacher")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test macro-F1")
            ax.set_title(dataset, fontsize=10)
        axes[0][col].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"What each rule costs\nbatch-calibrated gemma3-270m labels, {student}, mean ± std over seeds",
                 fontsize=10)
    fig.tight_layout()
    return save_plot(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
