"""The static-embedding student (`--student static`) through the whole pipeline: distilled from the real Gemma
labels of the shared small BBC run (its store: no teacher call), exported with its hand-written ONNX graph, run by
the torch-free runtime. The Node example and the browser page run it in tests/integration/test_apps.py."""

import json
import subprocess
import sys

import numpy as np
from click.testing import CliRunner

from llkd_edge.cli import main
from llkd_edge.runtime import Classifier


def _invoke(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result


def test_the_static_student_learns_the_teachers_labels_and_records_what_it_is(static_run_dir, run_dir):
    metrics = json.loads((static_run_dir / "metrics.json").read_text())
    student = metrics["student_model"]
    print(f"\nstatic student: macro-F1 {metrics['student']['macro_f1']:.3f} (teacher {metrics['teacher']['macro_f1']:.3f},"
          f" majority {metrics['student']['majority_rate']:.3f}); the L2 student {json.loads((run_dir / 'metrics.json').read_text())['student']['macro_f1']:.3f}")
    assert student["architecture"] == "static embeddings" and student["dims"] == 256
    assert student["parameters"] == 30522 * 256 + 256 * 5 + 5
    assert metrics["student"]["accuracy"] >= metrics["student"]["majority_rate"] + 0.2  # it learned
    config = json.loads((static_run_dir / "student" / "config.json").read_text())
    assert config["model_type"] == "llkd-static" and "auto_map" not in config
    assert not list((static_run_dir / "student").glob("*.bin"))  # safetensors only


def test_the_export_is_the_pytorch_model_and_int8_is_a_quarter(static_exported):
    model_dir, output = static_exported
    report = json.loads((model_dir / "export_report.json").read_text())
    fp32, int8 = report["variants"]["fp32"], report["variants"]["int8"]
    assert "static-embedding student" in output
    assert fp32["max_abs_logit_diff"] < 1e-4 and fp32["argmax_agreement_with_pytorch"] == 1.0
    assert int8["argmax_agreement_with_fp32"] >= 0.99 and report["default"] == "int8"
    manifest = json.loads((model_dir / "llkd_edge.json").read_text())
    assert manifest["sizes_mb"]["int8"] < manifest["sizes_mb"]["fp32"] / 3.5
    card = (model_dir / "README.md").read_text()
    assert "static-embedding model" in card and "transformers.js (browser" not in card
    # the runtime: batched answers equal single ones (padding is masked exactly), and no torch is imported
    texts = ["Oil prices hit a record", "The striker scored twice", "word " * 300, ""]
    for variant in ("fp32", "int8"):
        clf = Classifier.load(model_dir, variant=variant)
        assert clf.batching == "padded"
        batched = clf.logits(texts)
        single = np.concatenate([clf.logits([t]) for t in texts])
        assert np.abs(batched - single).max() < 1e-5
    code = ("import sys\nfrom llkd_edge.runtime import Classifier\n"
            f"print(Classifier.load({str(model_dir)!r}).predict(['The central bank raised rates']))\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'optimum') if m in sys.modules)\nassert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_keep_default_ships_only_the_served_model(static_run_dir, tmp_path):
    out = tmp_path / "small"
    _invoke(["export", str(static_run_dir), "--out", str(out), "--keep", "default"])
    manifest = json.loads((out / "llkd_edge.json").read_text())
    report = json.loads((out / "export_report.json").read_text())
    assert manifest["variants"] == {"int8": "onnx/model_quantized.onnx"} and manifest["default"] == "int8"
    assert sorted(p.name for p in out.rglob("*.onnx")) == ["model_quantized.onnx"]
    assert set(report["variants"]) == {"fp32", "int8"} and report["kept"] == ["int8"]  # the figures stay
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"\nstatic MODEL_DIR with --keep default: {size / 1e6:.1f} MB")
    assert size < 10e6
    assert Classifier.load(out).predict(["Shares fell sharply"])[0] in manifest["labels"]
