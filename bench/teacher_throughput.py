"""Teacher throughput: `label`'s cached-prefix path vs llama.cpp's raw evaluation and a naive path.

On the same BBC News texts (truncated to 128 tokens), side by side in one run, alternating rounds:

* raw:    llama.cpp alone evaluating exactly the tokens the label path evaluates (each text + answer cue
          after the cached prefix), nothing else: no tokenising, no maths, no store. The ceiling.
* label:  the full `label` stage (`label_texts`): tokenise, evaluate, label maths, sqlite commits.
* naive:  what a plain implementation does: reset and evaluate the whole prompt (prefix + text) per text.

Two prompts: zero-shot (short prefix) and 5-shot (one example per class, long prefix), because the
cached prefix matters in proportion to the prefix's length. Threads are fixed and printed.

    python -m bench.teacher_throughput [--texts 60] [--rounds 2] [--threads N]

Writes bench/results/teacher_throughput.json and prints a Markdown table.
"""

from __future__ import annotations

import sys
import tempfile
import time

from bench.common import RESULTS, arguments, markdown_table, record, write_report
from llkd_edge.config import (
    LabelRunConfig,
    LabelSet,
    ScoringConfig,
    TeacherConfig,
    default_threads,
)
from llkd_edge.data import load_builtin
from llkd_edge.labels.labelling import label_texts
from llkd_edge.registry import resolve_teacher
from llkd_edge.teacher.llama import Teacher

OUT = RESULTS / "teacher_throughput.json"


def time_raw(teacher: Teacher, token_lists: list[list[int]]) -> float:
    """llama.cpp only: the same per-text evaluations the label path does, prefix cached."""
    llm = teacher.llm  # the benchmark measures the binding directly, on purpose
    prefix = teacher.prefix_tokens
    llm.reset()
    llm.eval(prefix)
    start = time.perf_counter()
    for tokens in token_lists:
        llm.n_tokens = len(prefix)
        llm.eval(tokens)
    elapsed = time.perf_counter() - start
    teacher.release_cache()  # we moved the cache under the teacher's feet
    return elapsed


def time_naive(teacher: Teacher, token_lists: list[list[int]]) -> float:
    """Re-evaluate the whole prompt for every text (no prefix reuse)."""
    llm = teacher.llm
    prefix = teacher.prefix_tokens
    start = time.perf_counter()
    for tokens in token_lists:
        llm.reset()
        llm.eval(prefix + tokens)
    elapsed = time.perf_counter() - start
    teacher.release_cache()
    return elapsed


def time_label(teacher: Teacher, data: str, limit: int, scoring: ScoringConfig) -> float:
    """The real `label` stage into a fresh store (so every text is evaluated)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = LabelRunConfig(data=data, scoring=scoring, store=f"{tmp}/labels.sqlite", limit=limit)
        start = time.perf_counter()
        summary = label_texts(config, teacher_factory=lambda *_: teacher, progress=False)
        elapsed = time.perf_counter() - start
    assert summary.labelled == limit, summary
    return elapsed


def run_prompt(name: str, scoring: ScoringConfig, texts: list[str], data: str, args) -> dict:
    teacher = Teacher(resolve_teacher(args.teacher), scoring, TeacherConfig(model=args.teacher, n_threads=args.threads))
    teacher.content_free  # calibration is a one-off; keep it out of the timings
    token_lists = [teacher.answer_tokens(t) for t in texts]
    per_text_tokens = sum(len(t) for t in token_lists)
    prefix_len = len(teacher.prefix_tokens)
    times: dict[str, list[float]] = {"raw": [], "label": [], "naive": []}
    for _ in range(args.rounds):  # alternate, so a noisy neighbour hurts every path alike
        times["raw"].append(time_raw(teacher, token_lists))
        times["label"].append(time_label(teacher, data, len(texts), scoring))
        times["naive"].append(time_naive(teacher, token_lists))
    teacher.close()
    best = {k: min(v) for k, v in times.items()}
    n = len(texts)
    naive_tokens = per_text_tokens + n * prefix_len
    return {
        "prompt": name,
        "prefix_tokens": prefix_len,
        "mean_text_tokens": round(per_text_tokens / n, 1),
        "texts": n,
        "seconds_best": {k: round(v, 3) for k, v in best.items()},
        "seconds_all": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "texts_per_s": {k: round(n / v, 2) for k, v in best.items()},
        "eval_tokens_per_s": {
            "raw": round(per_text_tokens / best["raw"], 1),
            "label": round(per_text_tokens / best["label"], 1),
            "naive": round(naive_tokens / best["naive"], 1),
        },
        "ratios": {
            "label_time_over_raw": round(best["label"] / best["raw"], 3),
            "naive_time_over_label": round(best["naive"] / best["label"], 3),
        },
    }


def llama_system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode()


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--texts", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--teacher", default="gemma3-270m")
    parser.add_argument("--max-text-tokens", type=int, default=128)
    args = parser.parse_args()

    data = "bbc-news:test"
    test = load_builtin(data).head(args.texts)
    train = load_builtin("bbc-news:train")
    labels = LabelSet.parse(test.labels)
    shots = []
    for name in labels.names:  # one example per class, from the train split
        i = train.gold.index(name)
        shots.append((train.texts[i], name))
    prompts = {
        "zero-shot": ScoringConfig(labels=labels, task=test.task, max_text_tokens=args.max_text_tokens),
        "5-shot": ScoringConfig(labels=labels, task=test.task, max_text_tokens=args.max_text_tokens, few_shot=tuple(shots)),
    }
    results = [run_prompt(name, scoring, test.texts, data, args) for name, scoring in prompts.items()]
    report = {
        **record(args.threads, "llama_cpp_python"),
        "llama_cpp_system_info": llama_system_info(),
        "cpus": default_threads(),
        "teacher": args.teacher,
        "max_text_tokens": args.max_text_tokens,
        "results": results,
    }
    write_report(OUT, report)

    print(f"teacher {args.teacher}, {args.threads} threads, {args.texts} BBC test texts at <= {args.max_text_tokens} "
          f"tokens, best of {args.rounds} alternating rounds\n")
    print(markdown_table(["prompt", "prefix tok", "path", "texts/s", "eval tok/s", "time vs raw"],
                         [[r["prompt"], r["prefix_tokens"], path, r["texts_per_s"][path], r["eval_tokens_per_s"][path],
                           f"{r['seconds_best'][path] / r['seconds_best']['raw']:.2f}x"]
                          for r in results for path in ("raw", "label", "naive")]))
    print()
    for r in results:
        print(f"{r['prompt']}: label path takes {r['ratios']['label_time_over_raw']}x the raw llama.cpp time; "
              f"naive takes {r['ratios']['naive_time_over_label']}x the label path's time")
    print(f"\nwrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
