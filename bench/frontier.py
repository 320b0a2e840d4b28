"""The frontier: every student (static, tiny, MiniLM L2/L3/L6) on every built-in set, quality against speed.

Quality: for each dataset, student and seed, `llkd-edge distill DATASET --student S --limit 600 --eval-limit 200` (the
demo's settings: the default teacher, pool calibration and the relabelling probe); labels come from one store per
dataset, so only the first run asks the teacher. Each finished cell (teacher and student macro-F1 on the same 200
test texts) is kept in bench/results/frontier_cells.json under a hash of the run's settings, so the study grows
across machines and sessions: a cell already there is not trained again.

Speed (``--time``): on this machine, the seed-0 run of every student is exported (defaults: int8 behind the gate) and
every variant is timed through the torch-free runtime side by side in alternating rounds, in one process with the
same threads (``bench.static_student.time_side_by_side``: p50 at batch 1 and texts/s at batch 32 on the first 200
test texts, with no words kept and after the pool's words), and the teacher by `llkd-edge bench` on 50 of the texts.

    python -m bench.frontier [--datasets ...] [--students static,tiny,minilm-l2,minilm-l3,minilm-l6] [--seeds 0]
        [--time] [--stop-at HH:MM] [--work runs/frontier] [--report-only]

The cheap students go first over all sets, so a stopped study has the widest frontier it could. Writes
bench/results/frontier.json, .md and .png (macro-F1 against texts/s, log scale, one panel per set).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

from bench.common import RESULTS, arguments, command, current_export, finished_run, machine, markdown_table, save_plot, write_report
from bench.static_student import folder_mb, time_side_by_side
from llkd_edge.config import DistillConfig, LabelSet, ScoringConfig, TrainConfig, identity, stable_hash
from llkd_edge.config_deploy import BenchConfig, ExportConfig
from llkd_edge.data import builtin_spec
from llkd_edge.files import write_json

OUT = RESULTS / "frontier.json"
CELLS = RESULTS / "frontier_cells.json"
DATASETS = "bbc-news,20newsgroups,reuters-r8,election-tweets,slo-sentiment"
STUDENTS = "static,tiny,minilm-l2,minilm-l3,minilm-l6"


def config_for(dataset: str, student: str, seed: int, work: Path, threads: int) -> DistillConfig:
    spec = builtin_spec(dataset)
    scoring = ScoringConfig(labels=LabelSet.parse(spec.labels), task=spec.task)
    return DistillConfig(data=dataset, out=str(work / dataset / f"{student}-s{seed}"), scoring=scoring,
                         store=str(work / dataset / "labels.sqlite"), limit=600, eval_limit=200,
                         train=TrainConfig(student=student, seed=seed, threads=threads))


def cell_key(config: DistillConfig) -> str:
    """The cell's settings, less where its files live (so cells from any machine or folder meet)."""
    settings = identity(config)
    settings.pop("out", None)
    settings.pop("store", None)
    return stable_hash(_set(json.loads(json.dumps(settings))))[:16]


def _set(tree):
    """``tree`` less its None values: an option added after a cell was made leaves its key alone while it is off."""
    return {k: _set(v) for k, v in tree.items() if v is not None} if isinstance(tree, dict) else tree


def train(args, cells: dict) -> bool:
    """Fill the missing cells, cheap students first; False when ``--stop-at`` came first."""
    from llkd_edge.student.distill import distill

    work = Path(args.work)
    for student in args.students.split(","):
        for dataset in args.datasets.split(","):
            for seed in map(int, args.seeds.split(",")):
                config = config_for(dataset, student, seed, work, args.threads)
                key = cell_key(config)
                # the timing needs the seed-0 runs here, on this machine
                need_run = args.time and seed == 0
                if key in cells and not need_run:
                    continue
                if not finished_run(Path(config.out), config):
                    if args.stop_at and dt.datetime.now() >= _deadline(args.stop_at, START):
                        print(f"stopping before {dataset}/{student}/s{seed}: --stop-at {args.stop_at}", file=sys.stderr)
                        return False
                    print(f"[{dataset}] distilling {student}, seed {seed}", file=sys.stderr, flush=True)
                    distill(config, resume=True)
                m = json.loads((Path(config.out) / "metrics.json").read_text())
                cells[key] = {"dataset": dataset, "student": student, "seed": seed, "teacher": m["teacher"],
                              "student_scores": m["student"], "train_seconds": m.get("seconds", {}).get("train"),
                              "run_id": m.get("run_id")}
                write_json(CELLS, dict(sorted(cells.items(), key=lambda kv: _order(kv[1], args))))
    return True


