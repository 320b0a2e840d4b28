"""The study: LLKD against its baselines on real data, several seeds, a data-budget curve, teacher reliability.

    python -m bench.study --quick     # a small version (1 dataset, 1 seed, small pool): a few minutes
    python -m bench.study             # the full study: ~2 h on 2 cores with an empty label store

Driven through the library API (labelling.label_dataset -> train.build_student/train -> predict_proba).
For each built-in dataset the train split is cut, in its fixed seeded order, into a validation slice (the
first VAL texts, gold labels used only to tune the learning rate) and the pool (the next texts, gold
never shown to the student); the test split is the held-out gold set. Every teacher label goes through
the label store, so no text is labelled twice and a re-run costs no teacher time. Every finished cell
(teacher, dataset, student settings, pool size, method, seed, learning rate) is saved as one JSON file
under WORK/cells: a killed study resumes at the cell it was in. Cells are not keyed by code version:
delete WORK/cells after changing the training code.

Phases: (1) teacher labels for pool and test; (2) learning rate tuned per dataset on the validation
slice with the plain `all` baseline, seed 0 (so LLKD gets no tuning of its own); (3) every selection
method x every seed on the fixed pool; (4) macro-F1 against pool size for `llkd` and `all`; (5) the same
methods on pseudo-labels from the strongest packaged teacher; (6) `llkd` and `all` trained for twice the
epochs on the curve dataset. Then it writes OUT/study.json, OUT/study.md (the tables) and the PNG plots.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from bench.common import arguments, record, save_plot, write_report
from llkd_edge.config import LabelSet, ScoringConfig, TeacherConfig, TrainConfig
from llkd_edge.data import Dataset, load_builtin
from llkd_edge.errors import MissingDependencyError, UserError
from llkd_edge.files import read_json, write_json
from llkd_edge.labels.labelling import Labelled, gold_scores, label_dataset, with_probs
from llkd_edge.metrics import calibration, classification_scores
from llkd_edge.config import SELECTION_METHODS as METHODS
from llkd_edge.teacher.llama import load_teacher

HERE = Path(__file__).parent
DEFAULT_TEACHER = "gemma3-270m"
STRONG_TEACHER = "qwen2.5-coder-1.5b-instruct"


@dataclass(frozen=True)
class Plan:
    datasets: tuple[str, ...]
    val: int  # texts carved from the front of the train split for tuning
    pool: int  # the main pool size (texts after the validation slice)
    test: int  # gold test texts (at most)
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    curve_dataset: str
    curve_sizes: tuple[int, ...]
    learning_rates: tuple[float, ...]  # tuned on the validation slice
    strong: tuple[str, str, int, int] | None  # (teacher, dataset, pool size, max text tokens)
    strong_methods: tuple[str, ...] = ("llkd", "all")
    long_epochs: int | None = 8  # llkd and all trained longer on the curve dataset's main pool
    student: str = "minilm-l2"
    epochs: int = 4
    max_length: int = 64
    batch_size: int = 32
    need_pass: str = "train"  # TrainConfig.need_pass for every cell (bench/need_ablation.py compares both)
    pool_calibration: str = "none"  # how the pool's labels were read (bench/calibration.py compares none and batch)
    train: tuple[tuple[str, object], ...] = ()  # further TrainConfig fields, e.g. (("llkd_floor", 0.5),)
    relabel: str = "none"  # "probe": the cells' pools were relabelled by probe_relabelled (distill --relabel probe)


FULL = Plan(
    datasets=("bbc-news", "reuters-r8", "20newsgroups"),
    val=200, pool=1000, test=500, seeds=(0, 1, 2), methods=METHODS,
    curve_dataset="bbc-news", curve_sizes=(250, 500, 1000),
    learning_rates=(5e-4, 1e-3, 2e-3),
    strong=(STRONG_TEACHER, "bbc-news", 500, 128),
)
QUICK = replace(
    FULL, datasets=("bbc-news",), val=60, pool=200, test=100, seeds=(0,), curve_sizes=(100, 200),
    learning_rates=(1e-3, 2e-3), strong=None, epochs=2, long_epochs=None,
)


# ------------------------------------------------------------------------------------------ pure helpers


def mean_std(values) -> dict:
    """Mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": int(len(a))}


