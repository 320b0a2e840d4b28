"""The pure parts of `evolve`: weakness analysis, request planning, prompts, parsing, screening, verifying."""

import json

import numpy as np
import pytest

from llkd_edge.config import EvolveConfig
from llkd_edge.errors import UserError
from llkd_edge.student.synthesis import (
    Request,
    Weakness,
    analyse,
    generation_schema,
    text_chars,
    parse_texts,
    plan_requests,
    request_prompt,
    screen,
    verify,
)
from llkd_edge.store import LabelRow

LABELS = ["business", "politics", "sport"]
WORDS = {"business": "business", "politics": "politics", "sport": "sport"}


def one_hot(names, confidence=0.8):
    k = len(LABELS)
    probs = np.full((len(names), k), (1 - confidence) / (k - 1))
    for i, name in enumerate(names):
        probs[i, LABELS.index(name)] = confidence
    return probs


def test_analyse_counts_errors_per_class_and_orders_confusions_and_mistakes():
    reference = ["business"] * 4 + ["politics"] * 2 + ["sport"] * 2
    predicted = ["politics", "politics", "sport", "business", "politics", "politics", "sport", "sport"]
    probs = one_hot(predicted)
    probs[2] = [0.05, 0.05, 0.9]  # the most confident mistake
    texts = [f"t{i}" for i in range(8)]
    w = analyse(texts, reference, probs, LABELS)
    assert w.support == [4, 2, 2]
    assert w.error_rate == [0.75, 0.0, 0.0]
    assert w.confusions == [("business", "politics", 2), ("business", "sport", 1)]
    assert w.worst_confusion("business") == "politics" and w.worst_confusion("sport") is None
    assert [m["text"] for m in w.mistakes] == ["t2", "t0", "t1"]  # wrong ones only, most confident first
    assert w.accuracy == pytest.approx(5 / 8)


def test_a_label_without_validation_texts_has_no_error_rate():
    w = analyse(["a", "b"], ["business", "politics"], one_hot(["business", "business"]), LABELS)
    assert w.error_rate == [0.0, 1.0, None]
    with pytest.raises(ValueError, match="shape"):
        analyse(["a"], ["business"], np.ones((2, 3)) / 3, LABELS)


def weakness(error_rate, confusions=()):
    return Weakness(LABELS, [10, 10, 10], list(error_rate), list(confusions), [], 0.5, 0.5)


def test_requests_follow_the_error_rates_and_aim_hard_ones_at_the_worst_confusion():
    w = weakness([0.7, 0.2, 0.0], [("business", "politics", 7), ("politics", "business", 2)])
    requests = plan_requests(w, per_round=20, per_request=4, hard_share=0.75)
    per_label = {lab: sum(r.n for r in requests if r.label == lab) for lab in LABELS}
    assert sum(per_label.values()) == 20
    assert per_label["business"] > per_label["politics"] > per_label["sport"] > 0  # every label keeps a share
    business = [r for r in requests if r.label == "business"]
    hard = sum(r.n for r in business if r.versus == "politics")
    assert hard == round(per_label["business"] * 0.75)
    assert all(r.versus is None for r in requests if r.label == "sport")  # no confusion: easy texts only
    assert all(1 <= r.n <= 4 for r in requests)


def test_a_perfect_student_still_gets_easy_requests_for_every_label():
    requests = plan_requests(weakness([0.0, 0.0, 0.0]), per_round=6, per_request=4, hard_share=0.75)
    assert sorted((r.label, r.n, r.versus) for r in requests) == [("business", 2, None), ("politics", 2, None),
                                                                  ("sport", 2, None)]


def test_the_prompt_names_the_confusion_and_shows_the_mistakes_it_returns():
    mistakes = [{"text": "Shares in the chipmaker fell " * 40, "label": "business", "predicted": "politics",
                 "confidence": 0.9},
                {"text": "other", "label": "sport", "predicted": "politics", "confidence": 0.8}]
    w = Weakness(LABELS, [5, 5, 5], [0.6, 0.0, 0.2], [("business", "politics", 3), ("sport", "politics", 1)],
                 mistakes, 0.7, 0.6)
    prompt, shown = request_prompt(Request("business", 3, "politics"), w, "Classify the news.", WORDS, ["style"], 3)
    assert shown[0].endswith(" ...") and len(shown[0].split()) == 61  # the excerpt the prompt shows
    assert shown[0] in prompt
    assert "Write 3 new texts whose correct label is clearly business" in prompt and "mistake for politics" in prompt
    assert "business: 60% wrong, most often taken for politics" in prompt
    assert "(the student said politics)" in prompt and "..." in prompt  # long examples are cut
    easy, shown = request_prompt(Request("politics", 2), w, "Classify the news.", WORDS, ["a politics text"], 3)
    assert shown == ["a politics text"] and "typical texts" in easy  # no mistakes of the label: style examples


def test_generations_parse_only_when_they_hold_the_asked_number_of_texts():
    assert parse_texts('{"texts": ["a  b\\n c", "d"]}', 2) == ["a b c", "d"]
    assert parse_texts('{"texts": ["raw\ttab and\nnewline", "d"]}', 2) == ["raw tab and newline", "d"]
    for raw, why in [('{"texts": ["a"', "not JSON"), ('{"text": ["a"]}', "no \"texts\""),
                     ('{"texts": ["a"]}', "1 texts, asked for 2"), ('["a", "b"]', "no \"texts\"")]:
        with pytest.raises(ValueError, match=why):
            parse_texts(raw, 2)
    schema = generation_schema(3)
    assert schema["properties"]["texts"]["minItems"] == schema["properties"]["texts"]["maxItems"] == 3
    json.dumps(schema)


