"""Issue 47's student table: `distill --teacher auto` against today's default teacher (bench/auto_teacher.sh).

Each auto cell is paired with bench/probe_head.sh's `random` cell of the same set and seed (the default student,
LLM labels, same pool, test texts and settings), so the difference is the teacher the student learnt from.

    python -m bench.auto_teacher_report      # writes bench/results/auto_teacher.{json,md}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.common import RESULTS, command, machine, markdown_table, write_report

AUTO, BASE = Path("runs/auto_teacher"), Path("runs/probe_head")
SETS = ("bbc-news", "20newsgroups", "reuters-r8", "20ng-hardware", "election-tweets", "slo-sentiment")


def cell(path: Path) -> dict | None:
    """The run's teacher choice, and its teacher's and student's macro-F1 on its test texts (None: not there)."""
    if not (path / "metrics.json").is_file():
        return None
    m = json.loads((path / "metrics.json").read_text())
    choice = m.get("teacher_choice") or {}
    return {"teacher": m["teacher"]["macro_f1"], "student": m["student"]["macro_f1"],
            "taken": choice.get("teacher"), "agreement": choice.get("agreement")}


def fmt(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})"


def main() -> None:
    cells = {f"{d}/{v}/s{s}": cell((AUTO if v == "auto" else BASE) / f"{d}-{v}-s{s}")
             for d in SETS for v in ("auto", "random") for s in range(3)}
    rows, summary = [], {}
    for d in SETS:
        seeds = [s for s in range(3) if cells[f"{d}/auto/s{s}"] and cells[f"{d}/random/s{s}"]]
        if not seeds:
            continue
        auto, base = ([cells[f"{d}/{v}/s{s}"] for s in seeds] for v in ("auto", "random"))
        diff = np.subtract([c["student"] for c in auto], [c["student"] for c in base])
        taken = sorted({c["taken"] for c in auto})
        summary[d] = {"seeds": seeds, "taken": taken, "agreement": auto[0]["agreement"],
                      "teacher": {"llm": round(float(np.mean([c["teacher"] for c in base])), 4),
                                  "auto": round(float(np.mean([c["teacher"] for c in auto])), 4)},
                      "student": {"llm": round(float(np.mean([c["student"] for c in base])), 4),
                                  "auto": round(float(np.mean([c["student"] for c in auto])), 4)},
                      "student_diff": [round(float(x), 4) for x in diff]}
        rows.append([d, len(seeds), ", ".join(taken), f"{auto[0]['agreement']:.2f}",
                     f"{np.mean([c['teacher'] for c in base]):.3f}", f"{np.mean([c['teacher'] for c in auto]):.3f}",
                     fmt([c["student"] for c in base]), fmt([c["student"] for c in auto]),
                     f"{diff.mean():+.3f} ({', '.join(f'{x:+.3f}' for x in diff)})",
                     f"{np.mean([c['student'] - c['teacher'] for c in auto]):+.3f}"])
    table = markdown_table(["set", "seeds", "--teacher auto took", "agreement", "teacher: LLM", "teacher: auto",
                            "student, LLM's labels", "student, auto's labels", "auto - LLM (per seed)",
                            "auto student - its teacher"], rows)
    probe_rows = []  # the probe head (lr 1e-4) on auto's labels, seed 0, beside the random head and the LLM's labels
    for d in SETS:
        got = {v: cell((AUTO if v.startswith("auto") else BASE) / f"{d}-{v}-s0")
               for v in ("random", "probe", "auto", "autoprobe")}
        if got["autoprobe"] and all(got.values()):
            cells[f"{d}/autoprobe/s0"] = got["autoprobe"]
            probe_rows.append([d, f"{got['auto']['teacher']:.3f}",
                               *(f"{got[v]['student']:.3f}" for v in ("random", "probe", "auto", "autoprobe"))])
    if probe_rows:
        table += "\n\nThe probe head (lr 1e-4) on auto's labels, seed 0: student test macro-F1\n\n" + markdown_table(
            ["set", "auto's teacher", "LLM labels, random head", "LLM labels, probe head", "auto, random head",
             "auto, probe head"], probe_rows)
    write_report(RESULTS / "auto_teacher.json", {"command": command(), "machine": machine(2), "cells": cells,
                                                 "summary": summary},
                 f"`{command()}`\n\nDefault student (minilm-l6, random head, lr 3e-4) test macro-F1, mean (per seed), "
                 f"and each teacher on the same test texts.\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
