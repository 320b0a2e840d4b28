"""Issue 45: folders and files from someone else, and the leaks and blow-ups found by review. No model is loaded;
each test here failed on the code before its fix."""

import json

import numpy as np
import pytest

from llkd_edge.student.runs import Run
from tests.support import one_error_line


def _csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


def _run(tmp_path, data, eval_, few_shot=(), gold=None, labels=("a", "b")):
    config = {"data": data, "store": str(tmp_path / "gone.sqlite"), "text_column": "text", "label_column": None,
              "limit": None, "eval": eval_, "eval_limit": None, "gold": gold,
              "scoring": {"few_shot": [list(p) for p in few_shot]}, "train": {"max_length": 64}}
    provenance = {"config": config, "teacher": {"sha256": "s", "config_hash": "c"}}
    metrics = {"data": {"labels": list(labels), "pool_size": 3, "eval": eval_}}
    return Run(tmp_path / "run", provenance, metrics)


# ------------------------------------------------------------ 2: eval and gold texts never choose the exported model


def test_check_texts_without_the_store_still_leave_out_eval_gold_and_few_shot_texts(tmp_path):
    eval_ = _csv(tmp_path / "eval.csv", ["Shares fell sharply.,a", "The striker scored.,b"])
    gold = _csv(tmp_path / "gold.csv", ["A gold text.,a"])
    data = _csv(tmp_path / "pool.csv", ["shares  FELL sharply.,a", "A pool text.,a", "the striker scored.,b",
                                        "a GOLD text.,a", "A demo text.,b", "Another pool text.,b"])
    run = _run(tmp_path, data, eval_, few_shot=[("a demo text.", "b")], gold=gold)
    texts, reference, kind = run.check_texts()  # the store is gone: the pool is read from DATA
    assert texts == ["A pool text.", "Another pool text."]
    assert kind == "pool, gold" and reference == ["a", "b"]


# ------------------------------------------------------------ 9: a failed folder swap keeps the old folder


def test_a_failed_folder_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    import os

    from llkd_edge import files

    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_replace, calls = os.replace, []

    def second_rename_fails(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new folder into place
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="disk full"):
        with files.atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "new.txt").write_text("new")
    assert (target / "old.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left behind


# ------------------------------------------------------------ 9: label names cannot break or script the model card


def test_label_names_are_escaped_in_the_model_card():
    from llkd_edge.deploy.model_card import model_card

    labels = ["a|b", "<script>alert(1)</script>", "`code`"]
    scores = {"accuracy": 0.5, "macro_f1": 0.4, "n": 10, "majority_rate": 0.4}
    per_class = {c: 0.5 for c in labels}
    manifest = {"labels": labels, "max_length": 64, "variants": {"fp32": "model.onnx"}, "default": "fp32",
                "run": {"teacher": {"name": "t`x", "prompt": "p"}, "eval": {"set": "e.csv", "teacher": scores,
                        "student": scores, "per_class_f1": {"teacher": per_class, "student": per_class}},
                        "teacher_health": {"labels_never_named": ["<b>x</b>"]}}}
    card = model_card(manifest, {}).split("\n---\n", 1)[1]  # the Markdown after the (JSON-quoted) YAML front matter
    assert "<script>" not in card and "<b>" not in card and "&lt;script&gt;" in card
    per_class_rows = [ln for ln in card.splitlines() if ln.startswith("| ") and "0.500 | 0.500" in ln]
    assert len(per_class_rows) == 3
    for line in per_class_rows:  # an escaped | splits no cell: class, teacher, student
        assert len([c for c in line.replace("\\|", "").split("|") if c.strip()]) == 3


# ------------------------------------------------------------ 9: --pool-calibration none reaches the budget rounds


def test_the_budget_rounds_read_the_teacher_with_the_runs_pool_calibration():
    from llkd_edge.labels.active import fill_rest

    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 0.1, (40, 4)) + [3, 0, 0, 0], rng.normal(0, 0.1, (40, 4)) - [3, 0, 0, 0]])
    picked = np.r_[0:20, 40:60]  # the teacher: sure of `a` on the first kind, leaning `a` on the second
    probs = np.array([[0.9, 0.1]] * 20 + [[0.55, 0.45]] * 20)
    rest, raw = fill_rest(x, picked, probs, calibration="none")
    second_kind = rest >= 40
    assert (raw[second_kind].argmax(axis=1) == 0).all()  # as the teacher gave them: `a`
    rest, batch = fill_rest(x, picked, probs)  # the default divides the pool's lean out: `b`
    assert (batch[second_kind].argmax(axis=1) == 1).all()