def test_text_length_is_capped_so_every_text_fits_the_token_budget():
    assert text_chars(4, 960) == 700  # the default budget: the cap
    assert text_chars(2, 240) == 344 and 2 * 344 <= 240 * 3  # 2 texts in 240 tokens at >= 3 characters a token
    assert text_chars(8, 100) == 80  # never below twice the minimum length


POOL = ["The central bank raised interest rates by a quarter point to curb inflation on Thursday.",
        "The striker scored twice as the champions came from behind to win the derby at home."]


def test_screening_drops_short_texts_copies_of_the_prompt_and_duplicates():
    shown = "Parliament voted on the new immigration bill after a long and bitter debate in the chamber."
    candidates = [
        "Too short to keep.",
        "Parliament voted on the new immigration bill after a long and bitter debate in the chamber today.",
        "The central bank raised interest rates by a quarter point to curb inflation on Thursday!",
        "A fresh budget for rural schools was unveiled by the education minister in a speech to teachers.",
        "A fresh budget for rural schools was unveiled by the education minister in a speech to teachers.",
        "The carmaker reported record quarterly profits as sales of its electric models doubled in Europe.",
    ]
    verdicts = screen(candidates, [[shown]] * len(candidates), POOL, min_words=8, threshold=0.85)
    assert verdicts == ["too_short", "copies_prompt", "duplicate", None, "duplicate", None]
    assert screen([], [], POOL, 8, 0.85) == []


def row(label, confidence):
    return LabelRow("t", (confidence, 1 - confidence), label, confidence, 0.5, 0.9, 10, False)


def test_verification_needs_the_intended_label_with_enough_confidence():
    rows = [row("business", 0.9), row("business", 0.45), row("politics", 0.9)]
    assert verify(["business", "business", "business"], rows, 0.5) == [None, "low_confidence", "teacher_disagrees"]
    with pytest.raises(ValueError):
        verify(["business"], rows, 0.5)


@pytest.mark.parametrize("field,value,message", [
    ("rounds", 0, "--rounds must be at least 1"),
    ("min_confidence", 1.5, "--min-confidence must be in"),
    ("val_labels", "silver", "unknown --val-labels"),
    ("timeout_s", 0, "--timeout must be positive"),
    ("retries", -1, "--retries must be at least 0"),
])
def test_bad_evolve_settings_are_one_line_errors(field, value, message):
    with pytest.raises(UserError, match=message):
        EvolveConfig(run_dir="r", out="o", **{field: value})


def fake_run(folder, limit=None, evolve=None):
    """A finished distill run's files, minimal: enough for evolve to read before it needs a model."""
    (folder / "student").mkdir(parents=True)
    (folder / "student" / "config.json").write_text("{}")
    config = {"data": "bbc-news", "limit": limit, "store": str(folder / "labels.sqlite"), "text_column": "text",
              "label_column": None, "eval_limit": None, "train": {"max_length": 64}, "scoring": {"few_shot": []}}
    teacher = {"sha256": "teacher-sha", "config_hash": "config-hash"}
    (folder / "config.json").write_text(json.dumps({"config": config, "teacher": teacher,
                                                    **({"evolve": evolve} if evolve else {})}))
    (folder / "metrics.json").write_text(json.dumps({"data": {"labels": LABELS, "eval": None, "pool_size": 3}}))
    return folder


@pytest.mark.parametrize("case", ["missing", "not a run", "all data used", "out is the run", "an evolve run"])
def test_evolve_bad_input_is_one_line_exit_2(tmp_path, case):
    from click.testing import CliRunner

    from llkd_edge.cli import main

    run = {"missing": tmp_path / "nope", "not a run": tmp_path, "all data used": fake_run(tmp_path / "r"),
           "out is the run": tmp_path / "r",
           "an evolve run": fake_run(tmp_path / "e", limit=10, evolve={"source_run": "/runs/first"})}[case]
    out = run if case == "out is the run" else tmp_path / "out"
    result = CliRunner().invoke(main, ["evolve", str(run), "--out", str(out)])
    message = {"missing": "no such run folder", "not a run": "not a distill run",
               "all data used": "pass --val FILE", "out is the run": "is the source run itself",
               "an evolve run": "is itself an evolve run; evolve its source run (/runs/first)"}[case]
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not (tmp_path / "out").exists()


def test_a_text_that_copies_the_start_of_a_shown_example_is_caught_against_the_excerpt():
    from llkd_edge.data import load_builtin
    from llkd_edge.student.synthesis import _shown

    article = next(t for t in load_builtin("bbc-news:train").texts if len(t.split()) > 300)
    copy = " ".join(article.split()[:45])  # what a writer does with an example: repeat its opening
    assert screen([copy], [[article]], [], 8, 0.85) == [None]  # against the whole article it looks new
    assert screen([copy], [[_shown(article)]], [], 8, 0.85) == ["copies_prompt"]
