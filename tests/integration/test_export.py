"""export -> predict -> bench on a real distill run: real Gemma teacher labels, the real pretrained MiniLM
(2 layers kept), real Optimum export and real ONNX Runtime."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from llkd_edge.cli import main
from llkd_edge.runtime import Classifier

BBC = ["business", "entertainment", "politics", "sports", "tech"]


def invoke(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result


ROOT = Path(__file__).resolve().parents[2]


def test_export_matches_pytorch_and_records_how_it_was_made(exported, run_dir):
    model_dir, output = exported
    report = json.loads((model_dir / "export_report.json").read_text())
    fp32, int8 = report["variants"]["fp32"], report["variants"]["int8"]
    print(f"\nparity on {report['texts']} texts: fp32 max|d|={fp32['max_abs_logit_diff']:.2g}, int8 "
          f"max|d|={int8['max_abs_logit_diff']:.2g} agreement {int8['argmax_agreement_with_fp32']}; "
          f"accuracy pytorch {report['pytorch']['quality']['accuracy']} fp32 {fp32['quality']['accuracy']} "
          f"int8 {int8['quality']['accuracy']}; default {report['default']}")
    # the int8 gate is judged on the training pool (with its gold labels here), never on the eval texts
    assert report["texts"] == 240 and report["reference"] == "pool, gold"
    assert report["pytorch"]["quality"]["accuracy"] >= report["pytorch"]["quality"]["majority_rate"] + 0.2  # it learned
    assert fp32["max_abs_logit_diff"] < 1e-3 and fp32["argmax_agreement_with_pytorch"] == 1.0
    assert fp32["quality"]["accuracy"] == report["pytorch"]["quality"]["accuracy"]
    assert 0 < int8["max_abs_logit_diff"] < 5  # quantised: close, but not identical
    # the default follows the gate's own rule
    drop = fp32["quality"]["accuracy"] - int8["quality"]["accuracy"]
    passes = drop <= 0.01 + 1e-9 and int8["argmax_agreement_with_fp32"] >= 0.99
    assert report["default"] == ("int8" if passes else "fp32")
    assert f"default model: {report['default']}" in output

    manifest = json.loads((model_dir / "llkd_edge.json").read_text())
    assert manifest["labels"] == BBC and manifest["max_length"] == 64 and manifest["default"] == report["default"]
    assert manifest["run"]["teacher"]["sha256"].startswith("a5fd3b62")
    assert manifest["run"]["config"]["train"]["student"] == "minilm-l2"
    assert manifest["export"]["optimize"] == "O2" and manifest["versions"]["optimum-onnx"] == "0.1.0"
    import hashlib

    for name, digest in manifest["sha256"].items():
        assert hashlib.sha256((model_dir / name).read_bytes()).hexdigest() == digest
    assert manifest["sizes_mb"]["int8"] < manifest["sizes_mb"]["fp32"] / 2.5
    # one folder for every runtime: the transformers.js layout, each file once
    assert manifest["variants"] == {"fp32": "onnx/model.onnx", "int8": "onnx/model_quantized.onnx"}
    assert sorted(p.name for p in model_dir.rglob("*.onnx")) == ["model.onnx", "model_quantized.onnx"]


def test_the_folder_carries_a_model_card_from_the_runs_own_record(exported, run_dir):
    model_dir, _ = exported
    card = (model_dir / "README.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "pipeline_tag: text-classification" in front and f"labels: {json.dumps(BBC)}" in front
    assert f"value: {metrics['student']['accuracy']}" in front and f"value: {metrics['student']['macro_f1']}" in front
    assert f"| teacher (the LLM) | {metrics['teacher']['accuracy']:.3f} | {metrics['teacher']['macro_f1']:.3f} |" in body
    assert f"| student (this model) | {metrics['student']['accuracy']:.3f} |" in body
    assert "sha256 `a5fd3b62" in body and "Answer with one of" in body  # teacher file and prompt
    assert f"{metrics['data']['pool_size']} unlabelled texts" in body and "selection `llkd`" in body
    teacher_f1 = metrics["per_class_f1"]["teacher"]
    assert set(teacher_f1) == set(BBC)
    for label, f1 in teacher_f1.items():  # the teacher's weak classes are named, and only those
        assert (f"{label} (F1 {f1:.2f})" in body) == (f1 < 0.7), (label, f1)


def test_optimum_loads_the_folder_and_agrees_with_the_runtime(exported, bbc_test):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    model_dir, _ = exported
    texts = bbc_test.texts[:8]
    ort_model = ORTModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    expected = ort_model(**tokenizer(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")).logits
    got = Classifier.load(model_dir, variant="fp32").logits(texts)
    assert np.allclose(got, expected.detach().numpy(), atol=1e-4)
    assert ort_model.config.id2label[0] == "business"


def test_runtime_batches_like_single_texts_and_counts_truncation(exported, bbc_test):
    model_dir, _ = exported
    clf = Classifier.load(model_dir, variant="fp32", threads=1)
    texts = ["short one", *bbc_test.texts[:10], "a slightly longer text about the government budget"]
    batched = clf.predict_proba(texts, batch_size=5)
    single = np.concatenate([clf.predict_proba([t]) for t in texts])
    assert np.allclose(batched, single, atol=1e-5)  # padding and length-sorting change nothing
    assert np.allclose(batched.sum(axis=1), 1, atol=1e-6)
    from tokenizers import Tokenizer

    untruncated = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    untruncated.no_truncation()
    too_long = sum(1 for t in texts if len(untruncated.encode(t).ids) > 64)
    assert too_long >= 1 and clf.truncated == 2 * too_long  # two passes over the same texts
    fresh = Classifier.load(model_dir)
    fresh.predict(["word " * 500, "tiny"])
    assert fresh.truncated == 1 and fresh.provider == "CPUExecutionProvider"


def test_the_runtime_imports_no_torch(exported):
    model_dir, _ = exported
    code = (
        "import sys\n"
        "from llkd_edge.runtime import Classifier\n"
        f"clf = Classifier.load({str(model_dir)!r})\n"
        "print(clf.predict(['The central bank raised interest rates again']))\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'llama_cpp', 'optimum', 'pandas') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("['")


def test_predict_writes_jsonl_for_arguments_and_files(exported, tmp_path, bbc_test):
    model_dir, _ = exported
    result = CliRunner().invoke(main, ["predict", str(model_dir), "The striker scored twice", "MPs debate the bill"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["The striker scored twice", "MPs debate the bill"]

    texts = bbc_test.texts[:40]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    out = tmp_path / "out" / "pred.jsonl"
    result = CliRunner().invoke(main, ["predict", str(model_dir), "--input", str(tmp_path / "in.jsonl"),
                                       "--text-column", "body", "--out", str(out), "--batch-size", "7"])
    assert result.exit_code == 0, result.output
    assert "predicted 40 texts" in result.output and "cut to 64 tokens" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    clf = Classifier.load(model_dir)
    assert [r["text"] for r in rows] == texts
    assert [r["label"] for r in rows] == clf.predict(texts)
    for r in rows:
        assert set(r["probabilities"]) == set(BBC) and abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)


def test_predict_into_a_closed_pipe_stops_quietly(exported, tmp_path):
    model_dir, _ = exported
    (tmp_path / "many.txt").write_text("".join(f"text number {i} about the election\n" for i in range(5000)))
    cli = [sys.executable, "-m", "llkd_edge.cli", "predict", str(model_dir), "--input", str(tmp_path / "many.txt")]
    done = subprocess.run(f"{' '.join(cli)} | head -n 1", shell=True, capture_output=True, text=True, timeout=300,
                          executable="/bin/bash")
    assert json.loads(done.stdout)["text"] == "text number 0 about the election"
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_a_broken_model_folder_is_one_error_line(exported, tmp_path):
    model_dir, _ = exported
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    manifest = json.loads((broken / "llkd_edge.json").read_text())
    default_file = manifest["variants"][manifest["default"]]
    data = (broken / default_file).read_bytes()
    (broken / default_file).write_bytes(data[: len(data) // 3])  # a cut-off download
    result = CliRunner().invoke(main, ["predict", str(broken), "some text"])
    assert result.exit_code == 2 and "not a usable ONNX model" in result.output and "Traceback" not in result.output
    (broken / "tokenizer.json").unlink()
    result = CliRunner().invoke(main, ["predict", str(broken), "some text"])
    assert result.exit_code == 2 and "tokenizer.json: missing" in result.output


def test_static_int8_is_calibrated_and_gated_like_dynamic(run_dir, tmp_path):
    model_dir = tmp_path / "static"
    result = invoke(["export", str(run_dir), "--out", str(model_dir), "--quantize", "both", "--optimize", "none"])
    report = json.loads((model_dir / "export_report.json").read_text())
    static, dynamic = report["variants"]["int8-static"], report["variants"]["int8"]
    print(f"\nstatic int8: agreement {static['argmax_agreement_with_fp32']}, gate {static['gate']}; "
          f"dynamic: {dynamic['argmax_agreement_with_fp32']}, gate {dynamic['gate']}")
    assert (model_dir / "onnx" / "model_int8.onnx").is_file() and not list(model_dir.glob("*.onnx"))
    assert 0 < static["max_abs_logit_diff"] < 5 and static["argmax_agreement_with_fp32"] >= 0.8
    for v in (static, dynamic):  # each judged by the same gate, and the default is one that passed it
        assert v["gate"]["passed"] == (v["argmax_agreement_with_fp32"] >= 0.99
                                       and report["variants"]["fp32"]["quality"]["accuracy"] - v["quality"]["accuracy"] <= 0.01 + 1e-9)
    passing = [n for n in ("int8", "int8-static") if report["variants"][n]["gate"]["passed"]]
    assert report["default"] in (passing or ["fp32"])
    assert "int8-static" in result.output
    clf = Classifier.load(model_dir, variant="int8-static")
    assert clf.predict(["The striker scored twice"])[0] in BBC


def test_the_int8_gate_keeps_fp32_when_int8_falls_short(run_dir, tmp_path):
    # A gate int8 cannot pass (it would have to be 100 points MORE accurate): fp32 must stay the default.
    model_dir = tmp_path / "strict"
    result = invoke(["export", str(run_dir), "--out", str(model_dir), "--max-accuracy-drop", "-1",
                     "--optimize", "none"])
    report = json.loads((model_dir / "export_report.json").read_text())
    assert report["default"] == "fp32"
    assert "more than the" in report["default_reason"] or "below the" in report["default_reason"]
    assert f"default model: fp32 ({report['default_reason']})" in result.output
    assert Classifier.load(model_dir).variant == "fp32"
    # re-exporting into an existing model folder replaces it whole
    invoke(["export", str(run_dir), "--out", str(model_dir), "--quantize", "none"])
    manifest = json.loads((model_dir / "llkd_edge.json").read_text())
    assert manifest["variants"] == {"fp32": "onnx/model.onnx"} and not (model_dir / "onnx" / "model_quantized.onnx").exists()


def test_bench_times_everything_side_by_side(exported, run_dir, tmp_path):
    model_dir, _ = exported
    out = tmp_path / "bench"
    result = invoke(["bench", str(model_dir), "--limit", "60", "--rounds", "1", "--batch-size", "4",
                     "--out", str(out)])
    report = json.loads((out / "bench.json").read_text())
    # the teacher is scored as distill scored it: the same 60 eval texts, with the run's pool calibration
    metrics = json.loads((run_dir / "metrics.json").read_text())
    manifest = json.loads((model_dir / "llkd_edge.json").read_text())
    assert manifest["run"]["pool_calibration"] == metrics["pool_calibration"]
    assert metrics["pool_calibration"]["method"] == "batch" and report["texts"] == metrics["data"]["eval_size"] == 60
    assert "pool calibration" in report["results"]["teacher"]["about"]
    assert abs(report["results"]["teacher"]["accuracy"] - metrics["teacher"]["accuracy"]) <= 1 / 60 + 1e-9
    assert set(report["results"]) == {"teacher", "pytorch", "onnx-fp32", "onnx-int8"}
    for name, r in report["results"].items():
        assert r["p50_ms"] > 0 and r["p95_ms"] >= r["p50_ms"] and r["texts_per_s"] > 0, name
        assert 0 <= r["accuracy"] <= 1 and r["size_mb"] > 0, name
    assert report["gold"] and report["machine"]["threads"] >= 1
    assert {"onnx-fp32_vs_pytorch", "onnx-int8_vs_onnx-fp32", f"{report['default_variant']}_vs_teacher"} <= set(report["ratios"])
    assert "| teacher |" in result.output and "faster per text" in result.output
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_device_follows_the_sessions_active_providers(exported, bbc_test):
    """`auto` uses CUDA only where ONNX Runtime's session really runs on it; `cuda` insists, in one line."""
    from llkd_edge.errors import ModelError

    model_dir, _ = exported
    cpu = Classifier.load(model_dir, device="cpu")
    assert cpu.provider == "CPUExecutionProvider"
    auto = Classifier.load(model_dir, device="auto")
    texts = bbc_test.texts[:8]
    if auto.provider == "CUDAExecutionProvider":  # onnxruntime-gpu on a working GPU
        assert Classifier.load(model_dir, device="cuda").provider == "CUDAExecutionProvider"
        assert np.array_equal(auto.predict_proba(texts).argmax(1), cpu.predict_proba(texts).argmax(1))
    else:
        assert auto.provider == "CPUExecutionProvider"
        with pytest.raises(ModelError, match="--device cuda: ONNX Runtime cannot use CUDA here"):
            Classifier.load(model_dir, device="cuda")
        result = CliRunner().invoke(main, ["bench", str(model_dir), "--teacher", "none", "--device", "cuda"])
        assert result.exit_code == 2 and result.output.startswith("error: --device cuda"), result.output
