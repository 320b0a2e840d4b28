"""The static-embedding student against MiniLM-L6 and the teacher: quality over seeds, speed side by side.

For each dataset and seed: `llkd-edge distill DATASET --limit 600 --eval-limit 200` (the demo's settings: the default
teacher, pool calibration and the relabelling probe) with each student; labels come from one store per dataset, so
only the first run asks the teacher. Then the seed-0 run of each student is exported (defaults: int8 behind the
gate) and every variant of every student is timed through the torch-free runtime in alternating rounds, in one
process with the same threads: p50 latency at batch 1 and texts/s at batch 32 on the dataset's first 200 test texts.
The teacher is timed by `llkd-edge bench` on the static student's folder (its first 100 texts), so the static
student's ratio to it comes from one run.

    python -m bench.static_student [--datasets bbc-news,20newsgroups] [--seeds 0,1,2]
        [--students static,static@512,minilm-l6] [--work runs/static-study]

Resumable: finished runs, exports and bench reports are reused. Writes bench/results/static_student.json, .md
and .png (macro-F1 against texts/s).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from bench.common import (RESULTS, arguments, command, current_export, finished_run, machine, markdown_table, save_plot,
                          write_report)
from llkd_edge.config import DistillConfig, LabelSet, ScoringConfig, TrainConfig
from llkd_edge.config_deploy import BenchConfig, ExportConfig
from llkd_edge.data import builtin_spec, load_builtin
from llkd_edge.deploy.bench import latencies, run_bench, summarise_latency, throughput
from llkd_edge.deploy.export import export_run
from llkd_edge.metrics import classification_scores
from llkd_edge.runtime import Classifier, read_manifest
from llkd_edge.student.distill import distill

OUT = RESULTS / "static_student.json"
TIMED_TEXTS = 200


def folder_mb(folder: Path) -> float:
    files = [p for p in folder.rglob("*") if p.is_file() and "bench" not in p.relative_to(folder).parts]
    return round(sum(p.stat().st_size for p in files) / 1e6, 2)


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--datasets", default="bbc-news,20newsgroups")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--students", default="static,static@512,minilm-l6",
                        help="NAME or NAME@TOKENS (the student's token budget; 128 otherwise)")
    parser.add_argument("--work", default="runs/static-study")
    parser.add_argument("--bbc-store", default="runs/demo/labels.sqlite", help="the demo's store: its labels are reused")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-only", action="store_true", help="only the distill runs (time later, on a quiet machine)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    students = args.students.split(",")
    work = Path(args.work)
    report = {"command": command(), "machine": machine(args.threads), "datasets": {}}
    for dataset in args.datasets.split(","):
        spec = builtin_spec(dataset)
        scoring = ScoringConfig(labels=LabelSet.parse(spec.labels), task=spec.task)
        store = args.bbc_store if dataset == "bbc-news" else str(work / dataset / "labels.sqlite")
        runs: dict[str, list[dict]] = {s: [] for s in students}
        for seed in seeds:
            for student in students:
                run_dir = work / dataset / f"{student}-s{seed}"
                name, _, max_length = student.partition("@")  # NAME@TOKENS: another token budget than 128
                train = TrainConfig(student=name, seed=seed, threads=args.threads, max_length=int(max_length or 128))
                config = DistillConfig(data=dataset, out=str(run_dir), scoring=scoring, store=store, limit=600,
                                       eval_limit=200, train=train)
                if not finished_run(run_dir, config):
                    print(f"[{dataset}] distilling {student}, seed {seed}", file=sys.stderr, flush=True)
                    distill(config, resume=True)
                m = json.loads((run_dir / "metrics.json").read_text())
                runs[student].append({"seed": seed, "teacher": m["teacher"], "student": m["student"],
                                      "train_seconds": m.get("seconds", {}).get("train")})
        if args.train_only:
            continue
        models = {}
        for student in students:
            run_dir, model_dir = work / dataset / f"{student}-s{seeds[0]}", work / dataset / f"{student}-model"
            if not current_export(model_dir, run_dir):
                export_run(ExportConfig(run_dir=str(run_dir), out=str(model_dir), threads=args.threads))
            models[student] = model_dir
        speed = time_side_by_side(models, dataset, args.threads, args.rounds)
        teacher_bench = models.get("static", next(iter(models.values()))) / "bench" / "bench.json"
        if not teacher_bench.exists():
            run_bench(BenchConfig(model_dir=str(teacher_bench.parent.parent), limit=100, threads=args.threads))
        report["datasets"][dataset] = {"runs": runs, "speed": speed,
                                       "teacher_bench": json.loads(teacher_bench.read_text())}
    if args.train_only:
        return 0
    markdown = render(report)
    write_report(OUT, report, markdown)
    plot(report, OUT.with_suffix(".png"))
    print(markdown)
    return 0


def begin(clf: Classifier, start: str, pool: list[str], texts: list[str]) -> None:
    """Before a timed pass: no words kept, then (``pool``) the pool's texts run through, or (``known``) the timed
    texts themselves (every word kept: an app whose traffic repeats its words)."""
    clf.forget_words()
    if start == "pool":
        clf.logits(pool)
    elif start == "known":
        clf.logits(texts)


def time_side_by_side(models: dict[str, Path], dataset: str, threads: int, rounds: int) -> dict:
    """Every variant of every student, alternating rounds, the best per text; quality on the same texts.

    The runtime keeps each word's tokens (``Classifier.forget_words``), so each timing is taken twice: from nothing
    kept (``new``: every word of the test texts is tokenized as it comes) and after the 600 pool texts the student
    learnt from went through it (``pool``: an app that has seen its domain), and after the timed texts themselves
    (``known``: every word kept). Rounds repeat the texts, so the words are forgotten (and the pool or the texts run
    again) before every timed pass."""
    test = load_builtin(f"{dataset}:test")
    texts, gold = test.texts[:TIMED_TEXTS], test.gold[:TIMED_TEXTS]
    pool = load_builtin(dataset).texts[:600]
    contenders = {}
    for student, folder in models.items():
        manifest = read_manifest(folder)
        for variant in manifest["variants"]:
            clf = Classifier.load(folder, variant=variant, threads=threads, device="cpu")
            contenders[f"{student} {variant}"] = (clf, folder, manifest["default"] == variant)
    starts = ("new", "pool", "known")
    best = {(name, s): np.full(len(texts), np.inf) for name in contenders for s in starts}
    rate = {(name, s): 0.0 for name in contenders for s in starts}
    for name, (clf, _, _) in contenders.items():
        clf.logits(texts[:8])  # warm-up
    for _ in range(rounds):
        for name, (clf, _, _) in contenders.items():
            for start in starts:
                begin(clf, start, pool, texts)
                best[name, start] = np.minimum(best[name, start], latencies(lambda b, c=clf: c.logits(b, 1), texts))
                begin(clf, start, pool, texts)
                rate[name, start] = max(rate[name, start], throughput(lambda b, c=clf: c.logits(b, 32), texts))
    out = {}
    for name, (clf, folder, default) in contenders.items():
        predicted = clf.predict(texts)
        scores = classification_scores(gold, predicted, list(clf.labels))
        out[name] = {**summarise_latency(best[name, "new"]), "texts_per_s": round(rate[name, "new"], 1),
                     **{start: {**summarise_latency(best[name, start]), "texts_per_s": round(rate[name, start], 1)}
                        for start in starts[1:]},
                     "default": default, "file_mb": round(clf.path.stat().st_size / 1e6, 2),
                     "folder_mb": folder_mb(folder),
                     "macro_f1": round(scores["macro_f1"], 4), "accuracy": round(scores["accuracy"], 4)}
    return {"texts": len(texts), "batch_size": 32, "rounds": rounds, "results": out}


def render(report: dict) -> str:
    m = report["machine"]
    lines = [f"`{report['command']}`", "", f"{m.get('cpu')}; {m.get('threads')} threads; instruction sets: "
             f"{m.get('instruction_sets', m.get('flags', '?'))}", ""]
    for dataset, d in report["datasets"].items():
        rows = []
        for student, runs in d["runs"].items():
            f1 = [r["student"]["macro_f1"] for r in runs]
            t = [r["teacher"]["macro_f1"] for r in runs]
            rows.append([student, ", ".join(f"{x:.3f}" for x in f1), f"{np.mean(f1):.3f}", f"{np.mean(t):.3f}"])
        lines += [f"### {dataset}: macro-F1 on 200 test texts, by seed", "",
                  markdown_table(["student", "by seed", "mean", "teacher (same texts)"], rows), ""]
        tb = d["teacher_bench"]["results"]
        teacher_p50, teacher_rate = tb["teacher"]["p50_ms"], tb["teacher"]["texts_per_s"]
        rows = [["teacher (llama.cpp)", "-", f"{tb['teacher']['p50_ms']:.1f}", "-", f"{teacher_rate:.2f}", "-", "1x",
                 "-", "-"]]
        for name, r in d["speed"]["results"].items():
            pool = r.get("pool", {})
            rows.append([name + (" (default)" if r["default"] else ""), f"{r['macro_f1']:.3f}", f"{r['p50_ms']:.3f}",
                         f"{pool.get('p50_ms', float('nan')):.3f}", f"{r['texts_per_s']:.0f}",
                         f"{pool.get('texts_per_s', float('nan')):.0f}", f"{teacher_p50 / r['p50_ms']:.0f}x",
                         f"{r['file_mb']:.1f}", f"{r['folder_mb']:.1f}"])
        lines += [f"Speed through the runtime ({d['speed']['texts']} test texts, seed-0 students; batch 1 latency, "
                  f"texts/s at batch 32; *new*: no words kept, *pool*: after the 600 pool texts); the teacher from "
                  f"`llkd-edge bench` on the static folder (100 texts):", "",
                  markdown_table(["model", "macro-F1", "p50 ms new", "p50 ms pool", "texts/s new", "texts/s pool",
                                  "p50 (new) vs teacher", "file MB", "folder MB"], rows), ""]
        own = d["teacher_bench"].get("ratios", {})
        lines += [f"Within that one `llkd-edge bench` run: {json.dumps(own)}", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report["datasets"]), figsize=(6 * len(report["datasets"]), 4.5), squeeze=False)
    for ax, (dataset, d) in zip(axes[0], report["datasets"].items()):
        tb = d["teacher_bench"]["results"]["teacher"]
        ax.scatter([tb["texts_per_s"]], [tb.get("macro_f1", np.nan)], marker="s", color="black", label="teacher")
        for name, r in d["speed"]["results"].items():
            ax.scatter([r["texts_per_s"]], [r["macro_f1"]], label=name)
        ax.set_xscale("log")
        ax.set_xlabel("texts/s at batch 32 (log scale)")
        ax.set_ylabel("macro-F1")
        ax.set_title(dataset)
        ax.legend(fontsize=8)
    save_plot(fig, path)


if __name__ == "__main__":
    sys.exit(main())
