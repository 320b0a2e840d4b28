"""Issue 50 part 2's table: the default student with a probe-started head against a random head (bench/probe_head.sh).

Both variants of a cell share the label store, pool, test texts and seed, so the difference is the head and its rate.
The *gated* column is a rule read off the same cells, no run of its own: the probe head where a probe can follow the
teacher's labels (the signal test's kappa at least config.RELABEL_MIN_KAPPA, the line under which `--relabel probe`
stands aside), else the random head.

    python -m bench.probe_head_report      # writes bench/results/probe_head.{json,md}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.common import RESULTS, command, machine, markdown_table, write_report
from llkd_edge.config import RELABEL_MIN_KAPPA

RUNS = Path("runs/probe_head")
SETS = ("bbc-news", "20newsgroups", "reuters-r8", "20ng-hardware", "election-tweets", "slo-sentiment")
VARIANTS = ("random", "probe")
APART = {"probe3": "probe head, lr 3e-4", "random1": "random head, lr 1e-4"}  # head and rate apart (seeds 0-1)


def cell(dataset: str, variant: str, seed: int) -> dict | None:
    """The run's teacher and student macro-F1 on its test texts, or None when it is not there."""
    path = RUNS / f"{dataset}-{variant}-s{seed}" / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    return {"teacher": m["teacher"]["macro_f1"], "student": m["student"]["macro_f1"],
            "signal_kappa": ((m.get("teacher_health") or {}).get("signal") or {}).get("kappa"),
            "probe_fits_pool": (m["student_model"].get("head_probe") or {}).get("probe_fits_pool")}


def gated(random: dict, probe: dict) -> float:
    """The gated rule's student: the probe cell where the signal test's kappa clears the relabel gate."""
    kappa = random["signal_kappa"]
    return probe["student"] if kappa is not None and kappa >= RELABEL_MIN_KAPPA else random["student"]


def main() -> None:
    cells = {f"{d}/{v}/s{s}": cell(d, v, s) for d in SETS for v in (*VARIANTS, *APART) for s in range(3)}
    rows, summary = [], {}
    for d in SETS:
        seeds = [s for s in range(3) if all(cells[f"{d}/{v}/s{s}"] for v in VARIANTS)]  # paired seeds only
        if not seeds:
            continue
        got = {v: [cells[f"{d}/{v}/s{s}"]["student"] for s in seeds] for v in VARIANTS}
        got["gated"] = [gated(cells[f"{d}/random/s{s}"], cells[f"{d}/probe/s{s}"]) for s in seeds]
        kappa = float(np.mean([cells[f"{d}/random/s{s}"]["signal_kappa"] or 0.0 for s in seeds]))
        teacher = float(np.mean([cells[f"{d}/random/s{s}"]["teacher"] for s in seeds]))
        diff = np.subtract(got["probe"], got["random"])
        summary[d] = {"seeds": seeds, "teacher": round(teacher, 4),
                      "signal_kappa": round(kappa, 4), **{v: round(float(np.mean(got[v])), 4) for v in got},
                      "probe_minus_random": round(float(diff.mean()), 4), "worst_seed_diff": round(float(diff.min()), 4)}
        apart = []
        for v in APART:  # against the main pair on the seeds it has
            have = [s for s in seeds if cells[f"{d}/{v}/s{s}"]]
            got_v = [cells[f"{d}/{v}/s{s}"]["student"] for s in have]
            summary[d][v] = {"seeds": have, "mean": round(float(np.mean(got_v)), 4) if have else None}
            apart.append(f"{np.mean(got_v):.3f} ({', '.join(f'{x:.3f}' for x in got_v)})" if have else "-")
        rows.append([d, len(seeds), f"{kappa:.2f}", f"{teacher:.3f}",
                     *(f"{np.mean(got[v]):.3f} ({', '.join(f'{x:.3f}' for x in got[v])})" for v in got),
                     f"{diff.mean():+.3f} (worst {diff.min():+.3f})", *apart])
    table = markdown_table(["set", "seeds", "signal kappa", "teacher", "random head, lr 3e-4", "probe head, lr 1e-4",
                            f"gated (probe at kappa >= {RELABEL_MIN_KAPPA})", "probe - random", *APART.values()], rows)
    report = {"command": command(), "machine": machine(2), "cells": cells, "summary": summary}
    write_report(RESULTS / "probe_head.json", report,
                 f"`{command()}`\n\nStudent (minilm-l6) test macro-F1, mean (per seed); the teacher on the same texts.\n\n"
                 f"{table}\n")
    print(table)


if __name__ == "__main__":
    main()
