"""Wall time from an empty label store to an exported model: the whole pool labelled vs `--label-budget`.

Each variant runs the commands a user runs, `llkd-edge distill` then `llkd-edge export`, as subprocesses,
on the same bbc-news texts with the defaults (packaged teacher, default student), each from its own empty
store, one after the other in one run, so the ratios compare like with like on this machine:

* full:          every pool text labelled by the teacher
* B (fill):      `--label-budget B` (default strategy; the rest labelled by the rounds' probe, the default)
* B (no fill):   `--label-budget B --no-fill-rest` (the student learns the teacher's share alone)

The eval texts are labelled by the teacher in every variant (for its score beside the student's); their
time is inside `label` and shown apart as far as metrics.json tells it (`eval` below is the student's).

    python -m bench.budget_time [--texts 600] [--eval 100] [--budgets 0.4] [--threads N]

Writes bench/results/budget_time.json and .md and prints the table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, arguments, markdown_table, record, write_report

OUT = RESULTS / "budget_time.json"
CLI = [sys.executable, "-c", "from llkd_edge.cli import main; main()"]


def timed(args: list[str]) -> float:
    """Run one CLI command; its wall seconds. A failure stops the bench with the command's own message."""
    started = time.perf_counter()
    done = subprocess.run([*CLI, *args], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return time.perf_counter() - started


def variant(work: Path, name: str, extra: list[str], texts: int, eval_texts: int, threads: int) -> dict:
    run, model = work / f"run-{name}", work / f"model-{name}"
    common = ["bbc-news", "--limit", str(texts), "--eval-limit", str(eval_texts), "--threads", str(threads),
              "--store", str(work / f"{name}.sqlite")]  # an empty store of its own
    distill_s = timed(["distill", *common, *extra, "--out", str(run)])
    export_s = timed(["export", str(run), "--out", str(model), "--threads", str(threads)])
    m = json.loads((run / "metrics.json").read_text())
    b = m.get("label_budget") or {}
    return {"variant": name, "args": extra, "teacher_calls": m["labelled_now"]["pool"],
            "eval_teacher_calls": m["labelled_now"]["eval"],
            "trained_on": m["data"]["pool_size"] + m["data"].get("filled_size", 0), "rounds": len(b.get("rounds", [])),
            "seconds": {**m["seconds"], "distill": round(distill_s, 1), "export": round(export_s, 1),
                        "to_model": round(distill_s + export_s, 1)},
            "student_macro_f1": m["student"]["macro_f1"], "teacher_macro_f1": m["teacher"]["macro_f1"]}


def markdown(rows: list[dict]) -> str:
    full = rows[0]["seconds"]["to_model"]
    return markdown_table(
        ["variant", "teacher calls (pool)", "texts trained on", "rounds", "label s", "train s", "export s",
         "empty store -> model s", "vs full", "student macro-F1", "teacher macro-F1"],
        [[r["variant"], r["teacher_calls"], r["trained_on"], r["rounds"], f"{r['seconds']['label']:.0f}",
          f"{r['seconds']['train']:.0f}", f"{r['seconds']['export']:.0f}", f"{r['seconds']['to_model']:.0f}",
          f"{r['seconds']['to_model'] / full:.2f}", f"{r['student_macro_f1']:.3f}", f"{r['teacher_macro_f1']:.3f}"]
         for r in rows])


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--texts", type=int, default=600, help="pool texts (the first N of bbc-news' train split)")
    parser.add_argument("--eval", type=int, default=100, help="eval texts (the first N of its test split)")
    parser.add_argument("--budgets", type=float, nargs="*", default=[0.4],
                        help="label budgets to time beside the full pool (none: the full pool alone)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    plan = [("full", [])]
    for b in args.budgets:
        plan += [(f"{b:g} (fill)", ["--label-budget", f"{b:g}"]),
                 (f"{b:g} (no fill)", ["--label-budget", f"{b:g}", "--no-fill-rest"])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="budget-time-") as tmp:
        for name, extra in plan:
            print(f"{name}: distill + export ...", flush=True)
            rows.append(variant(Path(tmp), name.replace(" ", "").replace("(", "-").replace(")", ""), extra,
                                args.texts, args.eval, args.threads) | {"variant": name})
            print(markdown(rows), flush=True)
    report = {**record(args.threads), "texts": args.texts, "eval_texts": args.eval, "rows": rows}
    write_report(Path(args.out), report, markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
