"""Every --selection method on one built-in dataset, same teacher labels, same student, same eval texts.

    python bench/selection_methods.py bbc-news [--limit N] [--eval-limit N] [--student minilm-l2]
        [--epochs 4] [--seed 0] [--store /path/labels.sqlite]

Teacher labels come from (and go to) the label store, so only the first run pays for labelling. Each
method trains from the same initial student (same seed) on the same pool. Writes
bench/results/selection_<dataset>.json and prints a Markdown table with the teacher's score on the same
eval texts. One seed only: differences of a point or two are within seed noise (see issue 5's study).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from llkd_edge.config import DistillConfig, LabelSet, ScoringConfig, TeacherConfig, TrainConfig
from llkd_edge.data import load_builtin
from llkd_edge.distill import distill
from llkd_edge.labelling import load_teacher
from llkd_edge.selection import METHODS

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--eval-limit", type=int)
    parser.add_argument("--student", default="minilm-l2")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", default="labels.sqlite")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--min-per-class", type=int, default=5)
    args = parser.parse_args()

    test = load_builtin(f"{args.dataset}:test")
    scoring = ScoringConfig(labels=LabelSet.parse(test.labels), task=test.task)
    teacher_config = TeacherConfig()
    teacher = load_teacher(scoring, teacher_config)  # loaded once, shared by every method
    rows = []
    work = Path(tempfile.mkdtemp(prefix="llkd-selection-"))
    try:
        for method in args.methods.split(","):
            config = DistillConfig(
                data=args.dataset,
                out=str(work / method),
                scoring=scoring,
                teacher=teacher_config,
                train=TrainConfig(student=args.student, selection=method, epochs=args.epochs, seed=args.seed),
                store=args.store,
                limit=args.limit,
                eval_limit=args.eval_limit,
                min_per_class=args.min_per_class,
            )
            m = distill(config, teacher_factory=lambda *_: teacher)
            rows.append({"method": method, "student": m["student"], "teacher": m["teacher"],
                         "fraction_used": m["selection"]["fraction_used"],
                         "selected_per_epoch": m["selection"]["selected_per_epoch"],
                         "train_seconds": m["seconds"]["train"], "pool_size": m["data"]["pool_size"],
                         "eval_size": m["data"]["eval_size"], "pool_teacher": m["pool_teacher"]})
            print(f"{method}: student macro-F1 {m['student']['macro_f1']:.3f}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        teacher.close()

    report = {"command": "python " + " ".join(sys.argv), "dataset": args.dataset, "student": args.student,
              "epochs": args.epochs, "seed": args.seed, "min_per_class": args.min_per_class, "results": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"selection_{args.dataset}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")

    t = rows[0]["teacher"]
    print(f"{args.dataset}: pool {rows[0]['pool_size']} texts (pseudo-label accuracy "
          f"{rows[0]['pool_teacher']['accuracy'] if rows[0]['pool_teacher'] else 'n/a'}), "
          f"eval {rows[0]['eval_size']} texts, student {args.student}, {args.epochs} epochs, seed {args.seed}\n")
    print("| model | accuracy | macro-F1 | pool used | train s |")
    print("|---|---|---|---|---|")
    print(f"| teacher (gemma3-270m, zero-shot) | {t['accuracy']:.3f} | {t['macro_f1']:.3f} | - | - |")
    for r in rows:
        s = r["student"]
        print(f"| student, `{r['method']}` | {s['accuracy']:.3f} | {s['macro_f1']:.3f} | "
              f"{r['fraction_used']:.1%} | {r['train_seconds']:.0f} |")
    print(f"\nmajority class: {t['majority_rate']:.3f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