START = dt.datetime.now()


def _deadline(hh_mm: str, start: dt.datetime) -> dt.datetime:
    """The first time of day ``hh_mm`` after ``start``."""
    hour, minute = map(int, hh_mm.split(":"))
    at = start.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return at if at > start else at + dt.timedelta(days=1)


def _order(cell: dict, args) -> tuple:
    datasets, students = DATASETS.split(","), STUDENTS.split(",")
    return (datasets.index(cell["dataset"]) if cell["dataset"] in datasets else 99,
            students.index(cell["student"]) if cell["student"] in students else 99, cell["seed"])


def time_all(args) -> dict:
    from llkd_edge.deploy.bench import run_bench
    from llkd_edge.deploy.export import export_run

    work = Path(args.work)
    out = {}
    for dataset in args.datasets.split(","):
        models = {}
        for student in args.students.split(","):
            run_dir = Path(config_for(dataset, student, 0, work, args.threads).out)
            model_dir = work / dataset / f"{student}-model"
            if not current_export(model_dir, run_dir):
                export_run(ExportConfig(run_dir=str(run_dir), out=str(model_dir), threads=args.threads))
            models[student] = model_dir
        speed = time_side_by_side(models, dataset, args.threads, args.rounds)
        for name, r in speed["results"].items():
            r["folder_mb"] = folder_mb(models[name.split()[0]])
        teacher_dir = models[next(iter(models))]
        teacher = run_bench(BenchConfig(model_dir=str(teacher_dir), limit=50, threads=args.threads,
                                        out=str(work / dataset / "teacher-bench")))
        out[dataset] = {"speed": speed, "teacher": teacher["results"]["teacher"]}
    return out


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--datasets", default=DATASETS)
    parser.add_argument("--students", default=STUDENTS)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--work", default="runs/frontier")
    parser.add_argument("--time", action="store_true", help="also export and time the seed-0 students on this machine")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stop-at", help="HH:MM: start no new distill run after this time of day (a study that "
                        "must leave the machine quiet by then)")
    parser.add_argument("--report-only", action="store_true", help="re-render the report and plot from the cells "
                        "and the last timing, training and timing nothing")
    args = parser.parse_args()
    cells = json.loads(CELLS.read_text()) if CELLS.exists() else {}
    done = True if args.report_only else train(args, cells)
    if not cells:
        return 0 if done else 3
    if args.report_only and not OUT.exists():
        raise SystemExit(f"--report-only: no {OUT} yet; run the study first")
    report = json.loads(OUT.read_text()) if OUT.exists() else {}
    if not args.report_only:
        report.update({"command": command(), "cells": str(CELLS.relative_to(RESULTS.parent.parent))})
    if args.time and done and not args.report_only:
        report.update({"machine": machine(args.threads), "speed": time_all(args)})
    markdown = render(report, cells)
    write_report(OUT, report, markdown)
    if report.get("speed"):
        plot(report, cells, OUT.with_suffix(".png"))
    print(markdown)
    return 0 if done else 3


def quality(cells: dict) -> dict:
    """(dataset, student) -> (student macro-F1s, teacher macro-F1s), over the seeds there are."""
    out: dict = {}
    latest = {(c["dataset"], c["student"], c["seed"]): c for c in cells.values()}  # one cell a seed
    for cell in latest.values():
        f1, t = out.setdefault((cell["dataset"], cell["student"]), ([], []))
        f1.append(cell["student_scores"]["macro_f1"])
        t.append(cell["teacher"]["macro_f1"])
    return out


