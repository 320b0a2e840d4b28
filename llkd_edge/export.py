"""The ``export`` stage: a distill run's student -> an ONNX model folder that ``runtime.Classifier`` loads.

MODEL_DIR receives:
  model.onnx            fp32, exported by Optimum (task text-classification) and graph-optimised (ORTOptimizer)
  model_quantized.onnx  int8 dynamic quantisation with signed int8 weights (with --quantize int8)
  tokenizer.json, ...   the student's tokenizer; config.json with id2label (so Optimum's
                        ORTModelForSequenceClassification loads the folder too)
  llkd_edge.json        label names, token budget, the default variant, file hashes, the run's provenance
  export_report.json    parity of each ONNX variant against PyTorch on the run's eval texts, and the int8 gate

The folder is built beside MODEL_DIR and moved into place at the end, so a failed export leaves no
half-written model and an earlier export in MODEL_DIR stays until the new one is complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .config import ExportConfig, identity
from .errors import MissingDependencyError, ModelError, UserError
from .files import atomic_path, sha256_file, write_json
from .metrics import classification_scores
from .runs import Run, open_run, versions
from .runtime import MANIFEST, Classifier

REPORT = "export_report.json"
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model_quantized.onnx"}
FP32_TOLERANCE = 1e-3  # max |logit difference| between ONNX fp32 and PyTorch that still counts as the same model


def export_run(config: ExportConfig, progress: bool = True) -> dict:
    """Export, optimise, quantise and check; returns the report also written to MODEL_DIR/export_report.json."""
    started = time.perf_counter()
    run = open_run(config.run_dir)
    out = Path(config.out)
    _check_out(out)
    # The gate's texts are the training pool, never the test set: which model a folder serves must not be
    # chosen on the texts its quality is reported on.
    texts, reference, reference_kind = run.check_texts(config.check_limit)
    note = _notes(progress)

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as work:  # OUT is replaced only by a finished export; a failed one leaves nothing
        work.mkdir()
        note(f"exporting {run.student_dir} to ONNX with Optimum")
        _onnx_export(run.student_dir, work)
        if config.optimize != "none":
            note(f"optimising the graph ({config.optimize})")
            _optimise(work, config.optimize)
        variants = {"fp32": VARIANT_FILES["fp32"]}
        if config.quantize == "int8":
            note("quantising to int8 (dynamic, signed int8 weights)")
            _quantise(work / VARIANT_FILES["fp32"], work / VARIANT_FILES["int8"])
            variants["int8"] = VARIANT_FILES["int8"]
        manifest = _manifest(run, config, variants, default="fp32")
        write_json(work / MANIFEST, manifest)

        note(f"checking parity with PyTorch on {len(texts)} texts ({reference_kind} labels)")
        report = _parity(run, work, variants, texts, reference, reference_kind, config)
        default, reason = _choose_default(report, config)
        report["default"], report["default_reason"] = default, reason
        report["seconds"] = round(time.perf_counter() - started, 2)
        manifest["default"] = default
        manifest["sha256"] = {name: sha256_file(work / name) for name in variants.values()}
        manifest["sizes_mb"] = {v: round((work / f).stat().st_size / 1e6, 2) for v, f in variants.items()}
        write_json(work / MANIFEST, manifest)
        write_json(work / REPORT, report)
    return report


# ------------------------------------------------------------------------------------------ steps


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise UserError(f"{out}: not empty and not an llkd-edge model folder; choose another --out")


@contextlib.contextmanager
def _quiet():
    """Optimum and torch's TorchScript exporter warn at length about things that do not concern users."""
    # (the root logger too: onnxruntime's quantiser logs a "consider pre-processing" hint there)
    loggers = [logging.getLogger(name) for name in ("", "optimum", "transformers", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _onnx_export(student_dir: Path, work: Path) -> None:
    try:
        from optimum.exporters.onnx import main_export
    except ImportError:
        raise MissingDependencyError("export needs optimum-onnx: run `make setup`") from None
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with _quiet():
        # Our own parity check on real texts replaces Optimum's validation on random inputs.
        main_export(str(student_dir), str(work), task="text-classification", do_validation=False)
    if not (work / VARIANT_FILES["fp32"]).is_file():
        raise ModelError(f"Optimum wrote no {VARIANT_FILES['fp32']} for {student_dir}")


def _optimise(work: Path, level: str) -> None:
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    optimised = work / "optimised"
    with _quiet():
        optimizer = ORTOptimizer.from_pretrained(str(work), file_names=[VARIANT_FILES["fp32"]])
        optimizer.optimize(save_dir=str(optimised), optimization_config=getattr(AutoOptimizationConfig, level)())
    os.replace(optimised / "model_optimized.onnx", work / VARIANT_FILES["fp32"])
    shutil.rmtree(optimised)


def _quantise(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Signed int8 weights (QInt8): the u8 weights of Optimum's avx2 preset ran ~2x slower on these
    # AVX-512 VNNI CPUs. DefaultTensorType lets the quantiser handle the fused ops of an O2 graph.
    with _quiet():
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=False,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def _parity(run: Run, work: Path, variants: dict, texts: list[str], reference: list[str] | None,
            reference_kind: str, config: ExportConfig) -> dict:
    """Max |logit difference| and argmax agreement of each ONNX variant against PyTorch, and quality."""
    from .train import load_student, predict_logits

    student = load_student(run.student_dir)
    torch_logits = predict_logits(student, texts, run.max_length)
    labels = run.labels

    def quality(logits: np.ndarray) -> dict | None:
        if not reference:
            return None
        scores = classification_scores(reference, [labels[j] for j in logits.argmax(axis=1)], labels)
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}

    report = {
        "texts": len(texts),
        # "pool, gold" / "pool, teacher" / "pool, none": the training pool's texts and which labels score them
        "reference": reference_kind,
        "check_slice": "the first texts of the pool the student trained on (never eval or LLM-written texts)",
        "fp32_tolerance": FP32_TOLERANCE,
        "gate": {"max_accuracy_drop": config.max_accuracy_drop, "min_agreement": config.min_agreement},
        "pytorch": {"quality": quality(torch_logits)},
        "variants": {},
    }
    logits = {}
    for variant in variants:
        clf = Classifier.load(work, variant=variant, threads=config.threads, device="cpu")
        logits[variant] = clf.logits(texts)
        diff = np.abs(logits[variant] - torch_logits)
        report["variants"][variant] = {
            "file": variants[variant],
            "max_abs_logit_diff": float(diff.max()),
            "mean_abs_logit_diff": float(diff.mean()),
            "argmax_agreement_with_pytorch": _agreement(logits[variant], torch_logits),
            "quality": quality(logits[variant]),
            "truncated_texts": clf.truncated,
        }
    fp32 = report["variants"]["fp32"]
    if fp32["max_abs_logit_diff"] >= FP32_TOLERANCE:
        raise ModelError(f"the ONNX export differs from PyTorch by {fp32['max_abs_logit_diff']:.2g} in a logit "
                         f"(tolerance {FP32_TOLERANCE}); try --optimize none")
    if "int8" in logits:
        report["variants"]["int8"]["argmax_agreement_with_fp32"] = _agreement(logits["int8"], logits["fp32"])
    return report


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return round(float((a.argmax(axis=1) == b.argmax(axis=1)).mean()), 4)


def _choose_default(report: dict, config: ExportConfig) -> tuple[str, str]:
    """int8 becomes the default only if it keeps fp32's accuracy (within the gate) and its labels."""
    int8 = report["variants"].get("int8")
    if int8 is None:
        return "fp32", "not quantised (--quantize none)"
    return int8_gate(report["variants"]["fp32"]["quality"], int8["quality"], int8["argmax_agreement_with_fp32"],
                     config.max_accuracy_drop, config.min_agreement)


def int8_gate(fp32_quality: dict | None, int8_quality: dict | None, agreement: float, max_accuracy_drop: float,
              min_agreement: float) -> tuple[str, str]:
    """("int8" | "fp32", why): the accuracy gate that decides which variant a model folder serves."""
    if agreement < min_agreement:
        return "fp32", f"int8 gives fp32's label on {agreement:.1%} of texts, below the {min_agreement:.0%} gate"
    if fp32_quality and int8_quality:
        drop = fp32_quality["accuracy"] - int8_quality["accuracy"]
        if drop > max_accuracy_drop + 1e-9:
            return "fp32", (f"int8 loses {drop * 100:.1f} points of accuracy ({int8_quality['accuracy']:.3f} vs "
                            f"{fp32_quality['accuracy']:.3f}), more than the {max_accuracy_drop * 100:.1f}-point gate")
        return "int8", (f"int8 passed the gate: accuracy {int8_quality['accuracy']:.3f} vs fp32 "
                        f"{fp32_quality['accuracy']:.3f}, same label as fp32 on {agreement:.1%} of texts")
    return "int8", f"int8 passed the gate: same label as fp32 on {agreement:.1%} of texts"


def _manifest(run: Run, config: ExportConfig, variants: dict, default: str) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run.student_dir)
    export_versions = versions("optimum", "optimum-onnx", "onnx", "onnxruntime", "onnxruntime-gpu")
    return {
        "format": 1,
        "labels": run.labels,
        "max_length": run.max_length,
        "pad_token_id": int(tokenizer.pad_token_id or 0),
        "default": default,
        "variants": variants,
        "export": identity(config),
        "run": {
            "path": str(run.path.resolve()),
            "run_id": run.metrics.get("run_id"),
            "student": run.metrics.get("student_model"),
            "teacher": run.provenance.get("teacher"),
            "config": run.provenance.get("config"),
            # how the teacher's distributions were read for training (bench scores the teacher the same way)
            "pool_calibration": run.metrics.get("pool_calibration"),
            "eval": {"teacher": run.metrics.get("teacher"), "student": run.metrics.get("student"),
                     "set": run.metrics["data"].get("eval")},
        },
        "versions": {k: v for k, v in export_versions.items() if v is not None},
    }


# ------------------------------------------------------------------------------------------ files


def _notes(progress: bool):
    def note(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    return note


