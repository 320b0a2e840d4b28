"""Issue 47 part 3 with gold texts: can a few gold-labelled texts choose between the LLM, the encoder teacher and
their pool, where no label-free criterion could (bench/mixed_teachers.py)?

    python -m bench.gold_teacher        # after bench/probe_head.sh and bench/mixed_teachers.py (reads their stores)

The rows are the ones bench/mixed_teachers.py reads (the LLM's from the study's stores, the encoder teacher's from
runs/mixed_teachers), cached in runs/gold_teacher/rows-SET.npz. For G gold texts per class, each of 200 seeded
draws takes G texts of every class from the pool texts as the user's gold file; every candidate is scored on them
the way `--gold` ranks prompts (teacher.prompts.gold_log_likelihood: rows calibrated with the prior of a 64-text
pool sample plus the gold texts), the best is kept, and it is judged on what the student would learn from: its
pool-calibrated macro-F1 on the pool texts outside the draw, and on the test texts. Against the LLM alone (today's
default teacher) and the best single candidate in hindsight. Other choosers, side by side: gold accuracy (ties by
log-likelihood), the log-likelihood at each candidate's best temperature on the gold texts ("tempered"), and the
log-likelihood among the candidates at least as accurate on the gold texts as the LLM ("as accurate": what `--gold`
advises, labels/alternatives.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench.common import RESULTS, arguments, command, machine, markdown_table, write_report
from bench.mixed_teachers import OUT as ENCODER_STORES, SETS, SIZES, STUDY, calibrated, stored_rows
from llkd_edge.config import ScoringConfig
from llkd_edge.data import load_builtin
from llkd_edge.metrics import classification_scores
from llkd_edge.teacher.ensemble import log_linear_pool
from llkd_edge.teacher.prompts import gold_accuracy, gold_log_likelihood

CACHE = Path("runs/gold_teacher")
DRAWS = 200
PER_CLASS = (2, 4, 8)
SAMPLE = 64  # pool texts every candidate labels for the choice's prior (prompts.choose's sample)
CANDIDATES = ("llm", "encoder", "pool (equal)")
TEMPERATURES = np.geomspace(0.25, 8.0, 16)  # "tempered": each candidate's gold log-likelihood at its best temperature


def tempered_log_likelihood(sample_probs: np.ndarray, gold_probs: np.ndarray, y: np.ndarray) -> float:
    """The gold log-likelihood with each candidate's rows sharpened or flattened by the temperature that suits it
    best on the gold texts, so a candidate is not ranked down for being surer or less sure than another."""
    def tempered(p: np.ndarray, t: float) -> np.ndarray:
        z = np.log(np.clip(p, 1e-12, 1.0)) / t
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
    return max(gold_log_likelihood(tempered(sample_probs, t), tempered(gold_probs, t), y) for t in TEMPERATURES)


def rows(ds: str, threads: int) -> dict | None:
    """The LLM's and the encoder teacher's rows on the set's pool and test texts, with their gold labels."""
    path = CACHE / f"rows-{ds}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return {k: z[k] for k in z.files}
    runs = sorted(STUDY.glob(f"{ds}-*-s*/config.json"))
    if not runs:
        return None
    scoring = ScoringConfig.from_dict(json.loads(runs[0].read_text())["identity"]["scoring"])
    names = scoring.labels.names
    pool_n, eval_n = SIZES.get(ds, (600, 200))
    pool, test = load_builtin(ds).head(pool_n), load_builtin(f"{ds}:test").head(eval_n)
    llm = [stored_rows(d, STUDY / f"labels-{ds}.sqlite", scoring, "gemma3-270m", threads, ask=False)
           for d in (pool, test)]
    enc = [stored_rows(d, ENCODER_STORES / f"labels-{ds}.sqlite", scoring, "encoder", threads, ask=False)
           for d in (pool, test)]
    if any(r is None for r in llm + enc):
        return None
    got = {"llm_pool": llm[0], "llm_test": llm[1], "enc_pool": enc[0], "enc_test": enc[1],
           "y_pool": np.array([names.index(g) for g in pool.gold]), "y_test": np.array([names.index(g) for g in test.gold]),
           "names": np.array(names)}
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **got)
    return got


def f1(probs: np.ndarray, y: np.ndarray, names: list[str]) -> float:
    return classification_scores([names[i] for i in y], [names[i] for i in probs.argmax(1)], names)["macro_f1"]


