"""`distill --student auto --max-latency-ms X` for real: a candidate exported untrained and timed through the
runtime, and a run that trains the chosen student on the shared small BBC run's labels (its store: no teacher
call). Only the tiny student is a candidate here (the ranking is not under test; the others take minutes)."""

import json

from click.testing import CliRunner

from llkd_edge.cli import main
from llkd_edge.deploy import latency


def test_an_untrained_candidate_is_exported_and_timed_through_the_runtime(bbc_test):
    timed = latency.measure("tiny", ["business", "politics", "sport"], 64, 1, bbc_test.texts[:16])
    assert set(timed) == {"fp32", "int8"} and all(0 < ms < 1000 for ms in timed.values())


def test_distill_auto_trains_the_student_that_meets_the_budget_and_records_the_choice(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(latency, "candidates", lambda: ["tiny"])
    monkeypatch.setattr(latency, "cache_dir", lambda: tmp_path / "cache")
    store = run_dir.parent / "labels.sqlite"
    args = ["distill", "bbc-news", "--limit", "240", "--eval-limit", "60", "--max-text-tokens", "64", "--max-length", "64",
            "--batch-size", "16", "--epochs", "1", "--store", str(store), "--student", "auto"]
    # a budget no candidate meets: one line naming the fastest, before any teacher time, and nothing trained
    result = CliRunner().invoke(main, [*args, "--max-latency-ms", "0.0001", "--out", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no student runs within 0.0001 ms a text here: the fastest, tiny" in result.output
    assert not (tmp_path / "none" / "student").exists()
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [*args, "--max-latency-ms", "10000", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student_model"]["name"] == "tiny" and metrics["student_choice"]["student"] == "tiny"
    assert set(metrics["student_choice"]["timed"]["tiny"]) == {"fp32", "int8"}
    config = json.loads((out / "config.json").read_text())
    assert config["identity"]["train"]["student"] == "auto" and config["identity"]["train"]["max_latency_ms"] == 10000
    assert json.loads((out / "student_choice.json").read_text())["student"] == "tiny"
