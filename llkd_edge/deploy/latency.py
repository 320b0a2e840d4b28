"""How fast each registered student runs on this machine: the choice behind `distill --student auto --max-latency-ms X`.

A student's speed does not depend on its weights, so a candidate is timed before it is trained: built untrained
with the run's labels, written as the ONNX files an export would write (``export.write_graphs``: O2 for a
transformer, int8 beside fp32) and run through the torch-free runtime at batch 1 on the pool's own texts, with
the threads the app will have. The candidates are tried best first (``rank`` in models/students.toml, from
bench/frontier.py: mean macro-F1 over the built-in sets) and the first whose faster variant meets the budget is
the choice. Timings are kept in the cache (per machine, threads, token budget and versions), so each candidate is
exported once per machine.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import write_json
from ..registry import cache_dir, registry
from ..report import cpu_model, instruction_sets
from ..runtime import MANIFEST, Classifier
from .bench import latencies

TIMED_TEXTS = 64
ROUNDS = 3


def candidates() -> list[str]:
    """The registered students with a rank, best first."""
    ranked = [(entry["rank"], name) for name, entry in registry("students").items() if "rank" in entry]
    return [name for _, name in sorted(ranked)]


def measure(student: str, labels: list[str], max_length: int, threads: int, texts: list[str]) -> dict[str, float]:
    """p50 milliseconds at batch 1 of each variant (fp32, int8) of ``student``, untrained, on ``texts`` through
    the runtime. The texts go through once first, so the runtime has their words (as an app that has seen its
    traffic); the best of ``ROUNDS`` p50s counts (these machines are noisy)."""
    from ..student.train import build_student, save_student
    from .export import write_graphs

    with tempfile.TemporaryDirectory(prefix="llkd-edge-latency-") as tmp:
        built = build_student(student, labels, seed=0)
        student_dir = save_student(built, Path(tmp) / "student")
        work = Path(tmp) / "model"
        work.mkdir()
        variants = write_graphs(student_dir, work, max_length, "O2", ("int8",), [])
        write_json(work / MANIFEST, {"format": 1, "labels": list(labels), "max_length": max_length, "default": "fp32",
                                     "pad_token_id": int(built.tokenizer.pad_token_id or 0), "variants": variants})
        out = {}
        for variant in variants:
            clf = Classifier.load(work, variant=variant, threads=threads, device="cpu")
            clf.logits(texts)
            p50 = min(float(np.percentile(latencies(lambda batch: clf.logits(batch, 1), texts), 50))
                      for _ in range(ROUNDS))
            out[variant] = round(p50 * 1e3, 3)
    return out


def _cache_key(student: str, n_labels: int, max_length: int, threads: int) -> str:
    from ..student.runs import versions

    found = versions("onnxruntime", "tokenizers")
    return json.dumps([student, n_labels, max_length, threads, cpu_model(), instruction_sets(),
                       found.get("llkd-edge"), found.get("onnxruntime"), found.get("tokenizers")])


def timed(student: str, labels: list[str], max_length: int, threads: int, texts: list[str]) -> dict[str, float]:
    """``measure``, from the cache where this machine has timed this candidate before."""
    path = cache_dir() / "latency.json"
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    key = _cache_key(student, len(labels), max_length, threads)
    hit = cache.get(key)
    if isinstance(hit, dict) and hit and all(isinstance(v, (int, float)) for v in hit.values()):
        return hit
    cache[key] = measure(student, labels, max_length, threads, texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, cache)
    return cache[key]


def choose(max_latency_ms: float, labels: list[str], max_length: int, threads: int, texts: list[str],
           say=lambda message: None) -> dict:
    """The best candidate whose faster variant runs at batch 1 within ``max_latency_ms`` here; a record of what
    was timed (``{"student", "max_latency_ms", "threads", "timed": {name: {variant: p50 ms}}}``). None meets the
    budget: one UserError line naming the fastest."""
    if not max_latency_ms > 0:
        raise UserError(f"--max-latency-ms must be positive, got {max_latency_ms}")
    texts = [t for t in texts if t.strip()][:TIMED_TEXTS]
    if not texts:
        raise UserError("--student auto: no texts to time the candidates on")
    record = {"max_latency_ms": max_latency_ms, "threads": threads, "max_length": max_length, "cpu": cpu_model(),
              "instruction_sets": instruction_sets(), "timed": {}, "student": None}
    for name in candidates():
        say(f"timing the {name} student here (untrained, batch 1, {threads} threads)")
        record["timed"][name] = timed(name, labels, max_length, threads, texts)
        fastest = min(record["timed"][name].values())
        say(f"{name}: p50 {fastest:.2f} ms at batch 1")
        if fastest <= max_latency_ms:
            record["student"] = name
            return record
    best = min(record["timed"], key=lambda n: min(record["timed"][n].values()))
    raise UserError(f"no student runs within {max_latency_ms:g} ms a text here: the fastest, {best}, takes "
                    f"{min(record['timed'][best].values()):.2f} ms at batch 1 with {threads} threads")