def used_vs_skipped(used, correct) -> dict:
    """Pseudo-label accuracy of the pool samples a method trained on vs those it never used."""
    used = np.asarray(used, dtype=bool)
    ok = np.asarray(correct, dtype=bool)
    return {"fraction_used": float(used.mean()),
            "accuracy_used": float(ok[used].mean()) if used.any() else None,
            "accuracy_skipped": float(ok[~used].mean()) if (~used).any() else None}


def best_learning_rate(cells: list[dict]) -> float:
    """The learning rate with the best validation macro-F1 (the smaller one on a tie)."""
    return min(cells, key=lambda c: (-round(c["val"]["macro_f1"], 6), c["learning_rate"]))["learning_rate"]


# ------------------------------------------------------------------------------------------ data and teacher


@dataclass
class Split:
    """One dataset as labelled by one teacher: validation slice, pool and test set, aligned rows."""

    teacher: str
    dataset: str
    labels: LabelSet
    val: Dataset  # gold only: the teacher never sees it
    pool: Labelled
    test: Labelled
    teacher_sha256: str
    prompt: str
    label_seconds: float
    labelled_now: int


def labelled_split(teacher_name: str, dataset: str, plan: Plan, pool_size: int, store: str,
                   max_text_tokens: int = 256) -> Split:
    train = load_builtin(f"{dataset}:train")
    test = load_builtin(f"{dataset}:test").head(plan.test)
    if len(train.texts) < plan.val + 2:
        raise SystemExit(f"{dataset}: only {len(train.texts)} train texts")
    labels = LabelSet.parse(train.labels)
    scoring = ScoringConfig(labels=labels, task=train.task, max_text_tokens=max_text_tokens)
    teacher = load_teacher(scoring, TeacherConfig(model=teacher_name))
    v, p = plan.val, plan.val + pool_size
    val = Dataset(f"{dataset}:val", train.texts[:v], train.gold[:v])
    started = time.perf_counter()
    try:
        pool = label_dataset(Dataset(f"{dataset}:pool", train.texts[v:p], train.gold[v:p]), teacher, store)
        tested = label_dataset(test, teacher, store, role="eval")
    finally:
        teacher.close()
    return Split(teacher_name, dataset, labels, val, pool, tested, teacher.model.sha256, teacher.prompt,
                 time.perf_counter() - started, pool.labelled + tested.labelled)


def pool_embeddings(dataset: str, split: Split, cache: Path = Path("runs/active")) -> tuple[np.ndarray, np.ndarray]:
    """The study split's pool and test texts embedded as distill embeds them (packaged MiniLM-L6, mean-pooled),
    cached in CACHE/DATASET_pPOOL_tTEST.npz (the sizes in the name, so a larger pool never reuses a smaller
    pool's rows); bench/active.py and bench/relabel.py share the cache."""
    from llkd_edge.teacher.encoder import embed

    path = cache / f"{dataset}_p{len(split.pool.texts)}_t{len(split.test.texts)}.npz"
    if path.exists():
        with np.load(path) as saved:
            return saved["x"], saved["test_x"]
    x, test_x = embed(split.pool.texts), embed(split.test.texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, test_x=test_x)
    return x, test_x


def probe_relabelled(dataset: str, split: Split, seed: int) -> Split:
    """The split with its pool's distributions times a cross-fitted probe's, as ``distill --relabel probe`` makes
    them with training seed ``seed`` (the test rows stay the teacher's)."""
    from llkd_edge.student.relabel import relabelled

    probs = np.array([r.probs for r in split.pool.rows], dtype=np.float64)
    product = relabelled(probs, pool_embeddings(dataset, split)[0], seed)
    return replace(split, pool=replace(split.pool, rows=with_probs(split.pool.rows, product, split.labels.names)))


