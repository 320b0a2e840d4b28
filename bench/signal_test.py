"""Signal or chance? Label-free tests of a teacher's labels against the answer-information line (issue 50).

Answer information (``distributions.answer_information``) measures how sure the teacher's answers are, not
whether they carry signal: a two-class teacher right 70% of the time at 0.6/0.4 scores near zero. This study puts
candidate tests side by side on the same labels, none of which reads a gold label:

- ``answer_information``: the criterion before this study (a line at 0.10);
- ``probe``: how well a cross-fitted linear (ridge) probe on the frozen sentence encoder's embeddings predicts the
  teacher's labels, against the same probe on the labels permuted 50 times (``llkd_edge.labels.signal``);
- ``agreement``: Cohen's kappa between the teacher's labels and the encoder teacher's (``--teacher encoder``),
  two teachers that err differently: agreement beyond chance needs both to carry signal.

Cases, on the first 600 pool texts of each built-in set (the frontier's store, ``runs/frontier/DATASET``):
the real default teacher (pool-calibrated, as distill trains on it); synthetic teachers made from the gold labels,
right on a share ``acc`` of texts (errors spread evenly over the other labels) with sharp (0.9) or flat
(1/K + 0.1) confidences; random labels; and ``systematic``: labels from a random linear map of the embeddings,
text-dependent but unrelated to the truth (what a teacher that is consistently wrong looks like to a probe).
The truth column (kappa of the labels with the gold labels) says which cases carry signal.

    python -m bench.signal_test [--datasets ...] [--work runs/frontier] [--seeds 0,1,2]

Writes bench/results/signal_test.json and .md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bench.common import RESULTS, arguments, markdown_table, record, write_report
from llkd_edge.config import LabelSet, ScoringConfig
from llkd_edge.data import builtin_spec, load_builtin
from llkd_edge.distributions import answer_information, batch_calibrated, pool_prior
from llkd_edge.store import LabelStore, ScoringKey

OUT = RESULTS / "signal_test.json"
DATASETS = "bbc-news,20newsgroups,reuters-r8,election-tweets,slo-sentiment"
POOL = 600


def pool_rows(dataset: str, work: Path):
    """The frontier store's first POOL trainable rows: texts, raw teacher distributions, gold labels, label names."""
    with LabelStore(work / dataset / "labels.sqlite", existing=True) as store:
        configs = [c for c in store.configs() if c.get("teacher_name") != "encoder"]
        config = configs[0]
        rows, _ = store.training_rows(ScoringKey(config["teacher_sha256"], config["config_hash"]))
    rows = rows[:POOL]
    gold = dict(zip(*(lambda d: (d.texts, d.gold))(load_builtin(dataset))))
    names = list(config["labels"])
    y = np.array([names.index(gold[r.text]) for r in rows])
    return [r.text for r in rows], np.array([r.probs for r in rows]), y, names


def synthetic(y: np.ndarray, k: int, acc: float, sharp: bool, rng) -> np.ndarray:
    """A teacher right on a share ``acc`` of texts (its wrong answers spread evenly over the other labels)."""
    right = rng.random(len(y)) < acc
    wrong = (y + rng.integers(1, k, len(y))) % k
    labels = np.where(right, y, wrong)
    top = 0.9 if sharp else min(1 / k + 0.1, 0.95)
    probs = np.full((len(y), k), (1 - top) / (k - 1))
    probs[np.arange(len(y)), labels] = top
    return probs


def one_hot(labels: np.ndarray, k: int, top: float = 0.9) -> np.ndarray:
    probs = np.full((len(labels), k), (1 - top) / (k - 1))
    probs[np.arange(len(labels)), labels] = top
    return probs


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(a, b)) if len(set(a.tolist())) > 1 or len(set(b.tolist())) > 1 else 0.0


def measure(probs: np.ndarray, x: np.ndarray, y: np.ndarray, encoder_labels: np.ndarray, seed: int) -> dict:
    from llkd_edge.labels.signal import probe_signal

    labels = probs.argmax(axis=1)
    k = probs.shape[1]
    return {"truth_kappa": round(kappa(labels, y), 4), "accuracy": round(float(np.mean(labels == y)), 4),
            "answer_information": round(answer_information(probs), 4),
            "probe": probe_signal(x, labels, k, seed).as_dict(),
            "agreement_kappa": round(kappa(labels, encoder_labels), 4)}


