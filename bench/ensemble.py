"""Teacher ensembles (`--teacher a,b`, issue 15): each packaged teacher alone against their log-linear pools.

    python -m bench.ensemble                       # 3 teachers x 4 built-in sets x first 120 test texts (resumes)
    python -m bench.ensemble --report-only         # the table again from the store, no teacher time

Every teacher labels the first N test texts of each built-in set with the dataset's own task, 128 text
tokens, through `labelling.label_dataset` into one store (so a re-run, or an ensemble of teachers that
have already labelled, costs nothing). Members are timed alone; an ensemble's rows are then read back
through the product's own path (`open_backend` with `a,b` -> `Ensemble` -> pooled rows). Any `--teacher` value
is a member: a GGUF, `encoder` (the sentence encoder as a zero-shot teacher), `openai:URL`. Scores are gold
macro-F1 as stored (contextual calibration) and batch-calibrated over the same texts, as `distill` reads a pool.
The pooled alternatives that the product does not use (weights by answer information, a linear mixture)
are computed from the same rows, for the record.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np

from bench.common import RESULTS, arguments, markdown_table, record, write_report
from llkd_edge.config import LabelSet, ScoringConfig, TeacherConfig
from llkd_edge.data import load_builtin
from llkd_edge.distributions import answer_information, batch_calibrated, pool_prior
from llkd_edge.teacher.ensemble import log_linear_pool
from llkd_edge.labels.labelling import label_dataset
from llkd_edge.metrics import classification_scores
from llkd_edge.store import LabelStore, unique_texts
from llkd_edge.teacher.backend import open_backend

DATASETS = ("election-tweets", "bbc-news", "reuters-r8", "20newsgroups", "slo-sentiment")
# the first four were the default study (issue 15); `--teachers gemma3-270m encoder` pools the LLM with the encoder
TEACHERS = ("gemma3-270m", "qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct")


def scores(probs: np.ndarray, gold: list[str], names: tuple[str, ...]) -> dict:
    """Gold macro-F1 and accuracy of ``probs`` (N, K) as given and batch-calibrated over its own rows."""
    out = {}
    for how, p in (("stored", probs), ("batch", batch_calibrated(probs, pool_prior(probs)))):
        s = classification_scores(gold, [names[i] for i in p.argmax(1)], names)
        out[how] = {"macro_f1": round(s["macro_f1"], 4), "accuracy": round(s["accuracy"], 4)}
    return out


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS[:4]))
    parser.add_argument("--teachers", nargs="+", default=list(TEACHERS))
    parser.add_argument("--limit", type=int, default=120)
    parser.add_argument("--max-text-tokens", type=int, default=128)
    parser.add_argument("--store", default="runs/ensemble/labels.sqlite")
    parser.add_argument("--report-only", action="store_true", help="read rows already in the store; label nothing")
    parser.add_argument("--out", default=str(RESULTS / "ensemble.json"))
    args = parser.parse_args()
    Path(args.store).parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = []
    for dataset in args.datasets:
        data = load_builtin(f"{dataset}:test").head(args.limit)
        labels = LabelSet.parse(data.labels)
        scoring = ScoringConfig(labels=labels, task=data.task, max_text_tokens=args.max_text_tokens)
        rows, speed = {}, {}
        for name in args.teachers:
            teacher = open_backend(scoring, TeacherConfig(model=name, n_threads=args.threads), progress=False)
            try:
                if args.report_only:  # what the store holds, nothing asked
                    order = list(unique_texts(data.texts)[0])
                    with LabelStore(args.store) as store:
                        if len(store.cached(teacher.key, order)) < len(order):
                            continue
                got = label_dataset(data, teacher, args.store, progress=not args.report_only, role="eval")
            finally:
                teacher.close()
            rows[name], gold = got, got.gold
            if got.labelled:
                speed[name] = round(got.labelled / got.seconds, 2)
        names = labels.names
        entries = []
        for size in range(1, len(rows) + 1):
            for members in itertools.combinations(rows, size):
                if size == 1:
                    probs = np.array([r.probs for r in rows[members[0]].rows])
                else:  # the product's path: an Ensemble's rows, every member read back from the store
                    teacher = open_backend(scoring, TeacherConfig(model=",".join(members), n_threads=args.threads),
                                           progress=False)
                    try:
                        probs = np.array([r.probs for r in label_dataset(data, teacher, args.store, progress=False,
                                                                         role="eval").rows])
                    finally:
                        teacher.close()
                entry = {"dataset": dataset, "teachers": list(members), **scores(probs, gold, names),
                         "answer_information": round(answer_information(probs), 4),
                         "texts_per_second": {m: speed.get(m) for m in members}}
                if size > 1:  # alternatives the product does not use, from the same rows
                    parts = [np.array([r.probs for r in rows[m].rows]) for m in members]
                    info = np.array([answer_information(p) for p in parts])
                    entry["weighted_by_information"] = scores(log_linear_pool(parts, info / info.sum()), gold, names)
                    entry["linear_mixture"] = scores(np.mean(parts, axis=0), gold, names)
                entries.append(entry)
        majority = max(gold.count(g) for g in set(gold)) / len(gold)
        for e in entries:
            e["majority_rate"] = round(majority, 4)
        results += entries
    table = markdown(results, args.limit)
    print(table)
    report = {**record(args.threads), "limit": args.limit, "max_text_tokens": args.max_text_tokens,
              "results": results, "seconds": round(time.perf_counter() - started, 1)}
    write_report(Path(args.out), report, table)
    print(f"wrote {args.out}")
    return 0


def markdown(results: list[dict], limit: int) -> str:
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        mine = [r for r in results if r["dataset"] == dataset]
        best = max(r["batch"]["macro_f1"] for r in mine)
        out += [f"**{dataset}**, first {limit} test texts, majority rate {mine[0]['majority_rate']:.3f}.", "",
                markdown_table(
                    ["teachers", "macro-F1 stored", "macro-F1 batch-cal.", "accuracy batch-cal.", "answer information",
                     "by information (batch-cal.)", "linear mixture (batch-cal.)", "texts/s alone"],
                    [[" + ".join(f"`{t}`" for t in r["teachers"]), f"{r['stored']['macro_f1']:.3f}",
                      ("**%.3f**" if r["batch"]["macro_f1"] == best else "%.3f") % r["batch"]["macro_f1"],
                      f"{r['batch']['accuracy']:.3f}", f"{r['answer_information']:.3f}",
                      f"{r['weighted_by_information']['batch']['macro_f1']:.3f}" if "linear_mixture" in r else "-",
                      f"{r['linear_mixture']['batch']['macro_f1']:.3f}" if "linear_mixture" in r else "-",
                      ", ".join(f"{v:g}" if v else "cached" for v in r["texts_per_second"].values())]
                     for r in mine]), ""]
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