def pool_arguments(doc: str, name: str, datasets: tuple[str, ...], choices: tuple[str, ...] | None = None):
    """The parser of a bench on the study's pools: --work runs/NAME, --store (the study's), --datasets (``datasets``
    by default, any of ``choices``, which default to ``datasets``), --seeds, --out bench/results/NAME.json, and
    --threads."""
    parser = arguments(doc)
    parser.add_argument("--work", default=f"runs/{name}")
    parser.add_argument("--store", default="runs/study/labels.sqlite")
    parser.add_argument("--datasets", nargs="+", choices=choices or datasets, default=list(datasets))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(HERE / "results" / f"{name}.json"))
    return parser


def _correct(part: Labelled) -> np.ndarray:
    return np.array([r.label == g for r, g in zip(part.rows, part.gold)], dtype=bool)


# ------------------------------------------------------------------------------------------ one cell


def cell_name(split: Split, plan: Plan, n: int, method: str, seed: int, lr: float, epochs: int) -> str:
    student = f"{plan.student}-e{epochs}-t{plan.max_length}-b{plan.batch_size}"
    need = "" if plan.need_pass == "train" else f"__need-{plan.need_pass}"  # earlier cells keep their names
    cal = "" if plan.pool_calibration == "none" else f"__cal-{plan.pool_calibration}"
    extra = "".join(f"__{k}-{v}" for k, v in plan.train)
    extra += "" if plan.relabel == "none" else f"__relabel-{plan.relabel}"
    return f"{split.teacher}__{split.dataset}__{student}__n{n}__{method}__s{seed}__lr{lr:g}{need}{cal}{extra}"


# LLKD cells train with the paper's rule unless plan.train says otherwise: distill's default floor changed to 1.0
# on 2026-11-24, and a cell's name lists only plan.train, so every cell made before then keeps its meaning.
PAPER_RULE = {"llkd_floor": 0.0}


def run_cell(split: Split, plan: Plan, n: int, method: str, seed: int, lr: float, epochs: int, threads: int) -> dict:
    """Train one student on the first ``n`` pool texts with ``method``; score it on val and test."""
    from llkd_edge.student.checkpoint import selected_mask
    from llkd_edge.student.pool import Pool
    from llkd_edge.student.train import build_student, predict_proba, train

    names = split.labels.names
    texts = split.pool.texts[:n]
    probs = np.array([r.probs for r in split.pool.rows[:n]], dtype=np.float64)
    config = TrainConfig(student=plan.student, selection=method, epochs=epochs, batch_size=plan.batch_size,
                         max_length=plan.max_length, learning_rate=lr, seed=seed, threads=threads,
                         need_pass=plan.need_pass, **{**PAPER_RULE, **dict(plan.train)})
    student = build_student(plan.student, names, seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llkd-study-") as tmp:
        stats = train(student, Pool(texts, probs), config, Path(tmp), progress=False)
        used = selected_mask(tmp)
    seconds = time.perf_counter() - started

    def score(part: Labelled | Dataset) -> dict:
        predicted = predict_proba(student, part.texts, plan.max_length).argmax(axis=1)
        return classification_scores(part.gold, [names[j] for j in predicted], names)

    return {
        "teacher": split.teacher, "dataset": split.dataset, "pool_size": len(texts), "method": method,
        "seed": seed, "learning_rate": lr, "epochs": epochs, "test": score(split.test), "val": score(split.val),
        **used_vs_skipped(used, _correct(split.pool)[:n]),
        "selected_per_epoch": [s.selected for s in stats], "train_seconds": round(seconds, 2),
        "need_pass": plan.need_pass, "need_seconds": round(sum(s.need_seconds for s in stats), 2),
        "train": dict(plan.train),
    }


class Cells:
    """Finished cells, one JSON file each, so a killed study resumes at the cell it was in."""

    def __init__(self, folder: Path, plan: Plan, threads: int, bar):
        self.folder, self.plan, self.threads, self.bar = folder, plan, threads, bar
        self.seen: dict[str, dict] = {}  # every distinct cell handed out, by file name
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, split: Split, n: int, method: str, seed: int, lr: float, epochs: int | None = None) -> Path:
        """Where the cell is (or will be) kept."""
        n = min(n, len(split.pool.texts))
        return self.folder / f"{cell_name(split, self.plan, n, method, seed, lr, epochs or self.plan.epochs)}.json"

    def get(self, split: Split, n: int, method: str, seed: int, lr: float, epochs: int | None = None) -> dict:
        n = min(n, len(split.pool.texts))
        epochs = epochs or self.plan.epochs
        path = self.path(split, n, method, seed, lr, epochs)
        if path.exists():
            self.bar.update(1)
            self.seen[path.name] = read_json(path)
            return self.seen[path.name]
        self.bar.set_description(f"{split.dataset} {split.teacher.split('-')[0]} n={n} {method} seed {seed} lr {lr:g} "
                                 f"{epochs} epochs")
        cell = run_cell(split, self.plan, n, method, seed, lr, epochs, self.threads)
        write_json(path, cell)
        self.bar.update(1)
        self.seen[path.name] = cell
        return cell


