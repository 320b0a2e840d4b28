"""Timing, side by side: the helpers that ``llkd-edge bench`` and the scripts in bench/ share.

``llkd-edge bench MODEL_DIR`` times, on the same texts in one process with the same thread count:
the teacher through llama.cpp, the student in PyTorch, and each ONNX variant through ``runtime.Classifier``.
Per-text latency is measured at batch 1 (tokenisation included: what an app waits for), throughput at
``batch_size``. The students are timed in alternating rounds so a noisy neighbour slows all of them alike;
each text keeps its best round. The teacher is timed once per text (it is slow); its throughput is one over
its mean latency when it scores one text per decode (the CPU default), else one pass over all the texts.
``--device cuda`` runs the students on the GPU (ONNX Runtime's CUDA provider, checked through the
session's active providers; PyTorch on CUDA); the teacher offloads to a GPU whenever its build can.

Writes OUT/bench.json (figures, ratios, settings, machine) and OUT/bench.png (the chart).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..config import ScoringConfig, TeacherConfig
from ..config_deploy import BenchConfig
from ..distributions import batch_calibrated
from ..errors import DataError, UserError
from ..files import write_json
from ..metrics import classification_scores
from ..student.plots import bench_png
from ..report import machine, markdown_table
from ..student.runs import open_run, versions
from ..runtime import Classifier, read_manifest


def latencies(fn: Callable[[list[str]], object], texts: Sequence[str]) -> np.ndarray:
    """Seconds per text, each text alone (batch 1). Shape (N,)."""
    out = np.empty(len(texts))
    for i, text in enumerate(texts):
        start = time.perf_counter()
        fn([text])
        out[i] = time.perf_counter() - start
    return out


def throughput(fn: Callable[[list[str]], object], texts: Sequence[str]) -> float:
    """Texts per second for one call over all ``texts``."""
    start = time.perf_counter()
    fn(list(texts))
    return len(texts) / (time.perf_counter() - start)


def summarise_latency(seconds: np.ndarray) -> dict:
    return {"p50_ms": round(float(np.percentile(seconds, 50)) * 1e3, 3),
            "p95_ms": round(float(np.percentile(seconds, 95)) * 1e3, 3),
            "mean_ms": round(float(seconds.mean()) * 1e3, 3)}


# ------------------------------------------------------------------------------------------ llkd-edge bench


def run_bench(config: BenchConfig, progress: bool = True) -> dict:
    """Time every contender on the same texts; returns the report also written to OUT/bench.json."""
    from tqdm.auto import tqdm

    manifest = read_manifest(config.model_dir)
    run = _find_run(config, manifest)
    installed = versions("onnxruntime", "onnxruntime-gpu")
    texts, gold = _bench_texts(config, run, manifest["labels"])
    labels = list(manifest["labels"])
    out = Path(config.out or Path(config.model_dir) / "bench")

    contenders: dict[str, dict] = {}  # name -> {"predict": texts -> (N, K) scores, "size_mb", "about"}
    for variant, file in manifest["variants"].items():
        clf = Classifier.load(config.model_dir, variant=variant, threads=config.threads, device=config.device)
        contenders[f"onnx-{variant}"] = {
            "predict": lambda batch, clf=clf: clf.logits(batch, config.batch_size),
            "forget": clf.forget_words,
            "size_mb": _size_mb(Path(config.model_dir) / file),
            "about": f"{file} through ONNX Runtime {installed['onnxruntime'] or installed['onnxruntime-gpu']} "
                     f"({clf.provider})",
        }
    if run is not None:
        from ..teacher.encoder import require_torch
        from ..student.train import load_student, predict_logits, resolve_device

        require_torch().set_num_threads(config.threads)
        device = resolve_device(config.device)
        student = load_student(run.student_dir)
        student.model.to(device)
        contenders["pytorch"] = {
            "predict": lambda batch: predict_logits(student, batch, manifest["max_length"], config.batch_size),
            "size_mb": _size_mb(*run.student_dir.glob("*.safetensors"), *run.student_dir.glob("*.bin")),
            "about": f"{run.student_dir} through PyTorch {installed['torch']} ({device})",
        }
    student_names = sorted(contenders, key=lambda n: (n != "pytorch", n))

    results: dict[str, dict] = {}
    best = {name: np.full(len(texts), np.inf) for name in student_names}
    best_rate = dict.fromkeys(student_names, 0.0)
    bar = tqdm(total=config.rounds * len(student_names), desc="timing students", unit="run", disable=not progress,
               leave=False)
    for name in student_names:
        contenders[name]["predict"](texts[:4])  # warm-up: first calls allocate
    # Each timed pass starts with no words kept (Classifier.forget_words): the texts are new to it, as in use; the
    # rounds repeat the same texts, which would otherwise time only the kept words' lookup.
    forget = {name: contenders[name].get("forget", lambda: None) for name in student_names}
    for _ in range(config.rounds):
        for name in student_names:
            fn = contenders[name]["predict"]
            forget[name]()
            best[name] = np.minimum(best[name], latencies(fn, texts))
            forget[name]()
            best_rate[name] = max(best_rate[name], throughput(fn, texts))
            bar.update()
    bar.close()
    for name in student_names:
        scores = contenders[name]["predict"](texts)
        c = contenders[name]
        results[name] = _entry(c["about"], c["size_mb"], best[name], best_rate[name], scores, gold, labels)

    # The teacher as the model folder records it (prompt, labels, token budget), whatever --run points at.
    made_with = (manifest.get("run") or {}).get("config") or {}
    teacher_name = config.teacher or (made_with.get("teacher") or {}).get("model")
    if teacher_name and teacher_name != "none":
        if "scoring" not in made_with:
            raise UserError(f"{config.model_dir}: the teacher's prompt and labels are not recorded; pass --teacher none")
        calibration = (manifest.get("run") or {}).get("pool_calibration") or (run.metrics.get("pool_calibration")
                                                                              if run else None)
        prior = (calibration or {}).get("prior")
        results["teacher"] = _time_teacher(teacher_name, ScoringConfig.from_dict(made_with["scoring"]), texts, gold,
                                           labels, config, progress, installed, prior)

    default = f"onnx-{manifest['default']}"
    report = {
        "command": " ".join(["llkd-edge", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None,  # None: a library call
        "model_dir": str(config.model_dir),
        "run_dir": str(run.path) if run else None,
        "texts": len(texts),
        "data": config.data or (run.metrics["data"].get("eval") if run else None),
        "gold": gold is not None,
        "batch_size": config.batch_size,
        "rounds": config.rounds,
        "device": config.device,
        "default_variant": default,
        "machine": machine(config.threads),
        "versions": {k: v for k, v in installed.items() if v is not None},
        "results": results,
        "ratios": _ratios(results, default),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", report)
    bench_png(out / "bench.png", results, report)
    report["wrote"] = [str(out / "bench.json"), str(out / "bench.png")]
    return report


def _find_run(config: BenchConfig, manifest: dict):
    if config.run_dir:
        return open_run(config.run_dir)
    recorded = (manifest.get("run") or {}).get("path")
    if recorded and Path(recorded, "student").is_dir():
        return open_run(recorded)
    return None  # no PyTorch student to time; said in the report by its absence


def _bench_texts(config: BenchConfig, run, labels: list[str]) -> tuple[list[str], list[str] | None]:
    if config.data:
        from ..data import read_dataset

        data = read_dataset(config.data, config.text_column, config.label_column)
        pairs = [(t, g) for t, g in zip(data.texts, data.gold or [None] * len(data.texts)) if t.strip()]
        pairs = pairs[: config.limit]
        if not pairs:
            raise DataError(f"{config.data}: no texts to time")
        gold = [g for _, g in pairs]
        if data.gold is None or not all(g in labels for g in gold):
            gold = None  # timing still works; quality needs gold labels from this model's label set
        return [t for t, _ in pairs], gold
    if run is None:
        raise UserError(f"{config.model_dir}: the run it was exported from is gone; pass --run RUN_DIR or --data DATA")
    texts, reference, kind = run.reference_texts(config.limit)
    return texts, (reference if kind == "gold" else None)


def _time_teacher(name, scoring, texts, gold, labels, config, progress, installed, prior) -> dict:
    """The teacher timed text by text; its scores read as the run's student was taught (``prior``: the pool
    calibration divided out, None: as the teacher gives them)."""
    from tqdm.auto import tqdm

    from ..teacher.backend import open_backend

    teacher_config = TeacherConfig(model=name, n_threads=config.threads)
    if len(teacher_config.members) > 1:
        raise UserError(f"bench times one teacher; the run was labelled by the ensemble {name}: pass --teacher with "
                        f"one of {', '.join(teacher_config.members)} (an ensemble costs the sum of its members), or none")
    teacher = open_backend(scoring, teacher_config, progress=progress)

    def probs(batch: list[str]) -> np.ndarray:
        return np.array([r.probs for r in next(teacher.score_batches([list(batch)]))])

    try:
        probs(texts[:1])  # warm-up: evaluates the shared prompt prefix and the calibration inputs
        rows: list[np.ndarray] = []
        bar = tqdm(texts, desc="timing the teacher", unit="text", disable=not progress, leave=False)
        seconds = latencies(lambda batch: rows.append(probs(batch)[0]), bar)
        parallel = teacher.details.get("parallel", 1)
        served = teacher.details.get("server")
        about = (f"{teacher.model.name} behind the server at {served}, {scoring.max_text_tokens} text tokens, "
                 f"{parallel} requests in flight" if served else
                 f"{teacher.model.name} through llama.cpp (llama-cpp-python {installed['llama_cpp_python']}), "
                 f"{scoring.max_text_tokens} text tokens, {teacher.details.get('n_gpu_layers', 0)} GPU layers, "
                 f"{parallel} texts per decode")
        # One text per decode: throughput is one over the mean latency; wider decodes are timed on all texts at once.
        rate = len(texts) / seconds.sum() if parallel == 1 else throughput(probs, texts)
        scores = np.array(rows) if prior is None else batch_calibrated(np.array(rows), np.asarray(prior))
        if prior is not None:
            about += ", pool calibration of the run applied"
        return _entry(about, _size_mb(teacher.model.path) if teacher.model.path else None, seconds, rate, scores, gold, labels)
    finally:
        teacher.close()


def _entry(about: str, size_mb: float | None, seconds: np.ndarray, rate: float, scores: np.ndarray, gold, labels) -> dict:
    entry = {"about": about, "size_mb": size_mb, **summarise_latency(seconds), "texts_per_s": round(rate, 2)}
    if gold is not None:
        predicted = [labels[j] for j in np.asarray(scores).argmax(axis=1)]
        q = classification_scores(gold, predicted, labels)
        entry.update(accuracy=round(q["accuracy"], 4), macro_f1=round(q["macro_f1"], 4))
    return entry


def _ratios(results: dict, default: str) -> dict:
    """How many times faster (latency: p50 at batch 1; throughput: texts/s at the batch size)."""
    def pair(fast: str, slow: str) -> dict | None:
        if fast not in results or slow not in results:
            return None
        return {"p50_latency": round(results[slow]["p50_ms"] / results[fast]["p50_ms"], 2),
                "throughput": round(results[fast]["texts_per_s"] / results[slow]["texts_per_s"], 2)}

    ratios = {
        f"{default}_vs_teacher": pair(default, "teacher"),
        "onnx-fp32_vs_pytorch": pair("onnx-fp32", "pytorch"),
        "onnx-int8_vs_pytorch": pair("onnx-int8", "pytorch"),
        "onnx-int8_vs_onnx-fp32": pair("onnx-int8", "onnx-fp32"),
        "onnx-int8-static_vs_onnx-fp32": pair("onnx-int8-static", "onnx-fp32"),
        "pytorch_vs_teacher": pair("pytorch", "teacher"),
    }
    return {k: v for k, v in ratios.items() if v is not None}


def format_report(report: dict) -> str:
    """The bench report as a Markdown table plus its ratios (what `llkd-edge bench` prints)."""
    results = report["results"]
    quality = report["gold"]
    header = ["model", "size MB", "p50 ms", "p95 ms", "texts/s"] + (["accuracy", "macro-F1"] if quality else [])
    rows = []
    for name in ("teacher", "pytorch", "onnx-fp32", "onnx-int8", "onnx-int8-static"):
        if name not in results:
            continue
        r = results[name]
        mark = " (default)" if name == report["default_variant"] else ""
        size = "-" if r["size_mb"] is None else f"{r['size_mb']:.1f}"  # a served teacher's file is not ours to see
        row = [f"{name}{mark}", size, _ms(r["p50_ms"]), _ms(r["p95_ms"]), f"{r['texts_per_s']:.1f}"]
        if quality:
            row += [f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}"]
        rows.append(row)
    m = report["machine"]
    lines = [f"{report['texts']} texts, {m['threads']} threads ({m['cpu']}; {m.get('instruction_sets', '?')}); "
             f"latency at batch 1, throughput at batch {report['batch_size']}", "", markdown_table(header, rows)]
    lines.append("")
    for key, ratio in report["ratios"].items():
        fast, slow = key.split("_vs_")
        lines.append(f"{fast} vs {slow}: {ratio['p50_latency']}x faster per text, {ratio['throughput']}x the throughput")
    return "\n".join(lines)


def _ms(value: float) -> str:
    """Milliseconds with the digits that matter: a static student's 0.25 ms must not print as 0.2."""
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _size_mb(*paths: Path) -> float:
    return round(sum(Path(p).stat().st_size for p in paths) / 1e6, 2)

