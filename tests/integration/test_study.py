"""bench/study.py end to end on a tiny plan: real Gemma labels, real MiniLM students, tables and plots."""

import json
from dataclasses import replace



from bench import study

TINY = replace(study.QUICK, val=20, pool=48, test=24, seeds=(0, 1), methods=("llkd", "all"),
               curve_sizes=(24, 48), learning_rates=(1e-3,), epochs=1)


def test_tiny_study_runs_resumes_and_renders(tmp_path):
    store = str(tmp_path / "labels.sqlite")
    report = study.run_study(TINY, tmp_path, store, threads=2)
    cells = sorted((tmp_path / "cells").glob("*.json"))
    # tuning 1 + main 2 methods x 2 seeds + curve 2 sizes x 2 methods x 2 seeds, less the shared cells
    assert len(cells) == 8

    main = report["main"]["bbc-news"]
    assert {(c["method"], c["seed"]) for c in main} == {("llkd", 0), ("llkd", 1), ("all", 0), ("all", 1)}
    for c in main:
        assert c["pool_size"] == 48 and c["test"]["n"] == 24 and c["val"]["n"] == 20
        assert 0 <= c["test"]["macro_f1"] <= 1
    assert all(c["fraction_used"] == 1.0 and c["accuracy_skipped"] is None for c in main if c["method"] == "all")
    teacher = report["teachers"]["gemma3-270m|bbc-news"]
    assert teacher["test"]["n"] == 24 and teacher["reliability"]["n"] == 48 + 24
    assert sum(b["count"] for b in teacher["reliability"]["bins"]) == 48 + 24
    assert teacher["labelled_now"] == 48 + 24

    # a second run labels nothing and trains nothing: every cell comes back from disk
    stamps = {p.name: p.stat().st_mtime_ns for p in cells}
    again = study.run_study(TINY, tmp_path, store, threads=2)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")} == stamps
    assert again["teachers"]["gemma3-270m|bbc-news"]["labelled_now"] == 0
    assert again["main"] == json.loads(json.dumps(report["main"]))

    table = study.markdown(report)
    for needle in ("| student `llkd` |", "| student `all` |", "### Data budget", "| 24 |", "| 48 |", "ECE"):
        assert needle in table
    pngs = study.plot(report, tmp_path)
    assert [p.name for p in pngs] == ["study_methods.png", "study_budget.png", "study_reliability.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