# ------------------------------------------------------------------------------------------ the study


def run_study(plan: Plan, work: Path, store: str, threads: int) -> dict:
    from tqdm.auto import tqdm

    started = time.perf_counter()
    pool_needed = {d: plan.pool for d in plan.datasets}
    pool_needed[plan.curve_dataset] = max(pool_needed.get(plan.curve_dataset, 0), *plan.curve_sizes)
    if plan.strong:  # the default teacher is run on the strong teacher's pool too, side by side
        pool_needed[plan.strong[1]] = max(pool_needed.get(plan.strong[1], 0), plan.strong[2])
    splits = {}
    for dataset, size in pool_needed.items():
        splits[(DEFAULT_TEACHER, dataset)] = labelled_split(DEFAULT_TEACHER, dataset, plan, size, store)
    if plan.strong:
        name, dataset, size, tokens = plan.strong
        splits[(name, dataset)] = labelled_split(name, dataset, plan, size, store, max_text_tokens=tokens)
    label_seconds = time.perf_counter() - started

    total = (len(plan.datasets) * (len(plan.learning_rates) + len(plan.methods) * len(plan.seeds))
             + len(plan.curve_sizes) * 2 * len(plan.seeds)
             + (2 * len(plan.strong_methods) * len(plan.seeds) if plan.strong else 0)
             + (2 * len(plan.seeds) if plan.long_epochs else 0))
    bar = tqdm(total=total, unit="cell", desc="study", dynamic_ncols=True)
    cells = Cells(work / "cells", plan, threads, bar)
    train_started = time.perf_counter()

    tuned, tuning, main = {}, {}, {}
    for dataset in plan.datasets:
        split = splits[(DEFAULT_TEACHER, dataset)]
        tuning[dataset] = [cells.get(split, plan.pool, "all", plan.seeds[0], lr) for lr in plan.learning_rates]
        tuned[dataset] = best_learning_rate(tuning[dataset])
        main[dataset] = [cells.get(split, plan.pool, m, s, tuned[dataset]) for m in plan.methods for s in plan.seeds]

    curve_split = splits[(DEFAULT_TEACHER, plan.curve_dataset)]
    curve_lr = tuned.get(plan.curve_dataset, plan.learning_rates[0])
    curve = [cells.get(curve_split, n, m, s, curve_lr) for n in plan.curve_sizes for m in ("llkd", "all")
             for s in plan.seeds]

    long = [cells.get(curve_split, plan.pool, m, s, curve_lr, epochs=plan.long_epochs) for m in ("llkd", "all")
            for s in plan.seeds] if plan.long_epochs else []

    strong = []
    if plan.strong:
        name, dataset, size, _ = plan.strong
        lr = tuned.get(dataset, plan.learning_rates[0])
        strong = [cells.get(splits[(name, dataset)], size, m, s, lr) for m in plan.strong_methods for s in plan.seeds]
        # the default teacher on the same pool size, for the side-by-side rows
        strong += [cells.get(splits[(DEFAULT_TEACHER, dataset)], size, m, s, lr) for m in plan.strong_methods
                   for s in plan.seeds]
    bar.close()

    teachers = {}
    for (name, dataset), split in splits.items():
        every = [split.pool, split.test]
        teachers[f"{name}|{dataset}"] = {
            "teacher": name, "dataset": dataset, "sha256": split.teacher_sha256, "prompt": split.prompt,
            "labels": list(split.labels.names), "verbalisers": list(split.labels.verbalisers),
            "test": gold_scores(split.test, split.labels.names),
            "pool_pseudo_label_accuracy": float(_correct(split.pool).mean()), "pool_size": len(split.pool.texts),
            "pool_label_counts": {k: sum(r.label == k for r in split.pool.rows) for k in split.labels.names},
            "test_size": len(split.test.texts), "val_size": len(split.val.texts),
            "label_seconds": round(split.label_seconds, 1), "labelled_now": split.labelled_now,
            "reliability": calibration([r.confidence for p in every for r in p.rows],
                                       np.concatenate([_correct(p) for p in every])),
        }
    return {
        "plan": asdict(plan), "tuned_learning_rate": tuned, "tuning": tuning, "main": main, "curve": curve,
        "strong": strong, "long": long, "teachers": teachers,
        "seconds": {"labelling_phase": round(label_seconds, 1),
                    "training_phase": round(time.perf_counter() - train_started, 1),
                    "total": round(time.perf_counter() - started, 1),
                    "train_seconds_in_cells": round(sum(c["train_seconds"] for c in cells.seen.values()), 1)},
    }


