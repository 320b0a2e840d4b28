"""Which prompt should the teacher be asked with, and can it be chosen without gold labels?

    python -m bench.prompt_choice                  # every candidate on every built-in set (resumes)
    python -m bench.prompt_choice --report-only    # re-render the tables from the cached scores

Each candidate (a task wording x an answer cue) scores the first N test texts of each built-in set with
the default teacher. For each it records the gold macro-F1 (contextual calibration as stored, and with the
batch prior divided out) next to criteria that need no labels, computed on the first few texts only, as a
chooser would see them: the mutual information between inputs and answers (Sorensen et al., 2022), the
same after batch calibration, and the mean raw label-token mass. The question is which criterion picks a
candidate near the best one on every dataset.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.common import arguments, cache_options, markdown_table, record, write_report
from llkd_edge.config import DEFAULT_TASK, ScoringConfig, TeacherConfig
from llkd_edge.data import builtin_spec, load_builtin
from llkd_edge.distributions import batch_calibrated, entropy, pool_prior
from llkd_edge.files import read_json, write_json
from llkd_edge.labels.labelling import resolve_labels
from llkd_edge.metrics import classification_scores

DATASETS = ("bbc-news", "reuters-r8", "20newsgroups", "election-tweets")
CUES = ("Category:", "Answer:", "Label:", "Topic:")


def tasks(dataset: str, words: list[str]) -> dict[str, str]:
    listed = ", ".join(words[:-1]) + " or " + words[-1]
    return {"built-in": builtin_spec(dataset).task, "generic": DEFAULT_TASK,
            "about-labels": f"Is this text about {listed}?", "which-fits": "Which of these words fits the text best?"}


def mutual_information(p: np.ndarray) -> float:
    return float(entropy(p.mean(axis=0, keepdims=True))[0] - entropy(p).mean())


def criteria(probs: np.ndarray, mass: np.ndarray) -> dict:
    q = batch_calibrated(probs, pool_prior(probs))
    return {"mi": mutual_information(probs), "mi_batch": mutual_information(q), "mass": float(mass.mean()),
            "neg_entropy_batch": float(-entropy(q).mean())}


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--texts", type=int, default=120)
    parser.add_argument("--sample", type=int, default=32, help="texts the label-free criteria see")
    parser.add_argument("--max-text-tokens", type=int, default=128)
    args = cache_options(parser, "prompt_choice").parse_args()
    cache_path = Path(args.cache)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache = read_json(cache_path) if cache_path.exists() else {}
    started = time.perf_counter()
    if not args.report_only:
        from tqdm.auto import tqdm

        from llkd_edge.teacher.llama import load_teacher

        teacher = None
        for dataset in DATASETS:
            spec = builtin_spec(dataset)
            labels = resolve_labels(None, spec.labels)
            data = load_builtin(f"{dataset}:test")
            texts = data.texts[: args.texts]
            for task_name, task in tasks(dataset, list(labels.verbalisers)).items():
                for cue in CUES:
                    key = f"{dataset}|{task_name}|{cue}|{args.texts}|{args.max_text_tokens}"
                    if key in cache:
                        continue
                    scoring = ScoringConfig(labels=labels, task=task, answer_cue=cue,
                                            max_text_tokens=args.max_text_tokens)
                    if teacher is None:
                        teacher = load_teacher(scoring, TeacherConfig(n_threads=args.threads))
                    else:
                        teacher.use(scoring)
                    t0 = time.perf_counter()
                    rows = []
                    for i in tqdm(range(0, len(texts), 8), desc=f"{dataset} {task_name} {cue}", leave=False):
                        rows += teacher.score(texts[i : i + 8])
                    cache[key] = {"probs": [list(r.probs) for r in rows], "mass": [r.label_mass for r in rows],
                                  "seconds": round(time.perf_counter() - t0, 2), "task": task}
                    write_json(cache_path, cache)
        if teacher is not None:
            teacher.close()

    rows = []
    for dataset in DATASETS:
        spec = builtin_spec(dataset)
        labels = resolve_labels(None, spec.labels)
        gold = load_builtin(f"{dataset}:test").gold[: args.texts]
        for task_name in tasks(dataset, list(labels.verbalisers)):
            for cue in CUES:
                got = cache.get(f"{dataset}|{task_name}|{cue}|{args.texts}|{args.max_text_tokens}")
                if not got:
                    continue
                probs, mass = np.array(got["probs"]), np.array(got["mass"])
                q = batch_calibrated(probs, pool_prior(probs))
                f1 = classification_scores(gold, [labels.names[j] for j in probs.argmax(1)], labels.names)["macro_f1"]
                f1b = classification_scores(gold, [labels.names[j] for j in q.argmax(1)], labels.names)["macro_f1"]
                rows.append({"dataset": dataset, "task": task_name, "cue": cue, "macro_f1": round(f1, 4),
                             "macro_f1_batch": round(f1b, 4),
                             "criteria": {k: round(v, 4) for k, v in criteria(probs[: args.sample],
                                                                               mass[: args.sample]).items()},
                             "seconds": got["seconds"]})
    summary = choice_summary(rows, cache, args)
    table = summary_markdown(summary) + "\n" + markdown(rows)
    print(table)
    report = {**record(args.threads), "texts": args.texts, "sample": args.sample,
              "max_text_tokens": args.max_text_tokens, "summary": summary, "rows": rows, "seconds": round(time.perf_counter() - started, 1)}
    write_report(Path(args.out), report, table)
    return 0


PRODUCT_CUES = ("Category:", "Label:", "Topic:")  # llkd_edge.teacher.prompts.CUES, chosen from this table
DRAWS = 200


def choice_summary(rows: list[dict], cache: dict, args) -> list[dict]:
    """Per dataset: the batch macro-F1 an auto choice lands on, averaged over DRAWS random samples of each
    size, for the product's candidate set with the built-in task (as for a built-in dataset) and without it
    (as for a user's data), next to the fixed prompts it replaces."""
    from llkd_edge.distributions import answer_information

    rng = np.random.default_rng(0)
    out = []
    for dataset in DATASETS:
        mine = {(r["task"], r["cue"]): r for r in rows if r["dataset"] == dataset}
        if len(mine) < len(CUES) * 4:
            continue
        probs = {k: np.array(cache[f"{dataset}|{k[0]}|{k[1]}|{args.texts}|{args.max_text_tokens}"]["probs"]) for k in mine}
        entry = {"dataset": dataset, "best": max(r["macro_f1_batch"] for r in mine.values()),
                 "mean": round(float(np.mean([r["macro_f1_batch"] for r in mine.values()])), 4),
                 "built_in_category": mine[("built-in", "Category:")]["macro_f1_batch"],
                 "generic_category": mine[("generic", "Category:")]["macro_f1_batch"], "auto": {}}
        for setting, tasks_ in (("with built-in task", ("built-in", "generic", "about-labels", "which-fits")),
                                ("user data (no task)", ("generic", "about-labels", "which-fits"))):
            keys = [k for k in mine if k[0] in tasks_ and k[1] in PRODUCT_CUES]
            for n in (8, 12, 16, 32):
                picks = []
                for _ in range(DRAWS):
                    idx = rng.choice(args.texts, n, replace=False)
                    picks.append(mine[max(keys, key=lambda k: answer_information(probs[k][idx]))]["macro_f1_batch"])
                entry["auto"][f"{setting}, n={n}"] = round(float(np.mean(picks)), 4)
        out.append(entry)
    return out


def summary_markdown(summary: list[dict]) -> str:
    head = ["dataset", "generic / Category (user data, before)", "auto, user data, n=12",
            "built-in / Category (before)", "auto, with built-in, n=12", "auto n=8 / 16 / 32 (with built-in)",
            "best / mean candidate"]
    body = [[e["dataset"], f"{e['generic_category']:.3f}", f"{e['auto']['user data (no task), n=12']:.3f}",
             f"{e['built_in_category']:.3f}", f"{e['auto']['with built-in task, n=12']:.3f}",
             " / ".join(f"{e['auto'][f'with built-in task, n={n}']:.3f}" for n in (8, 16, 32)),
             f"{e['best']:.3f} / {e['mean']:.3f}"] for e in summary]
    return (f"Teacher batch-calibrated macro-F1 on the first texts of each test split; auto = the candidate with the "
            f"highest answer information on n random texts, averaged over {DRAWS} draws.\n\n"
            + markdown_table(head, body) + "\n")


def markdown(rows: list[dict]) -> str:
    lines = []
    for dataset in DATASETS:
        mine = [r for r in rows if r["dataset"] == dataset]
        if not mine:
            continue
        lines += [f"**{dataset}**", "", markdown_table(
            ["task", "cue", "macro-F1", "macro-F1 batch", "MI", "MI batch", "-H batch", "mass", "s"],
            [[r["task"], r["cue"], f"{r['macro_f1']:.3f}", f"{r['macro_f1_batch']:.3f}",
              *(f"{r['criteria'][k]:.3f}" for k in ("mi", "mi_batch", "neg_entropy_batch", "mass")), r["seconds"]]
             for r in mine]), ""]
        for crit in ("mi", "mi_batch", "neg_entropy_batch", "mass"):
            pick = max(mine, key=lambda r: r["criteria"][crit])
            lines.append(f"- {crit} picks {pick['task']} / {pick['cue']}: batch macro-F1 {pick['macro_f1_batch']:.3f} "
                         f"(best {max(r['macro_f1_batch'] for r in mine):.3f})")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