def render(report: dict, cells: dict) -> str:
    by = quality(cells)
    datasets = [d for d in DATASETS.split(",") if any(k[0] == d for k in by)]
    students = [s for s in STUDENTS.split(",") if any(k[1] == s for k in by)]
    lines = [f"`{report['command']}`", "", "Student macro-F1 on 200 test texts (600 pool texts, the default teacher, "
             "pool calibration and relabelling; mean over the seeds run, their count in brackets); the teacher on the "
             "same texts:", ""]
    rows = []
    for s in students:
        rows.append([s] + [f"{np.mean(by[d, s][0]):.3f} ({len(by[d, s][0])})" if (d, s) in by else "-" for d in datasets])
    rows.append(["teacher"] + [f"{np.mean(sum((by[k][1] for k in by if k[0] == d), [])):.3f}" for d in datasets])
    lines += [markdown_table(["student", *datasets], rows), ""]
    if report.get("speed"):
        m = report["machine"]
        lines += [f"Speed through the runtime: {m.get('cpu')}; {m.get('threads')} threads; instruction sets: "
                  f"{m.get('instruction_sets', '?')}", ""]
        for dataset, d in report["speed"].items():
            teacher = d["teacher"]
            rows = [["teacher (llama.cpp)", "-", f"{teacher['p50_ms']:.1f}", f"{teacher['texts_per_s']:.2f}", "1x", "-"]]
            for name, r in d["speed"]["results"].items():
                student = name.split()[0]
                f1 = f"{np.mean(by[dataset, student][0]):.3f}" if (dataset, student) in by else "-"
                rows.append([name + (" (default)" if r["default"] else ""), f1 + f" / {r['macro_f1']:.3f}",
                             f"{r['p50_ms']:.3f} / {r['known']['p50_ms']:.3f}",
                             f"{r['texts_per_s']:.0f} / {r['pool']['texts_per_s']:.0f} / {r['known']['texts_per_s']:.0f}",
                             f"{teacher['p50_ms'] / r['p50_ms']:.0f}x", f"{r['folder_mb']:.1f}"])
            lines += [f"**{dataset}** ({d['speed']['texts']} test texts; macro-F1: the PyTorch student over seeds / "
                      "this variant of the seed-0 student; the runtime keeps each word's tokens, so speed is given "
                      "from no words kept / after the 600 pool texts / with every word kept):",
                      "", markdown_table(["model", "macro-F1", "p50 ms at batch 1 (new / known)",
                                          "texts/s at batch 32 (new / pool / known)", "p50 (new) vs teacher",
                                          "folder MB"], rows), ""]
    return "\n".join(lines)


def plot(report: dict, cells: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = report["speed"]
    cols = min(3, len(speed))
    rows = -(-(len(speed) + 1) // cols)  # a panel for the legend
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False)
    panels = axes.ravel()
    for ax, (dataset, d) in zip(panels, speed.items()):
        t = d["teacher"]
        teacher_f1 = np.mean(sum((v[1] for k, v in quality(cells).items() if k[0] == dataset), []))
        ax.scatter([t["texts_per_s"]], [teacher_f1], marker="s", color="black", label="teacher")
        for name, r in d["speed"]["results"].items():
            ax.scatter([r["texts_per_s"]], [r["macro_f1"]], marker="o" if "int8" in name else "^", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("texts/s at batch 32 (log)")
        ax.set_title(dataset)
        ax.set_ylabel("macro-F1 (200 test texts)")
    legend = panels[len(speed)]
    legend.legend(*panels[0].get_legend_handles_labels(), loc="center", fontsize=8, ncol=2)
    for ax in panels[len(speed):]:
        ax.axis("off")
    fig.tight_layout()
    save_plot(fig, path)


if __name__ == "__main__":
    sys.exit(main())
