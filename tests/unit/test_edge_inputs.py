"""Export, predict and bench on bad input, streaming reads and the int8 gate: no model needed here."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from llkd_edge.cli import main
from llkd_edge.data import iter_texts
from llkd_edge.errors import DataError, ModelError
from llkd_edge.deploy.export import int8_gate
from llkd_edge.runtime import Classifier, read_manifest, softmax
from tests.support import one_error_line


def run(args):
    return CliRunner().invoke(main, args)


def fake_run(tmp_path, finished=True):
    """The file layout of a distill run (no weights): enough to be recognised, or not."""
    run_dir = tmp_path / "run"
    (run_dir / "student").mkdir(parents=True)
    (run_dir / "student" / "config.json").write_text("{}")
    (run_dir / "config.json").write_text(json.dumps({"config": {"train": {"max_length": 64}}}))
    if finished:
        (run_dir / "metrics.json").write_text(json.dumps({"data": {"labels": ["a", "b"]}}))
    return run_dir


@pytest.mark.parametrize(
    "args, expected",
    [
        (lambda p: ["export", str(p / "nope"), "--out", str(p / "m")], "no such run folder"),
        (lambda p: ["export", str(p), "--out", str(p / "m")], "not a distill run"),
        (lambda p: ["export", str(fake_run(p, finished=False)), "--out", str(p / "m")], "did not finish"),
        (lambda p: ["predict", str(p / "nope"), "some text"], "no such model folder"),
        (lambda p: ["predict", str(p), "some text"], "no llkd_edge.json or config.json"),
        (lambda p: ["predict", str(p)], "either TEXT arguments or --input"),
        (lambda p: ["bench", str(p / "nope")], "no such model folder"),
    ],
    ids=["export: no folder", "export: not a run", "export: unfinished run", "predict: no folder",
         "predict: no label names", "predict: no texts", "bench: no folder"],
)
def test_bad_input_is_one_error_line(tmp_path, args, expected):
    one_error_line(run(args(tmp_path)), expected)


def test_export_refuses_to_overwrite_a_folder_that_is_not_a_model(tmp_path):
    run_dir = fake_run(tmp_path)
    (run_dir / "student" / "config.json").write_text("{}")
    out = tmp_path / "busy"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    # the run's metrics lack what export needs, so this also shows an unreadable run is refused first
    result = run(["export", str(run_dir), "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (out / "precious.txt").read_text() == "keep me"


def test_a_model_folder_without_label_names_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}))
    with pytest.raises(ModelError, match="no label names"):
        read_manifest(tmp_path)
    (tmp_path / "llkd_edge.json").write_text(json.dumps({"labels": [], "variants": {"fp32": "model.onnx"}}))
    with pytest.raises(ModelError, match="no label names"):
        read_manifest(tmp_path)


def test_a_corrupt_or_missing_onnx_file_is_a_model_error(tmp_path):
    (tmp_path / "llkd_edge.json").write_text(json.dumps(
        {"labels": ["a", "b"], "default": "fp32", "variants": {"fp32": "model.onnx", "int8": "gone.onnx"},
         "max_length": 16, "pad_token_id": 0}))
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07 this is not a protobuf of a graph")
    with pytest.raises(ModelError, match="not a usable ONNX model"):
        Classifier.load(tmp_path, device="cpu")
    with pytest.raises(ModelError, match="missing"):
        Classifier.load(tmp_path, variant="int8")
    with pytest.raises(ModelError, match="no bf16 model"):
        Classifier.load(tmp_path, variant="bf16")


def test_int8_gate():
    fp32 = {"accuracy": 0.80}
    assert int8_gate(fp32, {"accuracy": 0.795}, 0.995, 0.01, 0.99)[0] is True
    assert int8_gate(fp32, {"accuracy": 0.79}, 0.995, 0.01, 0.99)[0] is True  # exactly one point: allowed
    passed, why = int8_gate(fp32, {"accuracy": 0.78}, 0.995, 0.01, 0.99)
    assert passed is False and "loses 2.0 points" in why
    passed, why = int8_gate(fp32, {"accuracy": 0.80}, 0.98, 0.01, 0.99, "int8-static")
    assert passed is False and "98.0%" in why and why.startswith("int8-static")
    assert int8_gate(None, None, 1.0, 0.01, 0.99)[0] is True  # no gold: agreement alone decides


def test_of_two_int8_variants_the_default_is_the_one_that_passes_and_agrees_most():
    from llkd_edge.config_deploy import ExportConfig
    from llkd_edge.deploy.export import _choose_default

    def report(dynamic, static):
        return {"variants": {"fp32": {"quality": {"accuracy": 0.9}},
                             "int8": {"quality": {"accuracy": 0.9}, "argmax_agreement_with_fp32": dynamic},
                             "int8-static": {"quality": {"accuracy": 0.9}, "argmax_agreement_with_fp32": static}}}

    config = ExportConfig(run_dir="r", out="o")
    assert _choose_default(report(0.98, 0.995), config)[0] == "int8-static"  # the demo's case: dynamic misses
    assert _choose_default(report(0.995, 0.995), config)[0] == "int8"  # a tie: no calibration data needed
    r = report(0.97, 0.98)
    which, why = _choose_default(r, config)
    assert which == "fp32" and "int8 gives" in why and "int8-static gives" in why
    assert r["variants"]["int8-static"]["gate"]["passed"] is False


def test_softmax_rows_sum_to_one_and_keep_order():
    logits = np.array([[1000.0, 0.0, -5.0], [0.1, 0.2, 0.3]])
    p = softmax(logits)
    assert np.allclose(p.sum(axis=1), 1) and p[0].argmax() == 0 and p[1].argmax() == 2


def test_iter_texts_streams_every_format(tmp_path):
    rows = ["first text", "second, with a comma", 'third "quoted"\nover two lines']
    pd.DataFrame({"body": rows, "label": ["a", "b", "a"]}).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame({"body": rows}).to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    pd.DataFrame({"body": rows}).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({"body": r}) for r in rows) + "\n")
    for name in ("t.csv", "t.tsv", "t.parquet", "t.jsonl"):
        assert list(iter_texts(str(tmp_path / name), "body")) == rows, name
    (tmp_path / "t.txt").write_text("one\ntwo\r\nthree")
    assert list(iter_texts(str(tmp_path / "t.txt"))) == ["one", "two", "three"]


def test_iter_texts_errors_name_the_line(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"fine\nalso fine\n\xff broken\n")
    with pytest.raises(DataError, match="line 3 is not valid UTF-8"):
        list(iter_texts(str(tmp_path / "bad.txt")))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match="line 2 is not JSON"):
        list(iter_texts(str(tmp_path / "bad.jsonl")))
    (tmp_path / "c.csv").write_text("body\nx\n")
    with pytest.raises(DataError, match="no column 'text'"):
        list(iter_texts(str(tmp_path / "c.csv")))
    with pytest.raises(DataError, match="no such file"):
        list(iter_texts(str(tmp_path / "nope.csv")))
