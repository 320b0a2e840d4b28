"""Students at the edge: each student size distilled, exported and timed against the teacher.

For each student: `llkd-edge distill bbc-news` with the demo's settings (600 pool texts, 200 test texts;
labels come from the store after the first run), `llkd-edge export` (O2, int8 behind the gate), then
`llkd-edge bench` on the first 100 test texts: teacher, PyTorch, ONNX fp32 and int8 side by side in one
process with the same threads. Ratios are taken within each bench run, never across runs.

    python -m bench.edge_students [--students minilm-l6,minilm-l3,minilm-l2] [--work runs/edge]

Writes bench/results/edge_students.json and prints a Markdown table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.common import RESULTS, arguments, command, markdown_table, write_report
from llkd_edge.deploy.bench import run_bench
from llkd_edge.config import (
    BenchConfig,
    DistillConfig,
    ExportConfig,
    LabelSet,
    ScoringConfig,
    TrainConfig,
)
from llkd_edge.data import builtin_spec
from llkd_edge.student.distill import distill
from llkd_edge.deploy.export import export_run

OUT = RESULTS / "edge_students.json"


def main() -> int:
    parser = arguments(__doc__, threads=False)
    parser.add_argument("--students", default="minilm-l6,minilm-l3,minilm-l2")
    parser.add_argument("--work", default="runs/edge")
    parser.add_argument("--store", default="runs/demo/labels.sqlite")
    parser.add_argument("--limit", type=int, default=100, help="texts timed per bench run")
    args = parser.parse_args()

    spec = builtin_spec("bbc-news")
    scoring = ScoringConfig(labels=LabelSet.parse(spec.labels), task=spec.task)
    rows = []
    for name in args.students.split(","):
        run_dir, model_dir = Path(args.work) / name / "run", Path(args.work) / name / "model"
        if not (run_dir / "metrics.json").exists():
            distill(DistillConfig(data="bbc-news", out=str(run_dir), scoring=scoring, train=TrainConfig(student=name),
                                  store=args.store, limit=600, eval_limit=200))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        report = export_run(ExportConfig(run_dir=str(run_dir), out=str(model_dir)))
        bench = run_bench(BenchConfig(model_dir=str(model_dir), limit=args.limit))
        rows.append({"student": name, "eval_200": {"teacher": metrics["teacher"], "student": metrics["student"]},
                     "export": {k: report[k] for k in ("default", "default_reason")}, "bench": bench})

    write_report(OUT, {"command": command(), "results": rows})
    b0 = rows[0]["bench"]
    print(f"{b0['texts']} BBC News test texts, the same for every row; {b0['machine']['threads']} threads, "
          f"{b0['machine']['cpu']}; latency at batch 1, throughput at batch {b0['batch_size']}\n")
    table = []
    for row in rows:
        r = row["bench"]["results"]
        for variant in ("teacher", "pytorch", "onnx-fp32", "onnx-int8"):
            v = r[variant]
            mark = " (default)" if variant == row["bench"]["default_variant"] else ""
            vs_torch = "-" if variant == "teacher" else f"{r['pytorch']['p50_ms'] / v['p50_ms']:.1f}x"
            table.append([row["student"], variant + mark, f"{v['size_mb']:.0f}", f"{v['accuracy']:.3f}",
                          f"{v['macro_f1']:.3f}", f"{v['p50_ms']:.1f}", f"{v['p95_ms']:.1f}", f"{v['texts_per_s']:.1f}",
                          vs_torch, f"{r['teacher']['p50_ms'] / v['p50_ms']:.0f}x"])
    print(markdown_table(["student", "model", "size MB", "accuracy", "macro-F1", "p50 ms", "p95 ms", "texts/s",
                          "p50 vs PyTorch", "p50 vs teacher"], table))
    print(f"\nwrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