# ------------------------------------------------------------------------------------------ summaries


def summarise(cells: list[dict], keys=("teacher", "dataset", "pool_size", "method")) -> list[dict]:
    """Mean and std over seeds for each (teacher, dataset, pool size, method)."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault(tuple(c[k] for k in keys), []).append(c)
    out = []
    for key, group in groups.items():
        def pick(field, sub=None):
            values = (c[field][sub] if sub else c[field] for c in group)
            return [v for v in values if v is not None]
        out.append({**dict(zip(keys, key)), "seeds": sorted(c["seed"] for c in group),
                    "accuracy": mean_std(pick("test", "accuracy")), "macro_f1": mean_std(pick("test", "macro_f1")),
                    "fraction_used": mean_std(pick("fraction_used")),
                    "accuracy_used": mean_std(pick("accuracy_used")) if pick("accuracy_used") else None,
                    "accuracy_skipped": mean_std(pick("accuracy_skipped")) if pick("accuracy_skipped") else None,
                    "train_seconds": mean_std(pick("train_seconds"))})
    return out


def _pm(s: dict | None, digits: int = 3) -> str:
    if s is None:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def _pct(s: dict | None) -> str:
    return "-" if s is None else (f"{s['mean']:.1%} ± {s['std']:.1%}" if s["n"] > 1 else f"{s['mean']:.1%}")


def markdown(report: dict) -> str:
    plan = report["plan"]
    lines = [f"Student `{plan['student']}`, {plan['epochs']} epochs, batch {plan['batch_size']}, "
             f"{plan['max_length']} student tokens, seeds {', '.join(map(str, plan['seeds']))}; "
             f"validation slice {plan['val']} texts. Training summed over every cell: "
             f"{report['seconds']['train_seconds_in_cells'] / 60:.0f} min; this invocation's wall time "
             f"{report['seconds']['total'] / 60:.1f} min (labelling {report['seconds']['labelling_phase'] / 60:.1f}, "
             f"training {report['seconds']['training_phase'] / 60:.1f}; finished cells and stored labels are reused).", ""]
    teachers = report["teachers"]

    lines += ["### Summary", "", "Test macro-F1, mean ± std over seeds; the best baseline is the best of the five others.", "",
              "| dataset | teacher | teacher macro-F1 | student `llkd` | best baseline | `llkd` pool used |",
              "|---|---|---|---|---|---|"]
    groups = [(d, DEFAULT_TEACHER, cells) for d, cells in report["main"].items()]
    if report["strong"]:
        groups.append((plan["strong"][1], plan["strong"][0], [c for c in report["strong"] if c["teacher"] == plan["strong"][0]]))
    for dataset, teacher, cells in groups:
        rows = {r["method"]: r for r in summarise(cells)}
        best = max((r for m, r in rows.items() if m != "llkd"), key=lambda r: r["macro_f1"]["mean"])
        lines.append(f"| {dataset} (pool {rows['llkd']['pool_size']}) | {teacher} | "
                     f"{teachers[f'{teacher}|{dataset}']['test']['macro_f1']:.3f} | {_pm(rows['llkd']['macro_f1'])} | "
                     f"`{best['method']}` {_pm(best['macro_f1'])} | {_pct(rows['llkd']['fraction_used'])} |")
    lines.append("")

    lines += ["### Methods, fixed pool", ""]
    for dataset, cells in report["main"].items():
        t = teachers[f"{DEFAULT_TEACHER}|{dataset}"]
        lines += [f"**{dataset}**: pool {cells[0]['pool_size']} texts (teacher's pseudo-labels "
                  f"{_pool_accuracy(cells):.1%} correct), "
                  f"test {t['test_size']}, learning rate {report['tuned_learning_rate'][dataset]:g} "
                  f"(tuned on validation), majority class {t['test']['majority_rate']:.3f}.", ""]
        lines += _method_table(cells, t, DEFAULT_TEACHER)
    if report["strong"]:
        name, dataset, size, tokens = plan["strong"]
        lines += ["### The strongest packaged teacher", "",
                  f"**{dataset}**, pool {size} texts, both teachers on the same pool and test texts "
                  f"({name} reads {tokens} text tokens, {DEFAULT_TEACHER} 256).", ""]
        for teacher in (name, DEFAULT_TEACHER):
            lines += [f"Teacher `{teacher}`:", ""]
            lines += _method_table([c for c in report["strong"] if c["teacher"] == teacher], teachers[f"{teacher}|{dataset}"], teacher)

    lines += ["### Data budget", "", f"**{plan['curve_dataset']}**, macro-F1 on the test set (mean ± std over seeds):", "",
              "| pool texts | `llkd` | `all` | `llkd` pool used |", "|---|---|---|---|"]
    rows = {(r["pool_size"], r["method"]): r for r in summarise(report["curve"])}
    for n in sorted({k[0] for k in rows}):
        lines.append(f"| {n} | {_pm(rows[(n, 'llkd')]['macro_f1'])} | {_pm(rows[(n, 'all')]['macro_f1'])} | "
                     f"{_pct(rows[(n, 'llkd')]['fraction_used'])} |")
    lines.append(f"| teacher | {teachers[DEFAULT_TEACHER + '|' + plan['curve_dataset']]['test']['macro_f1']:.3f} | | |")

    if report.get("long"):
        lines += ["", "### Longer training", "",
                  f"**{plan['curve_dataset']}**, pool {plan['pool']}: does a selective method catch up when it trains longer?", "",
                  "| method | epochs | accuracy | macro-F1 | pool used |", "|---|---|---|---|---|"]
        short = [c for c in report["main"].get(plan["curve_dataset"], []) if c["method"] in ("llkd", "all")]
        for cells, epochs in ((short, plan["epochs"]), (report["long"], plan["long_epochs"])):
            for r in sorted(summarise(cells), key=lambda r: r["method"], reverse=True):
                lines.append(f"| `{r['method']}` | {epochs} | {_pm(r['accuracy'])} | {_pm(r['macro_f1'])} | "
                             f"{_pct(r['fraction_used'])} |")

    lines += ["", "### Teacher reliability", "",
              "| teacher | dataset | texts | pseudo-label accuracy | ECE | test accuracy | test macro-F1 |",
              "|---|---|---|---|---|---|---|"]
    for t in teachers.values():
        r = t["reliability"]
        lines.append(f"| {t['teacher']} | {t['dataset']} | {r['n']} | {r['accuracy']:.3f} | {r['ece']:.3f} | "
                     f"{t['test']['accuracy']:.3f} | {t['test']['macro_f1']:.3f} |")
    lines += ["", "Pseudo-label accuracy of the pool texts each method trained on vs those it never used "
              "(fixed pool, mean over seeds):", "", "| dataset | method | pool used | accuracy, used | accuracy, never used |",
              "|---|---|---|---|---|"]
    for dataset, cells in report["main"].items():
        for r in summarise(cells):
            lines.append(f"| {dataset} | `{r['method']}` | {_pct(r['fraction_used'])} | {_pm(r['accuracy_used'])} | "
                         f"{_pm(r['accuracy_skipped'])} |")

    lines += ["", "### Learning-rate tuning (`all`, seed 0, validation slice)", "", "| dataset | learning rate | val macro-F1 | test macro-F1 |", "|---|---|---|---|"]
    for dataset, cells in report["tuning"].items():
        for c in cells:
            mark = " (chosen)" if c["learning_rate"] == report["tuned_learning_rate"][dataset] else ""
            lines.append(f"| {dataset} | {c['learning_rate']:g}{mark} | {c['val']['macro_f1']:.3f} | {c['test']['macro_f1']:.3f} |")
    return "\n".join(lines) + "\n"


def _pool_accuracy(cells: list[dict]) -> float:
    """The pseudo-label accuracy of the whole pool the cells trained on (the `all` cells use all of it)."""
    return next(c["accuracy_used"] for c in cells if c["method"] == "all")


def _method_table(cells: list[dict], teacher: dict, teacher_name: str) -> list[str]:
    lines = ["| model | accuracy | macro-F1 | pool used | train s |", "|---|---|---|---|---|",
             f"| teacher `{teacher_name}`, zero-shot | {teacher['test']['accuracy']:.3f} | {teacher['test']['macro_f1']:.3f} | - | - |"]
    rows = summarise(cells)
    best = max(r["macro_f1"]["mean"] for r in rows)
    for r in sorted(rows, key=lambda r: METHODS.index(r["method"])):
        f1 = _pm(r["macro_f1"])
        lines.append(f"| student `{r['method']}` | {_pm(r['accuracy'])} | {'**' + f1 + '**' if r['macro_f1']['mean'] == best else f1} | "
                     f"{_pct(r['fraction_used'])} | {r['train_seconds']['mean']:.0f} |")
    return lines + [""]


# ------------------------------------------------------------------------------------------ plots


def plot(report: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    teachers = report["teachers"]
    plan = report["plan"]

    # 1. every method per dataset: macro-F1 mean ± std, the teacher as a line
    groups = [(d, DEFAULT_TEACHER, cells) for d, cells in report["main"].items()]
    if report["strong"]:
        name, dataset = plan["strong"][0], plan["strong"][1]
        groups.append((dataset, name, [c for c in report["strong"] if c["teacher"] == name]))
    fig, axes = plt.subplots(1, len(groups), figsize=(max(6.0, 4.2 * len(groups)), 3.8), squeeze=False)
    for ax, (dataset, teacher, cells) in zip(axes[0], groups):
        rows = {r["method"]: r for r in summarise(cells)}
        methods = [m for m in METHODS if m in rows]
        means = [rows[m]["macro_f1"]["mean"] for m in methods]
        stds = [rows[m]["macro_f1"]["std"] for m in methods]
        colours = ["tab:red" if m == "llkd" else "tab:gray" for m in methods]
        ax.bar(range(len(methods)), means, yerr=stds, color=colours, capsize=3)
        t = teachers[f"{teacher}|{dataset}"]["test"]["macro_f1"]
        ax.axhline(t, color="black", linestyle="--", linewidth=1, label=f"teacher {t:.3f}")
        ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right")
        low = min(min(means) - max(stds) - 0.05, t - 0.05)
        ax.set_ylim(max(0.0, low), min(1.0, max(max(means) + max(stds), t) + 0.05))
        ax.set_title(f"{dataset}\nteacher {teacher.split('-')[0]}, pool {rows[methods[0]]['pool_size']}", fontsize=9)
        ax.set_ylabel("test macro-F1")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Student macro-F1 by selection method (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    written.append(save_plot(fig, out / "study_methods.png"))

    # 2. data budget
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    rows = summarise(report["curve"])
    for method, colour in (("llkd", "tab:red"), ("all", "tab:gray")):
        pts = sorted((r["pool_size"], r["macro_f1"]["mean"], r["macro_f1"]["std"]) for r in rows if r["method"] == method)
        x, m, s = (np.array(v) for v in zip(*pts))
        ax.plot(x, m, marker="o", color=colour, label=method)
        ax.fill_between(x, m - s, m + s, color=colour, alpha=0.2)
    t = teachers[f"{DEFAULT_TEACHER}|{plan['curve_dataset']}"]["test"]["macro_f1"]
    ax.axhline(t, color="black", linestyle="--", linewidth=1, label=f"teacher {t:.3f}")
    ax.set_xscale("log")
    ax.set_xticks(plan["curve_sizes"], [str(n) for n in plan["curve_sizes"]])
    ax.minorticks_off()
    ax.set_xlabel("pool size (teacher-labelled texts)")
    ax.set_ylabel("test macro-F1")
    ax.set_title(f"Data budget on {plan['curve_dataset']} (mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(save_plot(fig, out / "study_budget.png"))

    # 3. reliability diagrams
    items = list(teachers.values())
    fig, axes = plt.subplots(1, len(items), figsize=(max(6.0, 3.6 * len(items)), 3.7), squeeze=False)
    for ax, t in zip(axes[0], items):
        r = t["reliability"]
        full = [b for b in r["bins"] if b["count"]]
        centres = [(b["low"] + b["high"]) / 2 for b in full]
        ax.bar(centres, [b["accuracy"] for b in full], width=0.09, color="tab:blue", alpha=0.8, label="accuracy")
        ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1)
        for c, b in zip(centres, full):
            ax.text(c, 0.02, str(b["count"]), ha="center", va="bottom", fontsize=6, rotation=90, color="white")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("teacher confidence")
        ax.set_ylabel("pseudo-label accuracy")
        ax.set_title(f"{t['dataset']}, {t['teacher'].split('-')[0]}\nECE {r['ece']:.3f}, {r['n']} texts", fontsize=9)
    fig.suptitle("Teacher reliability: pseudo-label accuracy per confidence bin (counts in the bars)", fontsize=9)
    fig.tight_layout()
    written.append(save_plot(fig, out / "study_reliability.png"))
    return written


# ------------------------------------------------------------------------------------------ main


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--quick", action="store_true", help="a small version that runs in a few minutes")
    parser.add_argument("--work", help="cells and label store (default runs/study or runs/study-quick)")
    parser.add_argument("--store", help="label store (default WORK/labels.sqlite)")
    parser.add_argument("--out", help="tables and plots (default bench/results/study; --quick: WORK/results)")
    parser.add_argument("--no-strong", action="store_true", help=f"leave out the {STRONG_TEACHER} teacher")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render OUT/study.md and the plots from OUT/study.json (no labelling, no training)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    plan = QUICK if args.quick else FULL
    if args.no_strong:
        plan = replace(plan, strong=None)
    work = Path(args.work or ("runs/study-quick" if args.quick else "runs/study"))
    out = Path(args.out or (work / "results" if args.quick else HERE / "results" / "study"))
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    store = args.store or str(work / "labels.sqlite")

    if args.report_only:
        report = read_json(out / "study.json")
    else:
        try:
            report = run_study(plan, work, store, args.threads)
        except UserError as exc:  # e.g. the Qwen teacher's packages are not installed
            hint = " (or pass --no-strong)" if isinstance(exc, MissingDependencyError) and plan.strong else ""
            print(f"study: {exc}{hint}", file=sys.stderr)
            return 1
        report.update({**record(args.threads, "scikit-learn", "onnxruntime"), "store": store})
    table = markdown(report)
    write_report(out / "study.json", report, table)
    pngs = plot(report, out)
    print(table)
    print(f"wrote {out / 'study.json'}, {out / 'study.md'}, " + ", ".join(str(p) for p in pngs), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
