"""Low-resource study of `evolve` (EvoKD): does a student improve when the teacher writes texts aimed at its
mistakes, compared with the same student from `distill` alone on the same few texts?

    python -m bench.evolve_study              # bbc-news, 16 pool texts per class, 3 seeds, 3 rounds x 24 texts
    python -m bench.evolve_study --quick      # 1 seed, 1 round of 8 texts (a few minutes)
    python -m bench.evolve_study --report-only

Data: the bbc-news train split in its fixed seeded order. Texts from SKIP on (the texts bench/study.py's
Qwen part labelled, so their labels are reused from its store) give the pool, the first PER_CLASS texts of
each gold class (gold decides only the pool's make-up; the student sees the teacher's labels), and the
validation slice, the next VAL texts, judged against the teacher's labels, not gold. The test set is up
to TEST texts of the test split, with gold labels.

Per seed: `distill` (selection `all`: the better method in bench/RESULTS.md's study; minilm-l2, 64
tokens, batch 16, EPOCHS epochs, seed s) and then `evolve` of that run (ROUNDS rounds, PER_ROUND texts
each, generation seed s) with the same teacher as labeller, writer and verifier. Round 0 of every evolve
run is the distill student itself, so the comparison is on the same pool, test set and training settings.
A control, `distill` alone for as many optimiser steps as the final evolve student took (it trains on more
texts, so it takes more steps per epoch), tells a gain from the written texts apart from a longer training.
Writes bench/results/evolve/{evolve.json, evolve.md, evolve.png}; runs live under runs/evolve-study and a
killed study resumes (distill runs are reused, evolve resumes in its round).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from bench.common import arguments, record, save_plot, write_report
from bench.study import mean_std
from llkd_edge.config import (
    DistillConfig,
    EvolveConfig,
    LabelSet,
    ScoringConfig,
    TeacherConfig,
    TrainConfig,
)
from llkd_edge.data import load_builtin
from llkd_edge.student.distill import distill
from llkd_edge.student.evolve import GENERATION_CTX, evolve
from llkd_edge.files import read_json
from llkd_edge.teacher.llama import load_teacher

HERE = Path(__file__).parent
TEACHER = "qwen2.5-coder-1.5b-instruct"


@dataclass(frozen=True)
class Plan:
    dataset: str = "bbc-news"
    skip: int = 200  # train texts before the pool region (bench/study.py's validation slice)
    per_class: int = 16
    val: int = 100
    test: int = 500
    seeds: tuple[int, ...] = (0, 1, 2)
    rounds: int = 3
    per_round: int = 24
    epochs: int = 10
    batch_size: int = 16
    max_length: int = 64
    max_text_tokens: int = 128  # the teacher's budget, as in bench/study.py's Qwen part
    student: str = "minilm-l2"
    selection: str = "all"


FULL = Plan()
QUICK = replace(FULL, seeds=(0,), rounds=1, per_round=8, val=40, test=100, per_class=8, epochs=6)


def pick_pool(gold: list[str], labels: list[str], per_class: int, start: int) -> list[int]:
    """Indices (from ``start`` on) of the first ``per_class`` texts of each gold label."""
    taken: dict[str, int] = {lab: 0 for lab in labels}
    out = []
    for i in range(start, len(gold)):
        if taken.get(gold[i], per_class) < per_class:
            taken[gold[i]] += 1
            out.append(i)
    short = [lab for lab, n in taken.items() if n < per_class]
    if short:
        raise SystemExit(f"not enough train texts of {', '.join(short)} for {per_class} per class")
    return out


def matched_epochs(pool: int, final: int, batch_size: int, epochs: int) -> int:
    """Epochs on the pool alone that give (about) the optimiser steps of ``epochs`` on ``final`` texts."""
    steps = math.ceil(final / batch_size) * epochs
    return max(epochs, round(steps / math.ceil(pool / batch_size)))


def _write_csv(path: Path, texts: list[str], gold: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, gold))


def run_study(plan: Plan, work: Path, store: str, threads: int) -> dict:
    started = time.perf_counter()
    train = load_builtin(f"{plan.dataset}:train")
    labels = LabelSet.parse(train.labels)
    pool_idx = pick_pool(train.gold, list(labels.names), plan.per_class, plan.skip)
    chosen = set(pool_idx)
    val_idx = [i for i in range(plan.skip, len(train.texts)) if i not in chosen][: plan.val]
    work.mkdir(parents=True, exist_ok=True)
    _write_csv(work / "pool.csv", [train.texts[i] for i in pool_idx], [train.gold[i] for i in pool_idx])
    _write_csv(work / "val.csv", [train.texts[i] for i in val_idx], [train.gold[i] for i in val_idx])

    scoring = ScoringConfig(labels=labels, task=train.task, max_text_tokens=plan.max_text_tokens)
    shared = load_teacher(scoring, TeacherConfig(model=TEACHER, n_threads=threads, n_ctx=GENERATION_CTX))

    def teacher_factory(wanted_scoring, _teacher_config):  # one loaded model serves every run
        if wanted_scoring != scoring:
            raise SystemExit("the study's runs must share one scoring config")
        return shared

    def base_config(seed: int, out: Path) -> DistillConfig:
        return DistillConfig(
            data=str(work / "pool.csv"), out=str(out), scoring=scoring,
            train=TrainConfig(student=plan.student, selection=plan.selection, epochs=plan.epochs,
                              batch_size=plan.batch_size, max_length=plan.max_length, seed=seed, threads=threads),
            teacher=TeacherConfig(model=TEACHER, n_threads=threads), eval=f"{plan.dataset}:test",
            eval_limit=plan.test, store=store)

    seeds = []
    for seed in plan.seeds:
        base = work / f"seed-{seed}"
        run_dir, evolved = base / "distill", base / "evolve"
        if not (run_dir / "metrics.json").exists():
            distill(base_config(seed, run_dir), resume=run_dir.exists(), teacher_factory=teacher_factory)
        metrics_path = evolved / "metrics.json"
        if not metrics_path.exists():
            config = EvolveConfig(run_dir=str(run_dir), out=str(evolved), rounds=plan.rounds, per_round=plan.per_round,
                                  val=str(work / "val.csv"), val_labels="teacher", val_limit=plan.val, seed=seed,
                                  threads=threads)
            evolve(config, resume=evolved.exists(), teacher_factory=teacher_factory)
        evolved_metrics = json.loads(metrics_path.read_text())
        # Control: distill alone for as many optimiser steps as the final evolve student took (it trains on
        # more texts, so more steps per epoch); without it a gain could be a training-budget effect.
        epochs = matched_epochs(len(pool_idx), evolved_metrics["data"]["pool_size"], plan.batch_size, plan.epochs)
        long_dir = base / f"distill-e{epochs}"
        if not (long_dir / "metrics.json").exists():
            distill(replace(base_config(seed, run_dir), out=str(long_dir),
                            train=replace(base_config(seed, run_dir).train, epochs=epochs)),
                    resume=long_dir.exists(), teacher_factory=teacher_factory)
        seeds.append({"seed": seed, "distill": json.loads((run_dir / "metrics.json").read_text()),
                      "evolve": evolved_metrics, "examples": _examples(evolved), "per_label": _per_label(evolved),
                      "distill_same_steps": json.loads((long_dir / "metrics.json").read_text())})
    shared.close()
    kept = [json.loads(line)["text"] for sd in plan.seeds
            for f in sorted((work / f"seed-{sd}" / "evolve" / "rounds").glob("*/candidates.jsonl"))
            for line in f.read_text(encoding="utf-8").splitlines() if json.loads(line)["verdict"] == "accepted"]
    outside = [t for i, t in enumerate(train.texts) if i not in chosen and i not in set(val_idx)]
    test = load_builtin(f"{plan.dataset}:test").head(plan.test).texts
    seen = [train.texts[i] for i in (*pool_idx, *val_idx)]
    return {"overlap": nearest(kept, {"test": test, "pool or validation": seen,
                                      "train outside pool and validation": outside}),"plan": asdict(plan), "teacher": TEACHER, "teacher_sha256": shared.model.sha256, "seeds": seeds,
            "pool_size": len(pool_idx), "val_size": len(val_idx),
            "seconds": round(time.perf_counter() - started, 1)}


def nearest(texts: list[str], corpora: dict[str, list[str]], thresholds=(0.5, 0.7, 0.85)) -> dict:
    """For each corpus: how many of ``texts`` come within each cosine threshold of one of its texts, and the
    highest similarity (TF-IDF character 3-5-grams, as `evolve` screens with), to spot memorised copies."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not texts:
        return {}
    every = [t for c in corpora.values() for t in c]
    vectoriser = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit(texts + every)
    mine = vectoriser.transform(texts)
    out = {}
    for name, corpus in corpora.items():
        best = (mine @ vectoriser.transform(corpus).T).max(axis=1).toarray().ravel()
        out[name] = {"n": len(texts), "max": round(float(best.max()), 3),
                     **{f">={t}": int((best >= t).sum()) for t in thresholds}}
    return out


