"""Can a few gold texts pick the teacher's prompt, or serve as its few-shot demonstrations?

    python -m bench.gold_prompt                    # 4 datasets x (9 candidates + built-in + few-shot) x 200 texts; resumes, ~2 h on 1 core
    python -m bench.gold_prompt --report-only      # re-render from runs/gold_prompt/scores.json

The setting is a user's own data with a gold file and no written task (`--prompt auto`): the candidates
are exactly prompts.candidates' (3 wordings x 3 answer cues). Every candidate labels the first N test texts
of each built-in set with the default teacher (gemma3-270m, 128 text tokens); rows are cached per candidate.
Then, for each of DRAWS seeded draws of G gold texts per class from those N texts, each chooser picks a
candidate and is scored by the chosen candidate's batch-calibrated macro-F1 on the texts outside the draw (the
choosers that read gold see at most prompts.GOLD_FOR_CHOICE of the drawn texts, as `--gold` does):

- `answer information`: the label-free criterion `--prompt auto` uses today, on 12 texts outside the draw;
- `gold accuracy`, `gold macro-F1`, `gold log-likelihood`: the candidate's labels on the drawn gold texts,
  batch-calibrated with the prior of the 12 sample texts and the gold texts together (prompts.gold_accuracy,
  prompts.gold_log_likelihood: the latter is what `--gold` ranks by since it won here);
- `gold accuracy, then information`: accuracy, ties broken by answer information (what `--gold` did first).

Few-shot: the generic prompt / `Category:` with one demonstration per class in the prompt, the demonstrations
drawn (seeded) from the train split, scored on the same N test texts; built-in task / `Category:` is the
hand-written reference. Draw-to-draw spread is the standard deviation over draws.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import arguments, cache_options, markdown_table, record, write_report
from llkd_edge.config import ScoringConfig, TeacherConfig
from llkd_edge.data import Dataset, builtin_spec, load_builtin
from llkd_edge.distributions import answer_information, batch_calibrated, pool_prior
from llkd_edge.files import read_json, write_json
from llkd_edge.labels.labelling import resolve_labels
from llkd_edge.metrics import classification_scores
from llkd_edge.teacher.prompts import candidates, gold_accuracy, gold_log_likelihood, gold_sample

DATASETS = ("bbc-news", "reuters-r8", "20newsgroups", "election-tweets")
DRAWS = 200
FEW_SHOT_SEEDS = (0,)
CHOOSERS = ("answer information", "gold accuracy", "gold macro-F1", "gold log-likelihood",
            "gold accuracy, then information")


def configurations(dataset: str, max_text_tokens: int, train) -> dict[str, ScoringConfig]:
    """Every prompt labelled: the 9 auto candidates, the built-in task, and generic + few-shot per seed."""
    spec = builtin_spec(dataset)
    base = ScoringConfig(labels=resolve_labels(None, spec.labels), max_text_tokens=max_text_tokens)
    out = {c.name: c.scoring for c in candidates(base, chat=False)}
    out["built-in / Category:"] = replace(base, task=spec.task)
    for seed in FEW_SHOT_SEEDS:
        rng = np.random.default_rng(seed)
        gold = np.array(train.gold)
        shots = tuple((train.texts[int(rng.choice(np.flatnonzero(gold == name)))], name) for name in base.labels.names)
        out[f"few-shot (1 per class, draw {seed})"] = replace(base, few_shot=shots)
    return out


def label_all(datasets, n: int, max_text_tokens: int, threads: int, cache_path: Path) -> dict:
    from tqdm.auto import tqdm

    from llkd_edge.teacher.llama import load_teacher

    cache = read_json(cache_path) if cache_path.exists() else {}
    teacher = None
    try:
        for dataset in datasets:
            texts = load_builtin(f"{dataset}:test").texts[:n]
            for name, scoring in configurations(dataset, max_text_tokens, load_builtin(dataset)).items():
                key = f"{dataset}|{name}|{n}|{max_text_tokens}"
                if key in cache:
                    continue
                if teacher is not None and scoring.few_shot:  # a context sized for the demonstrations
                    teacher.close()
                    teacher = None
                if teacher is None:
                    teacher = load_teacher(scoring, TeacherConfig(n_threads=threads))
                else:
                    teacher.use(scoring)
                started, rows = time.perf_counter(), []
                for i in tqdm(range(0, len(texts), 8), desc=f"{dataset} {name}", leave=False):
                    rows += teacher.score(texts[i : i + 8])
                cache[key] = {"probs": [list(r.probs) for r in rows], "seconds": round(time.perf_counter() - started, 2)}
                write_json(cache_path, cache)
    finally:
        if teacher is not None:
            teacher.close()
    return cache


def draw(y: np.ndarray, k: int, per: int, rng) -> np.ndarray:
    return np.concatenate([rng.permutation(np.flatnonzero(y == j))[:per] for j in range(k)])


def choose(chooser: str, probs: dict[str, np.ndarray], gold_idx, rest_idx, y, rng) -> str:
    """The candidate ``chooser`` picks, seeing only the gold draw and 12 texts outside it (the pool sample),
    calibrated as prompts.choose calibrates them (the prior of sample and gold rows together)."""
    scores = {}
    sample = rng.choice(rest_idx, min(12, len(rest_idx)), replace=False)
    for name, p in probs.items():
        yg = y[gold_idx]
        pred = batch_calibrated(p[gold_idx], pool_prior(np.vstack([p[sample], p[gold_idx]]))).argmax(1)
        info = answer_information(p[sample])
        acc = gold_accuracy(p[sample], p[gold_idx], yg)
        scores[name] = {"answer information": info, "gold accuracy": acc,
                        "gold macro-F1": classification_scores(yg.tolist(), pred.tolist(), list(range(p.shape[1])))["macro_f1"],
                        "gold log-likelihood": gold_log_likelihood(p[sample], p[gold_idx], yg),  # the product's rule
                        "gold accuracy, then information": acc + 1e-3 * info}[chooser]
    return max(scores, key=lambda name: scores[name])  # exact ties: the first candidate, as prompts.choose


def summarise(cache: dict, datasets, n: int, max_text_tokens: int, per_class: tuple[int, ...]) -> list[dict]:
    rows = []
    for dataset in datasets:
        spec = builtin_spec(dataset)
        names = list(resolve_labels(None, spec.labels).names)
        test = load_builtin(f"{dataset}:test")
        y = np.array([names.index(g) for g in test.gold[:n]])
        got = {name: np.array(cache[f"{dataset}|{name}|{n}|{max_text_tokens}"]["probs"])
               for name in configurations(dataset, max_text_tokens, load_builtin(dataset))
               if f"{dataset}|{name}|{n}|{max_text_tokens}" in cache}
        auto = {k: v for k, v in got.items() if " / " in k and not k.startswith("built-in")}
        if len(auto) < 9:
            continue

        def f1(p, idx):
            q = batch_calibrated(p[idx], pool_prior(p[idx]))
            return classification_scores(y[idx].tolist(), q.argmax(1).tolist(), list(range(len(names))))["macro_f1"]

        everything = np.arange(len(y))
        entry = {"dataset": dataset, "texts": len(y),
                 "fixed": {name: round(f1(p, everything), 4) for name, p in got.items()},
                 "best_candidate": max(auto, key=lambda k: f1(auto[k], everything)), "choosers": {}}
        for per in per_class:
            rng = np.random.default_rng(per)
            results = {c: [] for c in (*CHOOSERS, "best candidate (oracle)", "generic / Category:")}
            for _ in range(DRAWS):
                gold_idx = draw(y, len(names), per, rng)
                rest = np.setdiff1d(everything, gold_idx)
                scored = {name: f1(p, rest) for name, p in auto.items()}
                tried = gold_sample(Dataset("draw", [str(i) for i in gold_idx], [str(y[i]) for i in gold_idx]))
                tried = np.array([int(t) for t in tried.texts])  # at most GOLD_FOR_CHOICE, as --gold tries
                for chooser in CHOOSERS:
                    results[chooser].append(scored[choose(chooser, auto, tried, rest, y, rng)])
                results["best candidate (oracle)"].append(max(scored.values()))
                results["generic / Category:"].append(scored["generic / Category:"])
            entry["choosers"][per] = {c: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4)}
                                      for c, v in results.items()}
        rows.append(entry)
    return rows


def markdown(rows: list[dict], per_class: tuple[int, ...]) -> str:
    lines = []
    for per in per_class:
        cols = ("generic / Category:", *CHOOSERS, "best candidate (oracle)")
        lines += [f"Chosen prompt's teacher macro-F1 (batch-calibrated) on the texts outside a draw of {per} gold "
                  f"texts per class, mean ± std over {DRAWS} draws.", "",
                  markdown_table(["dataset", *cols],
                                 [[r["dataset"], *(f"{r['choosers'][per][c]['mean']:.3f} ± {r['choosers'][per][c]['std']:.3f}"
                                                   for c in cols)] for r in rows if per in r["choosers"]]), ""]
    names = list(dict.fromkeys(k for r in rows for k in r["fixed"]))
    lines += ["Every prompt on all N texts (batch-calibrated macro-F1):", "",
              markdown_table(["prompt", *(r["dataset"] for r in rows)],
                             [[k, *(f"{r['fixed'][k]:.3f}" if k in r["fixed"] else "-" for r in rows)] for k in names])]
    return "\n".join(lines)


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--max-text-tokens", type=int, default=128)
    parser.add_argument("--per-class", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    args = cache_options(parser, "gold_prompt").parse_args()
    cache_path = Path(args.cache)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.report_only:
        cache = read_json(cache_path)
    else:
        cache = label_all(args.datasets, args.texts, args.max_text_tokens, args.threads, cache_path)
    per_class = tuple(args.per_class)
    rows = summarise(cache, args.datasets, args.texts, args.max_text_tokens, per_class)
    report = {**record(args.threads), "texts": args.texts, "max_text_tokens": args.max_text_tokens, "draws": DRAWS,
              "per_class": per_class, "rows": rows, "seconds": round(time.perf_counter() - started, 1)}
    table = markdown(rows, per_class)
    write_report(Path(args.out), report, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
