"""Labelling beyond one process: texts per decode and Ray workers, each set of alternatives side by side.

Part 1, texts per decode (--parallel): one teacher process scores the same texts with 1, 2, 4 and 8 texts
per llama.cpp decode (multi-sequence batching: the cached prefix copied to each sequence). This is where
a GPU gains (--n-gpu-layers -1 on a CUDA build); on a CPU the matmuls are already compute-bound.

Part 2, backends: `label` into a fresh store with the local backend (one process, T threads), with Ray and
one worker (T CPUs), and with Ray and two workers (T/2 CPUs each), on one local Ray instance of T CPUs.
Reported: the labelling loop's texts/s (as `label` reports it) and the whole call's seconds (Ray actors
starting and loading their teachers included). Same texts, alternating rounds, each keeps its best.

    python -m bench.scale_throughput [--texts 96] [--rounds 2] [--threads T] [--teacher gemma3-270m]
                                     [--n-gpu-layers N]

Writes bench/results/scale_throughput.json and prints Markdown tables.
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np

from bench.common import RESULTS, arguments, markdown_table, record, write_report
from llkd_edge.config import (
    LabelRunConfig,
    LabelSet,
    RayConfig,
    ScoringConfig,
    TeacherConfig,
    default_threads,
)
from llkd_edge.data import load_builtin
from llkd_edge.labels.labelling import label_texts
from llkd_edge.registry import resolve_teacher
from llkd_edge.teacher.llama import Teacher

OUT = RESULTS / "scale_throughput.json"
DATA = "bbc-news:train"
WIDTHS = (1, 2, 4, 8)


def time_widths(args, scoring: ScoringConfig, texts: list[str]) -> dict:
    model = resolve_teacher(args.teacher)
    teachers = {w: Teacher(model, scoring, TeacherConfig(model=args.teacher, n_threads=args.threads,
                                                          n_gpu_layers=args.n_gpu_layers, parallel=w))
                for w in WIDTHS}
    best = dict.fromkeys(WIDTHS, np.inf)
    probs = {}
    try:
        for t in teachers.values():
            t.score(texts[: max(WIDTHS)])  # warm-up: prefix, calibration inputs, the batched context
        for _ in range(args.rounds):
            for w, t in teachers.items():
                start = time.perf_counter()
                probs[w] = t.predict_proba(texts)
                best[w] = min(best[w], time.perf_counter() - start)
        layers = teachers[1].n_gpu_layers
    finally:
        for t in teachers.values():
            t.close()
    base = best[1]
    return {
        "n_gpu_layers": layers,
        "texts_per_s": {w: round(len(texts) / best[w], 2) for w in WIDTHS},
        "speed_vs_one": {w: round(base / best[w], 3) for w in WIDTHS},
        "same_label_as_one": {w: round(float(np.mean(probs[w].argmax(1) == probs[1].argmax(1))), 3) for w in WIDTHS},
        "mean_abs_diff_vs_one": {w: round(float(np.abs(probs[w] - probs[1]).mean()), 5) for w in WIDTHS},
    }


def time_backends(args, scoring: ScoringConfig) -> dict:
    import ray

    ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    half = max(1, args.threads // 2)
    setups = {
        "local, 1 process": dict(backend="local", teacher=TeacherConfig(model=args.teacher, n_threads=args.threads)),
        f"ray, 1 worker x {args.threads} CPUs": dict(backend="ray", ray=RayConfig(workers=1, cpus_per_worker=args.threads)),
        f"ray, 2 workers x {half} CPUs": dict(backend="ray", ray=RayConfig(workers=2, cpus_per_worker=half)),
    }
    rate = dict.fromkeys(setups, 0.0)
    whole = dict.fromkeys(setups, np.inf)
    try:
        for _ in range(args.rounds):
            for name, setup in setups.items():
                with tempfile.TemporaryDirectory() as tmp:
                    config = LabelRunConfig(data=DATA, scoring=scoring, store=f"{tmp}/labels.sqlite", limit=args.texts,
                                            **{"teacher": TeacherConfig(model=args.teacher), **setup})
                    start = time.perf_counter()
                    summary = label_texts(config, progress=False)
                    whole[name] = min(whole[name], time.perf_counter() - start)
                assert summary.labelled == args.texts, summary
                rate[name] = max(rate[name], summary.texts_per_second)
    finally:
        ray.shutdown()
    first = next(iter(setups))
    return {
        "texts_per_s": {k: round(v, 2) for k, v in rate.items()},
        "speed_vs_local": {k: round(v / rate[first], 3) for k, v in rate.items()},
        "whole_call_seconds": {k: round(v, 2) for k, v in whole.items()},
    }


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--texts", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--teacher", default="gemma3-270m")
    parser.add_argument("--max-text-tokens", type=int, default=128)
    parser.add_argument("--n-gpu-layers", type=int, default=None, help="default: all when the build can offload")
    parser.add_argument("--skip-ray", action="store_true", help="only the texts-per-decode part")
    args = parser.parse_args()

    data = load_builtin(DATA).head(args.texts)
    scoring = ScoringConfig(labels=LabelSet.parse(data.labels), task=data.task, max_text_tokens=args.max_text_tokens)
    widths = time_widths(args, scoring, data.texts)
    backends = None if args.skip_ray else time_backends(args, scoring)
    report = {
        **record(args.threads, "llama_cpp_python", "ray"),
        "cpus": default_threads(),
        "teacher": args.teacher,
        "texts": args.texts,
        "max_text_tokens": args.max_text_tokens,
        "rounds": args.rounds,
        "widths": widths,
        "backends": backends,
    }
    write_report(OUT, report)

    print(f"teacher {args.teacher}, {args.texts} BBC train texts at <= {args.max_text_tokens} tokens, "
          f"{args.threads} threads, {widths['n_gpu_layers']} GPU layers, best of {args.rounds} alternating rounds\n")
    print(markdown_table(["texts per decode", "texts/s", "vs 1", "same label as 1", "mean abs diff vs 1"],
                         [[w, widths["texts_per_s"][w], f"{widths['speed_vs_one'][w]:.2f}x",
                           f"{widths['same_label_as_one'][w]:.3f}", widths["mean_abs_diff_vs_one"][w]] for w in WIDTHS]))
    if backends:
        print()
        print(markdown_table(["backend", "texts/s (labelling)", "vs local", "whole call s (start-up included)"],
                             [[name, backends["texts_per_s"][name], f"{backends['speed_vs_local'][name]:.2f}x",
                               backends["whole_call_seconds"][name]] for name in backends["texts_per_s"]]))
    print(f"\nwrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
