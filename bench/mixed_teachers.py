"""Issue 47 parts 2-3 on the teacher's side: the LLM, the encoder teacher and their log-linear pools with member
weights, and label-free rules for choosing between them, on every built-in set.

    python -m bench.mixed_teachers        # after bench/probe_head.sh has labelled its sets (reads its stores)

The default teacher's rows are not asked again: they are read from the label stores that bench/probe_head.sh's
distill runs filled (runs/probe_head/labels-SET.sqlite: the first 600 train texts and 200 test texts of each set,
800/300 for 20ng-hardware, with the scoring config those runs recorded). The encoder teacher labels the same texts
into runs/mixed_teachers/labels-SET.sqlite (seconds a set). Every candidate is read as distill reads a pool:
pooled as stored (log-linear, as `--teacher a,b` does), then batch-calibrated by its own pool's mean. Scored
against gold on the pool texts (what the student learns from) and on the test texts.

Weightings of the pool: equal (what `--teacher gemma3-270m,encoder` does), by each member's answer information, by
each member's signal-test kappa (labels/signal.py; the encoder's labels are a function of the embeddings that test
reads, so its kappa is high whatever its quality), and a member dropped when its answer information is under a line.
Choice rules pick one candidate from a seeded sample of 64 pool texts (3 seeds), as the prompt choice does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench.common import RESULTS, arguments, command, machine, markdown_table, write_report
from llkd_edge.config import ScoringConfig, TeacherConfig
from llkd_edge.data import load_builtin
from llkd_edge.distributions import answer_information, batch_calibrated, pool_prior
from llkd_edge.labels.labelling import label_dataset
from llkd_edge.labels.signal import probe_signal
from llkd_edge.metrics import classification_scores
from llkd_edge.store import LabelStore, unique_texts
from llkd_edge.teacher.backend import open_backend
from llkd_edge.teacher.encoder import embed
from llkd_edge.labels.teacher_choice import ENCODER_WEIGHT, agreement, choose
from llkd_edge.teacher.ensemble import log_linear_pool

SETS = ("bbc-news", "20newsgroups", "reuters-r8", "20ng-hardware", "election-tweets", "slo-sentiment")
SIZES = {"20ng-hardware": (800, 300)}
STUDY = Path("runs/probe_head")
OUT = Path("runs/mixed_teachers")
CHOICE_SAMPLE = 64
DROP_BELOW = 0.10  # answer information under which a member leaves the pool (the old "at chance" line)


def calibrated(probs: np.ndarray, prior_of: np.ndarray) -> np.ndarray:
    return batch_calibrated(probs, pool_prior(prior_of))


def macro_f1(probs: np.ndarray, gold: list[str], names: tuple[str, ...]) -> float:
    return round(classification_scores(gold, [names[i] for i in probs.argmax(1)], names)["macro_f1"], 4)


def stored_rows(data, store: Path, scoring: ScoringConfig, teacher: str, threads: int, ask: bool) -> np.ndarray | None:
    """The teacher's stored distributions for ``data``'s texts, in order; None when the store lacks some and
    ``ask`` is off (the LLM is never asked here: its rows come from the study's runs)."""
    backend = open_backend(scoring, TeacherConfig(model=teacher, n_threads=threads), progress=False)
    try:
        if not ask:
            order = list(unique_texts(data.texts)[0])
            with LabelStore(store) as s:
                if len(s.cached(backend.key, order)) < len(order):
                    return None
        return np.array([r.probs for r in label_dataset(data, backend, str(store), progress=False,
                                                          role="eval" if ":test" in data.name else "pool").rows])
    finally:
        backend.close()


def candidates(llm: np.ndarray, enc: np.ndarray, x: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Every candidate's stored-style distribution over the same texts (rows: pool then test)."""
    info = np.array([answer_information(p) for p in (llm, enc)])
    kappa = np.array([max(probe_signal(x, p.argmax(1), p.shape[1], seed).kappa, 0.0) for p in (llm, enc)])
    kept = [p for p, i in zip((llm, enc), info) if i >= DROP_BELOW] or [llm, enc]
    return {"llm": llm, "encoder": enc, "pool (equal)": log_linear_pool([llm, enc]),
            f"pool (encoder x{ENCODER_WEIGHT})": log_linear_pool([llm, enc], [1.0, ENCODER_WEIGHT]),
            "pool (by information)": log_linear_pool([llm, enc], info + 1e-9),
            "pool (by signal kappa)": log_linear_pool([llm, enc], kappa + 1e-9),
            f"pool (drop info < {DROP_BELOW})": log_linear_pool(kept)}


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    started, results = time.perf_counter(), {}
    for ds in args.sets:
        runs = sorted(STUDY.glob(f"{ds}-*-s*/config.json"))
        if not runs:
            print(f"{ds}: no bench/probe_head.sh run yet, skipped")
            continue
        scoring = ScoringConfig.from_dict(json.loads(runs[0].read_text())["identity"]["scoring"])
        names = scoring.labels.names
        pool_n, eval_n = SIZES.get(ds, (600, 200))
        pool, test = load_builtin(ds).head(pool_n), load_builtin(f"{ds}:test").head(eval_n)
        if len(unique_texts(pool.texts)[0]) != len(pool.texts) or len(unique_texts(test.texts)[0]) != len(test.texts):
            raise SystemExit(f"{ds}: texts repeat or are empty; this bench assumes one row a text")
        llm = [stored_rows(d, STUDY / f"labels-{ds}.sqlite", scoring, "gemma3-270m", args.threads, ask=False)
               for d in (pool, test)]
        if any(p is None for p in llm):
            print(f"{ds}: the study's store lacks some of the LLM's rows, skipped")
            continue
        enc = [stored_rows(d, OUT / f"labels-{ds}.sqlite", scoring, "encoder", args.threads, ask=True)
               for d in (pool, test)]
        llm_all, enc_all = np.vstack(llm), np.vstack(enc)
        full = candidates(llm_all, enc_all, embed(pool.texts + test.texts), 0)  # weights from all rows
        scores = {}
        for name, probs in full.items():
            cal = calibrated(probs, probs[:pool_n])
            scores[name] = {"pool": macro_f1(cal[:pool_n], pool.gold, names),
                            "test": macro_f1(cal[pool_n:], test.gold, names),
                            "answer_information": round(answer_information(probs[:pool_n]), 4)}
        choices = {}
        for seed in range(args.seeds):
            pick = np.random.default_rng(seed).choice(pool_n, CHOICE_SAMPLE, replace=False)
            by_info = {n: answer_information(full[n][pick]) for n in ("llm", "encoder", "pool (equal)")}
            choices[seed] = {"by answer information": max(by_info, key=by_info.get),
                             "agreement on the sample": round(agreement(llm_all[pick], enc_all[pick]), 4)}
        # --teacher auto (labels/teacher_choice.py) reads the two teachers' agreement on the whole pool
        auto = choose(llm_all[:pool_n], enc_all[:pool_n])
        auto["candidate"] = "llm" if auto["teacher"] == "gemma3-270m" else f"pool (encoder x{ENCODER_WEIGHT})"
        all_texts = pool.gold + test.gold
        for name, probs in full.items():  # and on pool and test texts together (800 or 1100: the steadiest figure)
            scores[name]["all"] = macro_f1(calibrated(probs, probs[:pool_n]), all_texts, names)
        results[ds] = {"scores": scores, "choices": choices, "auto": auto, "pool_n": pool_n, "eval_n": eval_n}
        print(ds, json.dumps(scores), json.dumps(choices), flush=True)
    rows, auto_rows = [], []
    for ds, r in results.items():
        best = max(r["scores"][n]["pool"] for n in ("llm", "encoder", "pool (equal)"))
        picked = [r["scores"][c["by answer information"]]["pool"] for c in r["choices"].values()]
        rows.append([ds, *(f"{s['pool']:.3f} / {s['test']:.3f}" for s in r["scores"].values()),
                     f"{np.mean(picked):.3f} ({np.mean(picked) - best:+.3f})"])
        got = r["scores"][r["auto"]["candidate"]]
        sample = [c["agreement on the sample"] for c in r["choices"].values()]
        auto_rows.append([ds, f"{r['auto']['agreement']:.2f} ({min(sample):.2f}-{max(sample):.2f})",
                          r["auto"]["candidate"],
                          *(f"{got[t]:.3f} (vs LLM {got[t] - r['scores']['llm'][t]:+.3f}, best single "
                            f"{got[t] - max(r['scores'][n][t] for n in ('llm', 'encoder')):+.3f})"
                            for t in ("pool", "test", "all"))])
    header = ["set", *next(iter(results.values()))["scores"], "chosen by answer information (vs best single)"] \
        if results else ["set"]
    table = markdown_table(header, rows)
    table += "\n\n--teacher auto (labels/teacher_choice.py): agreement on the pool (on 64-text samples, min-max over " \
             "the seeds), the candidate taken, its macro-F1 on the pool / test / all texts\n\n" + markdown_table(
                 ["set", "agreement", "taken", "pool texts", "test texts", "all texts"], auto_rows)
    print(table)
    write_report(RESULTS / "mixed_teachers.json",
                 {"command": command(), "machine": machine(args.threads), "results": results,
                  "seconds": round(time.perf_counter() - started, 1)},
                 f"`{command()}`\n\nTeacher macro-F1 against gold, pool texts / test texts, batch-calibrated as distill "
                 f"reads a pool.\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
