"""`distill --student auto --max-latency-ms X`: the config's checks and the choice among timed candidates. The
timing itself (a real export through the runtime) is tested in tests/integration/test_latency.py; here it is
replaced by given figures, so the choosing is what is under test."""

import pytest

from llkd_edge.config import TrainConfig
from llkd_edge.deploy import latency
from llkd_edge.errors import UserError


def test_auto_and_a_budget_go_together_and_the_epochs_wait_for_the_choice():
    with pytest.raises(UserError, match="go together"):
        TrainConfig(student="auto")
    with pytest.raises(UserError, match="go together"):
        TrainConfig(student="minilm-l6", max_latency_ms=5)
    with pytest.raises(UserError, match="positive"):
        TrainConfig(student="auto", max_latency_ms=0)
    assert TrainConfig(student="auto", max_latency_ms=5).epochs is None  # the chosen student's own count, later
    assert TrainConfig(student="auto", max_latency_ms=5, epochs=2).epochs == 2


def test_the_candidates_are_every_registered_student_best_first():
    from llkd_edge.registry import registry

    names = latency.candidates()
    assert sorted(names) == sorted(registry("students")) and names[0] == "minilm-l6"


def test_the_best_candidate_within_the_budget_is_chosen_and_slower_better_ones_are_recorded(monkeypatch):
    speeds = {"minilm-l6": {"fp32": 20.0, "int8": 9.0}, "minilm-l3": {"fp32": 10.0, "int8": 4.5},
              "minilm-l2": {"fp32": 7.0, "int8": 3.0}, "static": {"fp32": 0.1, "int8": 0.12}, "tiny": {"fp32": 1.0}}
    asked = []
    monkeypatch.setattr(latency, "candidates", lambda: list(speeds))
    monkeypatch.setattr(latency, "timed", lambda name, *a: asked.append(name) or speeds[name])
    record = latency.choose(5.0, ["a", "b"], 128, 2, ["some text", " ", "more"])
    assert record["student"] == "minilm-l3" and asked == ["minilm-l6", "minilm-l3"]  # int8's 4.5 ms meets 5
    assert record["timed"]["minilm-l6"] == speeds["minilm-l6"] and record["max_latency_ms"] == 5.0
    assert latency.choose(0.5, ["a", "b"], 128, 2, ["x"])["student"] == "static"
    with pytest.raises(UserError, match=r"no student runs within 0.01 ms a text here: the fastest, static, takes 0.10 ms"):
        latency.choose(0.01, ["a", "b"], 128, 2, ["x"])
    with pytest.raises(UserError, match="no texts"):
        latency.choose(5.0, ["a", "b"], 128, 2, ["", "  "])


def test_timings_are_kept_per_machine_and_a_broken_cache_is_timed_again(monkeypatch, tmp_path):
    monkeypatch.setenv("LLKD_EDGE_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(latency, "measure", lambda name, *a: calls.append(name) or {"fp32": 1.5})
    assert latency.timed("tiny", ["a", "b"], 128, 2, ["x"]) == {"fp32": 1.5}
    assert latency.timed("tiny", ["a", "b"], 128, 2, ["x"]) == {"fp32": 1.5} and calls == ["tiny"]
    latency.timed("tiny", ["a", "b"], 64, 2, ["x"])  # another token budget: timed again
    assert calls == ["tiny", "tiny"]
    (tmp_path / "latency.json").write_text("[not a cache")
    assert latency.timed("tiny", ["a", "b"], 128, 2, ["x"]) == {"fp32": 1.5} and len(calls) == 3