def _per_label(evolved: Path) -> dict:
    """Per intended label, over every round: texts asked for, kept, and what the teacher said instead."""
    out: dict[str, dict] = {}
    for folder in sorted((evolved / "rounds").iterdir()):
        for item in json.loads((folder / "prompts.json").read_text()):
            entry = out.setdefault(item["request"]["label"], {"asked": 0, "kept": 0, "teacher_said": {}})
            entry["asked"] += item["request"]["n"]
        for line in (folder / "candidates.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            entry = out[record["intended"]]
            if record["verdict"] == "accepted":
                entry["kept"] += 1
            elif record["verdict"] == "teacher_disagrees":
                said = entry["teacher_said"]
                said[record["teacher_label"]] = said.get(record["teacher_label"], 0) + 1
    return out


def _examples(evolved: Path, per_verdict: int = 2) -> dict:
    """A few generated texts per verdict from the first round, to show what the teacher writes."""
    out: dict[str, list] = {}
    path = evolved / "rounds" / "01" / "candidates.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        record = json.loads(line)
        group = out.setdefault(record["verdict"], [])
        if len(group) < per_verdict:
            group.append({k: record[k] for k in ("intended", "teacher_label", "teacher_confidence", "text")})
    return out


# ------------------------------------------------------------------------------------------ report


def per_round_f1(seed_report: dict) -> list[float]:
    """Test macro-F1 of the student after each round, round 0 being the distill student."""
    rounds = seed_report["evolve"]["evolve"]["rounds"]
    return [rounds[0]["before"]["eval"]["macro_f1"], *(r["after"]["eval"]["macro_f1"] for r in rounds)]


def compute_minutes(report: dict) -> float:
    """Every distill, evolve and control run's own measured time, summed (a resumed study counts each once)."""
    total = sum(sd[part]["seconds"]["total"] for sd in report["seeds"]
                for part in ("distill", "evolve", "distill_same_steps"))
    return total / 60


def epochs_of(metrics: dict) -> int:
    return len(metrics["selection"]["selected_per_epoch"])


def markdown(report: dict) -> str:
    plan = report["plan"]
    seeds = report["seeds"]
    teacher = seeds[0]["distill"]["teacher"]
    lines = [f"{plan['dataset']}: pool of {report['pool_size']} texts ({plan['per_class']} per gold class), "
             f"validation {report['val_size']} texts judged by the teacher's labels, test {teacher['n']} gold texts. "
             f"Teacher, writer and verifier: `{report['teacher']}` ({plan['max_text_tokens']} text tokens). Student "
             f"`{plan['student']}`, selection `{plan['selection']}`, {plan['epochs']} epochs, batch {plan['batch_size']}, "
             f"{plan['max_length']} tokens. {plan['rounds']} rounds x {plan['per_round']} texts asked. "
             f"Compute summed over the runs: {compute_minutes(report):.0f} min (2 cores).", "",
             "| seed | distill macro-F1 | " + " | ".join(f"after round {r}" for r in range(1, plan["rounds"] + 1))
             + " | distill, same steps | texts kept / written | acceptance | failed generations |",
             "|---|---|" + "---|" * plan["rounds"] + "---|---|---|---|"]
    curves = []
    for s in seeds:
        f1 = per_round_f1(s)
        curves.append(f1 + [f1[-1]] * (plan["rounds"] + 1 - len(f1)))  # a run that stopped early keeps its last
        e = s["evolve"]["evolve"]
        failed = sum(r["failed_attempts"] for r in e["rounds"])
        attempts = sum(r["attempts"] for r in e["rounds"])
        control = s["distill_same_steps"]
        lines.append(f"| {s['seed']} | {f1[0]:.3f} | " + " | ".join(f"{v:.3f}" for v in f1[1:])
                     + f" | {control['student']['macro_f1']:.3f} ({epochs_of(control)} epochs)"
                     + f" | {e['accepted']} / {e['generated']} | {e['acceptance_rate']:.0%} | {failed} of {attempts} |")
    a = np.array(curves)
    cols = [mean_std(a[:, j]) for j in range(a.shape[1])]
    controls = mean_std([s["distill_same_steps"]["student"]["macro_f1"] for s in seeds])
    fmt = lambda m: f"{m['mean']:.3f} ± {m['std']:.3f}" if m["n"] > 1 else f"{m['mean']:.3f}"  # noqa: E731
    kept = sum(s["evolve"]["evolve"]["accepted"] for s in seeds)
    written = sum(s["evolve"]["evolve"]["generated"] for s in seeds)
    lines.append(f"| mean | {fmt(cols[0])} | " + " | ".join(fmt(c) for c in cols[1:])
                 + f" | {fmt(controls)} | {kept} / {written} | {kept / written:.0%} | |")
    lines += ["", f"Teacher on the same test texts: accuracy {teacher['accuracy']:.3f}, macro-F1 {teacher['macro_f1']:.3f}.",
              "Change after the last round, per seed: "
              + ", ".join(f"{c[-1] - c[0]:+.3f}" for c in curves) + ".", ""]
    verdicts: dict[str, int] = {}
    speed = []
    for s in seeds:
        for r in s["evolve"]["evolve"]["rounds"]:
            for k, v in r["verdicts"].items():
                verdicts[k] = verdicts.get(k, 0) + v
            if r["tokens_per_second"]:
                speed.append(r["tokens_per_second"])
    lines.append("What happened to the written texts (all seeds and rounds): "
                 + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(verdicts.items(), key=lambda x: -x[1]))
                 + (f"; generation {np.mean(speed):.1f} new tokens/s." if speed else "."))
    labels = sorted({lab for sd in seeds for lab in sd["per_label"]})
    lines += ["", "Per intended label, all seeds and rounds:", "",
              "| label | texts asked | kept | the teacher said instead |", "|---|---|---|---|"]
    for lab in labels:
        asked = sum(sd["per_label"].get(lab, {}).get("asked", 0) for sd in seeds)
        kept = sum(sd["per_label"].get(lab, {}).get("kept", 0) for sd in seeds)
        said: dict[str, int] = {}
        for sd in seeds:
            for k, v in sd["per_label"].get(lab, {}).get("teacher_said", {}).items():
                said[k] = said.get(k, 0) + v
        instead = ", ".join(f"{k} {v}" for k, v in sorted(said.items(), key=lambda x: -x[1])) or "-"
        lines.append(f"| {lab} | {asked} | {kept} | {instead} |")
    lines.append("")
    for name, o in report.get("overlap", {}).items():
        lines.append(f"Kept texts close to a {name} text: " + ", ".join(f"{k} {v}" for k, v in o.items()
                     if k.startswith(">=")) + f" of {o['n']} (highest cosine {o['max']}).")
    lines += ["", "Examples from seed " + str(seeds[0]["seed"]) + ", round 1:", ""]
    for verdict, group in seeds[0]["examples"].items():
        for ex in group:
            said = f", teacher: {ex['teacher_label']} {ex['teacher_confidence']:.2f}" if ex["teacher_label"] else ""
            lines.append(f"- {verdict} (asked for {ex['intended']}{said}): \"{ex['text'][:220]}\"")
    return "\n".join(lines) + "\n"