# ------------------------------------------------------------ 6: static int8 is never gated on its calibration texts


@pytest.mark.parametrize("n, limit", [(1100, 1000), (300, 1000), (40, 1000), (500, None), (3, 2), (1, 1)])
def test_static_int8_calibration_and_gate_texts_are_disjoint(n, limit):
    from llkd_edge.deploy.export import CALIBRATION_TEXTS, calibration_split

    texts = [f"text {i}" for i in range(n)]
    gate, reference, calibration = calibration_split(texts, [t.upper() for t in texts], limit)
    assert not set(gate) & set(calibration)
    assert reference == [t.upper() for t in gate]
    assert gate and len(gate) >= len(calibration) and len(calibration) <= CALIBRATION_TEXTS
    assert len(gate) <= (limit or n)
    if n >= 2:
        assert calibration


# ------------------------------------------------------------ run folders from someone else: one line, no traceback


def _run_folder(tmp_path, **changes):
    run = _run(tmp_path, _csv(tmp_path / "pool.csv", ["one,a", "two,b"]), None)
    folder = run.path
    (folder / "student").mkdir(parents=True)
    (folder / "student" / "config.json").write_text("{}")
    config, metrics = run.provenance, run.metrics
    for where, value in changes.items():
        record, *keys = where.split("__")
        target = config if record == "config" else metrics
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.mark.parametrize("change", [
    {"metrics__data__labels": [1, 2]},  # not names
    {"metrics__data__labels": ["a", "a"]},
    {"metrics__data": ["not", "a", "record"]},
    {"config__config__train__max_length": 10**9},
    {"config__config__data": {"path": "x"}},
    {"config__config__limit": "all"},
    {"config__config__scoring__few_shot": [[1, 2]]},
    {"config__teacher": None},
])
def test_a_crafted_run_record_is_one_error_line(tmp_path, change):
    from click.testing import CliRunner

    from llkd_edge.cli import main

    folder = _run_folder(tmp_path, **change)
    result = CliRunner().invoke(main, ["export", str(folder), "--out", str(tmp_path / "model")])
    one_error_line(result, "config.json or metrics.json is unreadable or malformed")


def test_a_run_record_that_is_not_json_or_not_an_object_is_one_error_line(tmp_path):
    from click.testing import CliRunner

    from llkd_edge.cli import main

    folder = _run_folder(tmp_path)
    for content in (b"\xff\xfe\x00garbage", b"[1, 2, 3]", b"null"):
        (folder / "metrics.json").write_bytes(content)
        result = CliRunner().invoke(main, ["export", str(folder), "--out", str(tmp_path / "model")])
        one_error_line(result, "unreadable or malformed")