def study(r: dict) -> dict:
    names = [str(n) for n in r["names"]]
    k, pool_n = len(names), len(r["y_pool"])
    cands = {"llm": (r["llm_pool"], r["llm_test"]), "encoder": (r["enc_pool"], r["enc_test"])}
    cands["pool (equal)"] = tuple(log_linear_pool([a, b]) for a, b in zip(cands["llm"], cands["encoder"]))
    # each candidate as distill trains on it: calibrated by its whole pool's mean
    read = {c: (calibrated(p, p), calibrated(t, p)) for c, (p, t) in cands.items()}
    whole = {c: {"pool": f1(p, r["y_pool"], names), "test": f1(t, r["y_test"], names)} for c, (p, t) in read.items()}
    by_class = [np.flatnonzero(r["y_pool"] == c) for c in range(k)]
    out = {"whole": whole, "per_class": {}}
    for g in PER_CLASS:
        if min(len(ix) for ix in by_class) < g + 1:
            continue
        picks = {"gold log-likelihood": [], "gold accuracy": [], "tempered gold log-likelihood": [],
                 "log-likelihood, as accurate": []}
        scored = {crit: {"pool": [], "test": []} for crit in [*picks, *CANDIDATES, "best in hindsight"]}
        for draw in range(DRAWS):
            rng = np.random.default_rng(draw)
            gold = np.concatenate([rng.choice(ix, g, replace=False) for ix in by_class])
            rest = np.setdiff1d(np.arange(pool_n), gold)
            sample = rng.choice(rest, SAMPLE, replace=False)
            y = r["y_pool"][gold]
            ll = {c: gold_log_likelihood(p[sample], p[gold], y) for c, (p, _) in cands.items()}
            acc = {c: (gold_accuracy(p[sample], p[gold], y), ll[c]) for c, (p, _) in cands.items()}
            tll = {c: tempered_log_likelihood(p[sample], p[gold], y) for c, (p, _) in cands.items()}
            eligible = [c for c in CANDIDATES if acc[c][0] >= acc["llm"][0]]  # as right as the LLM on the gold texts
            chosen = {"gold log-likelihood": max(ll, key=ll.get), "gold accuracy": max(acc, key=acc.get),
                      "tempered gold log-likelihood": max(tll, key=tll.get),
                      "log-likelihood, as accurate": max(eligible, key=ll.get)}
            outside = {c: f1(p[rest], r["y_pool"][rest], names) for c, (p, _) in read.items()}
            for crit, c in chosen.items():
                picks[crit].append(c)
                scored[crit]["pool"].append(outside[c])
                scored[crit]["test"].append(whole[c]["test"])
            for c in CANDIDATES:
                scored[c]["pool"].append(outside[c])
                scored[c]["test"].append(whole[c]["test"])
            best = max(CANDIDATES, key=outside.get)
            scored["best in hindsight"]["pool"].append(outside[best])
            scored["best in hindsight"]["test"].append(whole[best]["test"])
        out["per_class"][g] = {
            "picked": {crit: {c: p.count(c) for c in CANDIDATES} for crit, p in picks.items()},
            "mean": {crit: {s: round(float(np.mean(v)), 4) for s, v in d.items()} for crit, d in scored.items()},
            "worst_draw_vs_llm": {crit: round(float(np.min(np.subtract(scored[crit]["pool"], scored["llm"]["pool"]))), 4)
                                  for crit in picks}}
    return out


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    args = parser.parse_args()
    started, results = time.perf_counter(), {}
    for ds in args.sets:
        r = rows(ds, args.threads)
        if r is None:
            print(f"{ds}: the stores lack some rows (run bench/probe_head.sh and bench.mixed_teachers first), skipped")
            continue
        results[ds] = study(r)
        print(ds, json.dumps(results[ds]["per_class"].get(4, {}).get("mean")), flush=True)
    table_rows = []
    for ds, res in results.items():
        for g, pc in res["per_class"].items():
            m = pc["mean"]
            picked = pc["picked"]["log-likelihood, as accurate"]
            table_rows.append([ds, g, *(f"{m[c]['pool']:.3f}" for c in CANDIDATES),
                               f"{m['gold log-likelihood']['pool']:.3f} "
                               f"({m['gold log-likelihood']['pool'] - m['llm']['pool']:+.3f})",
                               f"{m['gold accuracy']['pool']:.3f}", f"{m['tempered gold log-likelihood']['pool']:.3f}",
                               f"**{m['log-likelihood, as accurate']['pool']:.3f}** "
                               f"({m['log-likelihood, as accurate']['pool'] - m['llm']['pool']:+.3f})",
                               f"{m['best in hindsight']['pool']:.3f}",
                               " / ".join(str(picked[c]) for c in CANDIDATES),
                               f"{pc['worst_draw_vs_llm']['log-likelihood, as accurate']:+.3f}"])
    table = markdown_table(["set", "gold per class", *CANDIDATES, "chosen by gold log-likelihood (vs llm)",
                            "chosen by gold accuracy", "tempered", "log-likelihood among those as accurate as the llm",
                            "best in hindsight",
                            "picks llm / encoder / pool", "worst draw vs llm"], table_rows)
    print(table)
    write_report(RESULTS / "gold_teacher.json",
                 {"command": command(), "machine": machine(args.threads), "draws": DRAWS, "results": results,
                  "seconds": round(time.perf_counter() - started, 1)},
                 f"`{command()}`\n\nTeacher macro-F1 on the pool texts outside each draw of gold texts (what the "
                 f"student learns from), pool-calibrated; mean over {DRAWS} draws.\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
