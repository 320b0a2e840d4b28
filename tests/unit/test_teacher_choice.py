"""``distill --teacher auto``'s pure parts (labels/teacher_choice.py): the agreement of two teachers beyond chance,
the rule it decides, and the recorded choice a resumed run reads back (a run folder may come from someone else)."""

import json
from dataclasses import replace

import numpy as np
import pytest

from llkd_edge.config import DistillConfig, LabelSet, ScoringConfig
from llkd_edge.errors import UserError
from llkd_edge.labels.teacher_choice import (AGREEMENT_MIN, ALONE, CHOICE_FILE, POOLED, agreement, auto_teacher,
                                             choose)


def one_hot(labels, k, sure=0.8):
    probs = np.full((len(labels), k), (1 - sure) / (k - 1))
    probs[np.arange(len(labels)), labels] = sure
    return probs


def test_agreement_is_one_for_the_same_labels_near_zero_for_unrelated_ones_and_reads_calibrated():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 2000)
    assert agreement(one_hot(y, 4), one_hot(y, 4, 0.4)) == pytest.approx(1.0)
    assert abs(agreement(one_hot(y, 4), one_hot(rng.integers(0, 4, 2000), 4))) < 0.05
    # a teacher biased to one label (every row leaning to label 0) agrees once its bias is divided out, as distill
    # reads its labels; read as given, its argmax is label 0 everywhere and it would not
    biased = one_hot(y, 4, 0.5)
    biased[:, 0] += 0.45
    biased /= biased.sum(1, keepdims=True)
    assert biased.argmax(1).tolist() == [0] * len(y)
    assert agreement(one_hot(y, 4), biased) > 0.9


def test_teachers_that_agree_beyond_the_line_are_pooled_and_others_leave_the_llm():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 600)
    half = np.where(rng.random(600) < 0.5, y, rng.integers(0, 3, 600))  # right half the time: kappa ~0.5
    agreed = choose(one_hot(y, 3), one_hot(half, 3))
    assert agreed["teacher"] == POOLED and agreed["agreement"] >= AGREEMENT_MIN and agreed["texts"] == 600
    assert "encoder*2" in POOLED and agreed["candidates"] == [ALONE, POOLED]
    apart = choose(one_hot(y, 3), one_hot(rng.integers(0, 3, 600), 3))
    assert apart["teacher"] == ALONE and apart["agreement"] < AGREEMENT_MIN and "LLM alone" in apart["why"]
    assert choose(np.zeros((0, 3)), np.zeros((0, 3)))["teacher"] == ALONE


def config(tmp_path, **changes):
    labels = LabelSet.parse("a,b")
    return replace(DistillConfig(data="x.csv", out=str(tmp_path / "run"), scoring=ScoringConfig(labels=labels),
                                 store=str(tmp_path / "s.sqlite")),
                   **changes)


def never(*_):
    raise AssertionError("no teacher may be opened")


def test_a_resumed_run_keeps_its_choice_and_a_forged_one_is_refused(tmp_path):
    (tmp_path / CHOICE_FILE).write_text(json.dumps({"teacher": POOLED, "agreement": 0.5}))
    chosen, record = auto_teacher(config(tmp_path), object(), set(), tmp_path, False, never)
    assert chosen.teacher.model == POOLED and record["agreement"] == 0.5
    assert "agree on the pool (kappa 0.50" in record["why"]  # said again from the checked fields, not read
    for forged in ({"teacher": "/etc/passwd", "agreement": 0.5}, {"teacher": "openai:http://evil/v1"}, ["x"],
                   "not json {", {"teacher": POOLED}, {"teacher": POOLED, "agreement": "high"},
                   {"teacher": POOLED, "agreement": 0.01}, {"teacher": ALONE, "agreement": 0.9},
                   {"teacher": POOLED, "agreement": 7}):
        (tmp_path / CHOICE_FILE).write_text(forged if isinstance(forged, str) else json.dumps(forged))
        with pytest.raises(UserError, match="not a teacher choice"):
            auto_teacher(config(tmp_path), object(), set(), tmp_path, False, never)
    outside = tmp_path.parent / "elsewhere.json"  # a link out of the run folder is not followed
    outside.write_text(json.dumps({"teacher": POOLED, "agreement": 0.5}))
    (tmp_path / CHOICE_FILE).unlink()
    (tmp_path / CHOICE_FILE).symlink_to(outside)
    with pytest.raises(UserError, match="not a teacher choice"):
        auto_teacher(config(tmp_path), object(), set(), tmp_path, False, never)


def test_auto_asks_for_a_data_file_and_the_prompt_as_given(tmp_path):
    for changes, source in (({}, None), ({"prompt": "auto"}, object()), ({"label_budget": 0.5}, object()),
                            ({"backend": "ray"}, object())):
        with pytest.raises(UserError, match="--teacher auto labels every pool text"):
            auto_teacher(config(tmp_path, **changes), source, set(), tmp_path, False, never)


def test_a_run_killed_after_its_choice_but_before_its_provenance_resumes(tmp_path):
    """distill writes {"identity": ...} to config.json before an auto choice is kept in RUN_DIR, so a run killed
    between the choice and its full provenance is still a run of that config (not "not an llkd-edge run")."""
    from llkd_edge.config import identity
    from llkd_edge.files import write_json
    from llkd_edge.student.runs import prepare_run_folder

    run = tmp_path / "run"
    from llkd_edge.config import TeacherConfig

    ident = identity(config(tmp_path, teacher=TeacherConfig(model="auto")))
    prepare_run_folder(run, ident, False, ("identity",), "run")
    write_json(run / "config.json", {"identity": ident})
    (run / CHOICE_FILE).write_text(json.dumps({"teacher": POOLED, "agreement": 0.5}))
    assert prepare_run_folder(run, ident, True, ("identity",), "run") == run
    with pytest.raises(UserError, match="pass --resume"):
        prepare_run_folder(run, ident, False, ("identity",), "run")