def test_a_student_folder_linking_out_of_the_run_is_refused(tmp_path):
    from click.testing import CliRunner

    from llkd_edge.cli import main

    folder = _run_folder(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (folder / "student").rename(elsewhere)
    (folder / "student").symlink_to(elsewhere)
    result = CliRunner().invoke(main, ["export", str(folder), "--out", str(tmp_path / "model")])
    one_error_line(result, "lies outside the run folder")


def test_a_crafted_budget_picks_file_is_one_line(tmp_path):
    from llkd_edge.errors import DataError
    from llkd_edge.student.runs import BUDGET_PICKS

    run = _run(tmp_path, _csv(tmp_path / "pool.csv", ["one,a", "two,b"]), None)
    run.path.mkdir()
    for content in ('{"text_sha256": "abc"}', '{"text_sha256": [1, 2]}', "[]",
                    '{"text_sha256": [], "filled": {"text_sha256": ["x"], "probs": [[0.5, "b"]]}}',
                    '{"text_sha256": [], "filled": {"text_sha256": ["x"], "probs": [[2.0, -1.0]]}}'):
        (run.path / BUDGET_PICKS).write_text(content)
        with pytest.raises(DataError, match="malformed"):
            run._budget_picks()


# ------------------------------------------------------------ a student/ folder from someone else runs no code


class _Payload:
    """Unpickling this creates a file: proof that loading ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


BERT = {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": 30, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8, "id2label": {"0": "a", "1": "b"},
        "label2id": {"a": 0, "b": 1}}


def test_a_student_with_pickled_weights_or_remote_code_is_refused_and_never_run(tmp_path):
    import pickle

    from llkd_edge.errors import ModelError
    from llkd_edge.student.train import load_student

    pytest.importorskip("transformers")
    marker = tmp_path / "pwned"
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps(BERT))
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": _Payload(marker)}))
    with pytest.raises(ModelError, match="unsafe to load"):
        load_student(pickled)
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({**BERT, "auto_map": {
        "AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.Evil"}}))
    (remote / "evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    with pytest.raises(ModelError, match="unsafe to load"):
        load_student(remote)
    assert not marker.exists()


# ------------------------------------------------------------ review follow-ups


def test_a_budget_run_with_nothing_left_to_fill_reads_back(tmp_path):
    from llkd_edge.student.runs import BUDGET_PICKS

    run = _run(tmp_path, _csv(tmp_path / "pool.csv", ["one,a", "two,b"]), None)
    run.path.mkdir()
    (run.path / BUDGET_PICKS).write_text('{"text_sha256": ["x"], "filled": {"text_sha256": [], "probs": []}}')
    assert run._budget_picks()["filled"]["probs"].shape == (0, 2)
    (run.path / BUDGET_PICKS).write_text('{"text_sha256": ["x"]}')  # a run from before the fill was recorded
    run.metrics["data"]["filled_size"] = 5
    texts, probs = run.filled()
    assert texts == [] and probs.shape == (0, 2)


def test_export_refuses_a_student_that_would_unpickle_or_run_code(tmp_path):
    from llkd_edge.deploy.export import check_student_files
    from llkd_edge.errors import ModelError

    student = tmp_path / "student"
    student.mkdir()
    (student / "config.json").write_text(json.dumps(BERT))
    with pytest.raises(ModelError, match="no model.safetensors"):
        check_student_files(student)
    (student / "model.safetensors").write_bytes(b"")
    check_student_files(student)  # what distill saves
    (student / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="pickled weights"):
        check_student_files(student)
    (student / "pytorch_model.bin").unlink()
    (student / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["evil.T", None]}}))
    with pytest.raises(ModelError, match="auto_map"):
        check_student_files(student)


def test_every_free_text_of_the_record_is_escaped_in_the_card():
    from llkd_edge.deploy.model_card import model_card

    evil = "<b>x</b>|y"
    manifest = {"labels": ["a", "b"], "max_length": 64, "variants": {"fp32": "model.onnx"}, "default": "fp32",
                "run": {"selection": {"method": evil}, "relabel": {"method": evil, "changed": 0.1},
                        "gold": {"n": 3, "file": evil, "chosen": evil, "why": evil}}}
    import re

    body = model_card(manifest, {}).split("\n---\n", 1)[1]
    assert body.count("<b>") == 3  # selection, relabel, chosen: each only inside a code span, shown as text
    assert "<b>" not in re.sub(r"`[^`]*`", "", body)


def test_a_model_file_name_that_cannot_be_a_path_is_one_line(tmp_path):
    from llkd_edge.errors import ModelError
    from llkd_edge.runtime import Classifier

    (tmp_path / "llkd_edge.json").write_text(json.dumps({"labels": ["a", "b"], "variants": {"fp32": "a\u0000b"},
                                                         "default": "fp32"}))
    with pytest.raises(ModelError, match="not a usable file name"):
        Classifier.load(tmp_path)


def test_a_crafted_relabelled_file_is_one_line_and_never_unpickled(tmp_path):
    from llkd_edge.errors import DataError
    from llkd_edge.store import LabelRow, LabelStore, ScoringKey, text_hash
    from llkd_edge.student.runs import RELABELLED

    key = ScoringKey("s", "c")
    store = tmp_path / "pool.sqlite"
    with LabelStore(store) as s:
        s.register(key, "t", ["a", "b"], {})
        s.mark(["one", "two"], "pool", "pool.csv")
        s.add(key, [LabelRow(t, (0.75, 0.25), "a", 0.75, 0.56, 0.4, 5, False) for t in ("one", "two")])
    run = _run(tmp_path, str(store), None)
    run.provenance["config"]["store"] = str(store)
    run.metrics["data"]["pool_size"] = 2
    run.metrics["relabel"] = {"method": "probe", "changed": 0.0}
    run.path.mkdir()
    assert [r.text for r in run.pool(relabelled=False)] == ["one", "two"]
    hashes = np.array([text_hash("one"), text_hash("two")])
    for probs in (np.array([[0.5, 0.5]]),  # one row for two texts
                  np.array([[2.0, -1.0], [0.5, 0.5]]),  # not distributions
                  np.array([{"a": 1}, {"b": 2}], dtype=object)):  # a pickle inside the npz
        np.savez(run.path / RELABELLED, text_sha256=hashes[: len(probs)], probs=probs)
        with pytest.raises(DataError, match="relabelled pool"):
            run.pool(relabelled=True)
