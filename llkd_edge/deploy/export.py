"""The ``export`` stage: a distill run's student -> one model folder that every runtime loads unchanged.

MODEL_DIR receives (the transformers.js layout, which Optimum's ORTModel and onnxruntime-node read as well):
  onnx/model.onnx            fp32, exported by Optimum (task text-classification), graph-optimised (ORTOptimizer)
  onnx/model_quantized.onnx  int8, dynamic quantisation with signed int8 weights (transformers.js dtype "q8")
  onnx/model_int8.onnx       int8, static quantisation calibrated on the run's own pool texts (dtype "int8")
  tokenizer.json, ...        the student's tokenizer; config.json with id2label
  llkd_edge.json             label names, token budget, the default variant, file hashes, the run's provenance
  export_report.json         parity of each ONNX variant against PyTorch on the run's pool texts, and the int8 gate
  README.md                  a model card (Hugging Face format): scores, provenance, intended use and limits

Each file is written once; ``llkd_edge.json`` says which ONNX file is the default. The folder is built beside
MODEL_DIR and moved into place at the end, so a failed export leaves no half-written model and an earlier
export in MODEL_DIR stays until the new one is complete.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ..config import identity
from ..config_deploy import ExportConfig
from ..errors import DataError, MissingDependencyError, ModelError, UserError
from ..files import atomic_path, lies_inside, read_json, sha256_file, write_json
from ..metrics import classification_scores
from .model_card import CARD, model_card
from ..student import static as static_student
from ..student.runs import Run, open_run, versions
from ..runtime import MANIFEST, Classifier

REPORT = "export_report.json"
VARIANT_FILES = {"fp32": "onnx/model.onnx", "int8": "onnx/model_quantized.onnx", "int8-static": "onnx/model_int8.onnx"}
QUANTISED = {"int8": ("int8",), "static": ("int8-static",), "both": ("int8", "int8-static"), "none": ()}
CALIBRATION_TEXTS = 100  # pool texts that set the static int8 activation ranges
FP32_TOLERANCE = 1e-3  # max |logit difference| between ONNX fp32 and PyTorch that still counts as the same model


def export_run(config: ExportConfig, progress: bool = True) -> dict:
    """Export, optimise, quantise and check; returns the report also written to MODEL_DIR/export_report.json."""
    started = time.perf_counter()
    run = open_run(config.run_dir)
    out = Path(config.out)
    _check_out(out)
    check_student_files(run.student_dir)
    is_static = static_student.is_static(run.student_dir)
    # A static-embedding student has one int8 model, its table in int8 (nothing to calibrate)
    quantised = QUANTISED[config.quantize] if not is_static else ("int8",) if config.quantize != "none" else ()
    # The gate's texts are the training pool, never the test set: which model a folder serves must not be
    # chosen on the texts its quality is reported on.
    static = "int8-static" in quantised
    wanted = config.check_limit + CALIBRATION_TEXTS if static and config.check_limit else config.check_limit
    texts, reference, reference_kind = run.check_texts(wanted)
    calibration: list[str] = []
    if static:  # the static ranges are set on texts the gate never scores, so it cannot favour its own calibration
        texts, reference, calibration = calibration_split(texts, reference, config.check_limit)
        if not calibration:
            raise DataError(f"{run.path}: too few pool texts to calibrate static int8 apart from the gate's; "
                            "use --quantize int8")
    note = _notes(progress)

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as work:  # OUT is replaced only by a finished export; a failed one leaves nothing
        work.mkdir()
        variants = write_graphs(run.student_dir, work, run.max_length, config.optimize, quantised, calibration, note)
        manifest = _manifest(run, config, variants, default="fp32")
        write_json(work / MANIFEST, manifest)

        note(f"checking parity with PyTorch on {len(texts)} texts ({reference_kind} labels)")
        report = _parity(run, work, variants, texts, reference, reference_kind, config)
        report["calibration_texts"] = len(calibration)
        default, reason = _choose_default(report, config)
        report["default"], report["default_reason"] = default, reason
        report["seconds"] = round(time.perf_counter() - started, 2)
        manifest["default"] = default
        if config.keep == "default":  # the others go; their parity and gate figures stay in the report
            for variant in [v for v in variants if v != default]:
                (work / variants.pop(variant)).unlink()
            report["kept"] = [default]
        manifest["variants"] = variants
        manifest["sha256"] = {name: sha256_file(work / name) for name in variants.values()}
        manifest["sizes_mb"] = {v: round((work / f).stat().st_size / 1e6, 2) for v, f in variants.items()}
        write_json(work / MANIFEST, manifest)
        write_json(work / REPORT, report)
        try:  # the run's record from someone else's folder may hold values of the wrong type
            card = model_card(manifest, report)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise UserError(f"{run.path}: metrics.json holds values the model card cannot show "
                            f"({type(exc).__name__}); distil again") from None
        (work / CARD).write_text(card, encoding="utf-8")
    return report


# ------------------------------------------------------------------------------------------ steps


def write_graphs(student_dir: Path, work: Path, max_length: int, optimize: str, quantised: tuple[str, ...],
                 calibration: list[str], note=lambda message: None) -> dict[str, str]:
    """The student in ``student_dir`` as ONNX files in ``work`` (with its tokenizer files): fp32, optimised at
    ``optimize``, and each of ``quantised``; returns variant -> file. (Also how ``latency`` times an untrained
    candidate: the graphs are the ones an export of a trained student would have.)"""
    is_static = static_student.is_static(student_dir)
    if is_static:  # Optimum has no architecture for it: the graph is written node by node
        note(f"writing {student_dir} (a static-embedding student) as ONNX")
        _static_export(student_dir, work)
    else:
        note(f"exporting {student_dir} to ONNX with Optimum")
        _onnx_export(student_dir, work)
    _set_token_budget(work, max_length)
    raw = work / "raw.onnx"  # static quantisation starts from the plain graph (fused ops calibrate badly)
    if "int8-static" in quantised:
        shutil.copyfile(work / "model.onnx", raw)
    if optimize != "none" and not is_static:  # a lookup and a mean: nothing to fuse
        note(f"optimising the graph ({optimize})")
        _optimise(work, optimize)
    (work / "onnx").mkdir()
    os.replace(work / "model.onnx", work / VARIANT_FILES["fp32"])
    variants = {"fp32": VARIANT_FILES["fp32"]}
    for variant in quantised:
        if variant == "int8" and is_static:
            note("quantising the token table to int8 (a scale per token)")
            static_student.export_onnx(student_dir, work / VARIANT_FILES[variant], int8=True)
        elif variant == "int8":
            note("quantising to int8 (dynamic, signed int8 weights)")
            _quantise(work / VARIANT_FILES["fp32"], work / VARIANT_FILES[variant])
        else:
            note(f"quantising to int8 (static, activation ranges from {len(calibration)} pool texts the gate "
                 "does not score)")
            _quantise_static(raw, work / VARIANT_FILES[variant], work, calibration, max_length)
        variants[variant] = VARIANT_FILES[variant]
    raw.unlink(missing_ok=True)
    return variants


def calibration_split(texts: list[str], reference: list[str] | None,
                      gate_limit: int | None) -> tuple[list[str], list[str] | None, list[str]]:
    """(gate texts, their reference labels, calibration texts): disjoint slices of the pool's check texts. The
    calibration takes the ``CALIBRATION_TEXTS`` after the gate's ``gate_limit``, never more than half a small
    pool, so the gate keeps at least as many texts as the calibration."""
    n_cal = min(CALIBRATION_TEXTS, len(texts) // 2)
    n_gate = min(gate_limit or len(texts), len(texts) - n_cal)
    return texts[:n_gate], None if reference is None else reference[:n_gate], texts[n_gate:n_gate + n_cal]


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


PICKLED = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")  # weight formats torch.load would unpickle


def check_student_files(student_dir: Path) -> None:
    """One line unless ``student_dir`` holds what ``distill`` saves and nothing that would run: safetensors weights,
    no pickled weight file, no code named by ``auto_map``. Optimum loads the folder with transformers' defaults,
    so a folder from someone else is checked here first."""
    weights = student_dir / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"{student_dir}: no model.safetensors (a student this tool saved has one); refused")
    if not lies_inside(student_dir, weights):
        raise ModelError(f"{student_dir}/model.safetensors: links out of the student's folder; refused")
    pickled = sorted(p.name for pattern in PICKLED for p in student_dir.glob(pattern))
    if pickled:
        raise ModelError(f"{student_dir}: holds pickled weights ({', '.join(pickled)}); refused")
    for name in ("config.json", "tokenizer_config.json"):
        try:
            record = read_json(student_dir / name) if (student_dir / name).is_file() else {}
        except (OSError, ValueError):
            raise ModelError(f"{student_dir}/{name}: unreadable; refused") from None
        if not isinstance(record, dict) or "auto_map" in record:
            raise ModelError(f"{student_dir}/{name}: names code to run (auto_map) or is not an object; refused")


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
    if not (work / "model.onnx").is_file():
        raise ModelError(f"Optimum wrote no model.onnx for {student_dir}")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json")


def _static_export(student_dir: Path, work: Path) -> None:
    """A static student's ONNX graph and, beside it, its tokenizer files and config (only files that lie inside
    ``student_dir``: a run folder from someone else must not make us copy other files into the model)."""
    for name in TOKENIZER_FILES:
        source = student_dir / name
        if source.is_file() and lies_inside(student_dir, source):
            shutil.copyfile(source, work / name)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (work / name).is_file():
            raise ModelError(f"{student_dir}: no {name} inside the student's folder; refused")
    static_student.export_onnx(student_dir, work / "model.onnx")


def _set_token_budget(work: Path, max_length: int) -> None:
    """The student's token budget as the tokenizer's own limit, so runtimes that truncate by tokenizer_config.json
    (transformers.js, AutoTokenizer with truncation=True) cut texts where the Python runtime does."""
    path = work / "tokenizer_config.json"
    config = read_json(path)
    config["model_max_length"] = max_length
    write_json(path, config)


def _optimise(work: Path, level: str) -> None:
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    optimised = work / "optimised"
    with _quiet():
        optimizer = ORTOptimizer.from_pretrained(str(work), file_names=["model.onnx"])
        optimizer.optimize(save_dir=str(optimised), optimization_config=getattr(AutoOptimizationConfig, level)())
    os.replace(optimised / "model_optimized.onnx", work / "model.onnx")
    shutil.rmtree(optimised)


def _quantise(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Signed int8 weights (QInt8): the u8 weights of Optimum's avx2 preset ran ~2x slower on these
    # AVX-512 VNNI CPUs. DefaultTensorType lets the quantiser handle the fused ops of an O2 graph.
    with _quiet():
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=False,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def _quantise_static(raw: Path, target: Path, work: Path, texts: list[str], max_length: int) -> None:
    """Static int8 (QDQ, per-channel int8 weights, uint8 activations) with ranges set by the entropy method on
    ``texts`` run through the plain fp32 graph; every op ONNX Runtime can quantise is quantised."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(work / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    names = {i.name for i in _input_names(raw)}

    class Feed(CalibrationDataReader):
        def __init__(self):
            self.encodings = iter(tokenizer.encode_batch(texts))

        def get_next(self):
            e = next(self.encodings, None)
            if e is None:
                return None
            feed = {"input_ids": e.ids, "attention_mask": e.attention_mask, "token_type_ids": e.type_ids}
            return {k: np.array([v], dtype=np.int64) for k, v in feed.items() if k in names}

    prepared = work / "prepared.onnx"
    with _quiet(), contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
        quant_pre_process(str(raw), str(prepared), skip_symbolic_shape=True)  # symbolic inference fails on BERT
        quantize_static(str(prepared), str(target), Feed(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.Entropy,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    prepared.unlink()
    for leftover in work.glob("augmented_model*.onnx"):  # the calibrator's scratch graph
        leftover.unlink()


def _input_names(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input


def _parity(run: Run, work: Path, variants: dict, texts: list[str], reference: list[str] | None,
            reference_kind: str, config: ExportConfig) -> dict:
    """Max |logit difference| and argmax agreement of each ONNX variant against PyTorch, and quality."""
    from ..student.train import load_student, predict_logits

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
    for variant in variants:
        if variant != "fp32":
            report["variants"][variant]["argmax_agreement_with_fp32"] = _agreement(logits[variant], logits["fp32"])
    return report


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return round(float((a.argmax(axis=1) == b.argmax(axis=1)).mean()), 4)


def _choose_default(report: dict, config: ExportConfig) -> tuple[str, str]:
    """An int8 variant becomes the default only if it keeps fp32's accuracy (within the gate) and its labels;
    of several that pass, the one that gives fp32's label most often (dynamic on a tie: no calibration data)."""
    variants = report["variants"]
    quantised = [v for v in variants if v != "fp32"]
    if not quantised:
        return "fp32", "not quantised (--quantize none)"
    why = {}
    for name in quantised:
        passed, why[name] = int8_gate(variants["fp32"]["quality"], variants[name]["quality"],
                                      variants[name]["argmax_agreement_with_fp32"], config.max_accuracy_drop,
                                      config.min_agreement, name)
        variants[name]["gate"] = {"passed": passed, "why": why[name]}
    passing = [v for v in quantised if variants[v]["gate"]["passed"]]
    if not passing:
        return "fp32", "; ".join(why.values())
    best = max(passing, key=lambda v: (variants[v]["argmax_agreement_with_fp32"], v == "int8"))
    return best, why[best]


def int8_gate(fp32_quality: dict | None, int8_quality: dict | None, agreement: float, max_accuracy_drop: float,
              min_agreement: float, name: str = "int8") -> tuple[bool, str]:
    """(passed, why): the accuracy gate that decides whether a quantised variant may be a folder's default."""
    if agreement < min_agreement:
        return False, f"{name} gives fp32's label on {agreement:.1%} of texts, below the {min_agreement:.0%} gate"
    if fp32_quality and int8_quality:
        drop = fp32_quality["accuracy"] - int8_quality["accuracy"]
        if drop > max_accuracy_drop + 1e-9:
            return False, (f"{name} loses {drop * 100:.1f} points of accuracy ({int8_quality['accuracy']:.3f} vs "
                           f"{fp32_quality['accuracy']:.3f}), more than the {max_accuracy_drop * 100:.1f}-point gate")
        return True, (f"{name} passed the gate: accuracy {int8_quality['accuracy']:.3f} vs fp32 "
                      f"{fp32_quality['accuracy']:.3f}, same label as fp32 on {agreement:.1%} of texts")
    return True, f"{name} passed the gate: same label as fp32 on {agreement:.1%} of texts"


def _manifest(run: Run, config: ExportConfig, variants: dict, default: str) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run.student_dir, trust_remote_code=False, local_files_only=True)
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
                     "set": run.metrics["data"].get("eval"), "per_class_f1": run.metrics.get("per_class_f1"),
                     "gold_only": run.metrics.get("gold_only")},
            # what the model card tells: how much data, how it was selected, what the teacher was good at
            "data": {k: run.metrics["data"].get(k) for k in ("pool", "pool_size", "eval_size")},
            "selection": run.metrics.get("selection"),
            "teacher_health": run.metrics.get("teacher_health"),
            "teacher_warnings": run.metrics.get("teacher_warnings"),
            "gold": run.metrics.get("gold"),
            "relabel": run.metrics.get("relabel"),  # --relabel probe: how many labels the probe changed
            "learning_curve": run.metrics.get("learning_curve"),  # a student below its teacher: student/curve.py
        },
        "versions": {k: v for k, v in export_versions.items() if v is not None},
    }


# ------------------------------------------------------------------------------------------ files


def _notes(progress: bool):
    def note(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    return note