def plot(report: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for s in report["seeds"]:
        f1 = per_round_f1(s)
        ax.plot(range(len(f1)), f1, "o-", alpha=0.7, label=f"seed {s['seed']}")
    teacher = report["seeds"][0]["distill"]["teacher"]["macro_f1"]
    ax.axhline(teacher, color="grey", linestyle="--", label=f"teacher {teacher:.3f}")
    ax.set_xticks(range(report["plan"]["rounds"] + 1))
    ax.set_xlabel("evolve round (0: distill alone)")
    ax.set_ylabel("test macro-F1")
    ax.set_title(f"evolve on {report['plan']['dataset']}, {report['plan']['per_class']} pool texts per class")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_plot(fig, out / "evolve.png")


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--quick", action="store_true", help="one seed, one small round")
    parser.add_argument("--work", help="runs (default runs/evolve-study, --quick: runs/evolve-study-quick)")
    parser.add_argument("--store", help="label store (default runs/study/labels.sqlite, shared with bench/study.py)")
    parser.add_argument("--out", help="report folder (default bench/results/evolve; --quick: WORK/results)")
    parser.add_argument("--report-only", action="store_true", help="re-render from OUT/evolve.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    plan = QUICK if args.quick else FULL
    work = Path(args.work or ("runs/evolve-study-quick" if args.quick else "runs/evolve-study"))
    out = Path(args.out or (work / "results" if args.quick else HERE / "results" / "evolve"))
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        report = read_json(out / "evolve.json")
    else:
        from llkd_edge.errors import UserError

        try:
            report = run_study(plan, work, args.store or "runs/study/labels.sqlite", args.threads)
        except UserError as exc:  # e.g. the Qwen teacher's packages are not installed
            print(f"evolve study: {exc}", file=sys.stderr)
            return 1
        report.update(record(args.threads, "scikit-learn"))
    table = markdown(report)
    write_report(out / "evolve.json", report, table)
    png = plot(report, out)
    print(table)
    print(f"wrote {out / 'evolve.json'}, {out / 'evolve.md'}, {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