def study(dataset: str, work: Path, seeds: list[int]) -> list[dict]:
    from llkd_edge.teacher.encoder import embed
    from llkd_edge.teacher.zeroshot import EncoderTeacher

    texts, raw, y, names = pool_rows(dataset, work)
    cache = Path("runs/signal_test") / f"{dataset}.npz"
    if cache.exists():
        saved = np.load(cache)
        x, encoder_probs = saved["x"], saved["encoder"]
    else:
        spec = builtin_spec(dataset)
        x = embed(texts, progress=True)
        teacher = EncoderTeacher(ScoringConfig(labels=LabelSet.parse(spec.labels), task=spec.task))
        encoder_probs = teacher.predict_proba(texts)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x=x, encoder=encoder_probs)
    encoder_labels = batch_calibrated(encoder_probs, pool_prior(encoder_probs)).argmax(axis=1)
    k = len(names)
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        cases = {"teacher (LLM)": batch_calibrated(raw, pool_prior(raw)),
                 "encoder teacher": batch_calibrated(encoder_probs, pool_prior(encoder_probs))}
        for acc in (0.6, 0.7, 0.85):
            for sharp in (True, False):
                cases[f"acc {acc} {'sharp' if sharp else 'flat'}"] = synthetic(y, k, acc, sharp, rng)
        cases["random"] = one_hot(rng.integers(0, k, len(y)), k)
        cases["systematic"] = one_hot((x @ rng.normal(size=(x.shape[1], k))).argmax(axis=1), k)
        for case, probs in cases.items():
            other = encoder_labels if case != "encoder teacher" else batch_calibrated(raw, pool_prior(raw)).argmax(1)
            row = {"dataset": dataset, "case": case, "seed": seed, "k": k, **measure(probs, x, y, other, seed)}
            print(f"{dataset:16} s{seed} {case:18} truth {row['truth_kappa']:+.3f} info {row['answer_information']:.3f} "
                  f"probe {row['probe']['kappa']:+.3f} (z {row['probe']['z']:.1f}) agree {row['agreement_kappa']:+.3f}",
                  file=sys.stderr, flush=True)
            out.append(row)
    return out


def render(report: dict) -> str:
    lines = [f"`{report['command']}`", "", "Answer information's former line: 0.10. Kappas: 0 is chance, 1 full "
             "agreement. *probe*: cross-fitted probe agreement with the labels beyond the permuted labels' (kappa-like) "
             "and its z against the permutations; *agree*: kappa with the other teacher (the encoder's labels; for the "
             "encoder row, the LLM's). Mean over the seeds.", ""]
    rows = []
    keys = list(dict.fromkeys((r["dataset"], r["case"]) for r in report["rows"]))
    for dataset, case in keys:
        rs = [r for r in report["rows"] if r["dataset"] == dataset and r["case"] == case]

        def mean(f):
            return float(np.mean([f(r) for r in rs]))

        rows.append([dataset, case, f"{mean(lambda r: r['accuracy']):.3f}", f"{mean(lambda r: r['truth_kappa']):+.3f}",
                     f"{mean(lambda r: r['answer_information']):.3f}", f"{mean(lambda r: r['probe']['kappa']):+.3f}",
                     f"{mean(lambda r: r['probe']['z']):.1f}",
                     "signal" if all(r["probe"]["signal"] for r in rs) else
                     ("chance" if not any(r["probe"]["signal"] for r in rs) else "mixed"),
                     f"{mean(lambda r: r['agreement_kappa']):+.3f}"])
    lines.append(markdown_table(["set", "labels", "accuracy", "truth kappa", "answer info", "probe kappa", "probe z",
                                 "probe says", "agree kappa"], rows))
    return "\n".join(lines)


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--datasets", default=DATASETS)
    parser.add_argument("--work", default="runs/frontier")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for dataset in args.datasets.split(","):
        rows += study(dataset, Path(args.work), seeds)
    report = {**record(args.threads, "scikit-learn"), "rows": rows}
    markdown = render(report)
    write_report(OUT, report, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
