"""The ``distill`` stage: unlabelled pool -> teacher labels (through the store) -> student -> evaluation.

It fills a run folder (RUN_DIR, described in runs.py): config.json first, checkpoint.pt after each
epoch, then selection.json, metrics.json, student/ and confusion_matrix.png, each written atomically.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..config import LOW_INFORMATION, DistillConfig, LabelSet, identity, stable_hash
from ..data import Dataset, read_dataset, text_key
from ..errors import DataError, StoreError, UserError
from ..files import rounded, sha256_file, write_json
from ..labels.gold import CLASS_BALANCE, check_gold_set, judge, sample_weights
from ..distributions import pool_divisor
from ..labels.labelling import (Labelled, check_gold, gold_scores, label_dataset, label_within_budget, recalibrated,
                        teacher_health)
from ..metrics import classification_scores, per_class_f1
from .plots import confusion_png
from .runs import (
    BUDGET_PICKS,
    RELABELLED,
    RunConfigRecord,
    default_eval,
    is_store,
    prepare_run_folder,
    read_eval,
    resolved,
    run_store,
    members_pool,
    store_pool,
    versions,
)
from ..store import LabelStore, check_label_store, text_hash
from ..teacher.backend import open_backend


def _pool_from_store(config: DistillConfig, teacher, progress: bool) -> tuple[Labelled, dict[str, int]]:
    """DATA is an existing label store: its trainable rows made by this teacher with this prompt and labels (for
    an ensemble: the texts every member labelled, pooled)."""
    members = getattr(teacher, "members", None) or [teacher]
    with LabelStore(config.data, existing=True) as store:
        configs = store.configs()
    for member in members:
        key = member.key
        if not any(c["config_hash"] == key.config_hash and c["teacher_sha256"] == key.teacher_sha256 for c in configs):
            made = "; ".join(f"{c['teacher_name']} with labels {','.join(c['labels'])}" for c in configs) or "nothing"
            raise StoreError(
                f"{config.data} was made with other labels or another teacher or prompt ({made}); "
                f"it has no rows for {member.model.name} with labels {','.join(member.scoring.labels.names)}"
            )
    rows, left_out = members_pool(config.data, [m.key for m in members], teacher.scoring.labels.names, config.limit)
    if progress and any(left_out.values()):
        print(f"{config.data}: training on {len(rows)} pool rows; left out {_left_out_text(left_out)}", file=sys.stderr)
    if not rows and left_out["no_role"]:
        raise DataError(f"{config.data}: none of its rows is marked as pool data ({left_out['no_role']} were labelled "
                        "before llkd-edge recorded what texts are for); mark your pool with `llkd-edge label DATA "
                        f"--store {config.data} --role pool` (no teacher time for texts already labelled)")
    return Labelled([r.text for r in rows], rows, None, len(rows), 0, len(rows), 0, 0, 0.0), left_out


def _choose_prompt(config: DistillConfig, teacher, source: Dataset | None, evalset: Dataset | None,
                   gold: Dataset | None, progress: bool):
    """--prompt auto: leave ``teacher`` asking with the best candidate prompt. From a label store, that is the
    prompt of its rows for this teacher, labels and settings with the most pool rows (a prompt chosen when
    the store was filled; its texts are not read again); else ``prompts.choose`` on a sample of the pool,
    eval and gold texts excluded, ranked on the gold texts where there are some."""
    from ..teacher.prompts import choose

    if source is None:
        base, best, most = teacher.scoring, teacher.scoring, 0  # none fits: as given, and _pool_from_store says so
        with LabelStore(config.data, existing=True) as store:
            configs = store.configs()
        first = (getattr(teacher, "members", None) or [teacher])[0]  # an ensemble's members share one prompt
        for made in configs:
            details = made["details"]
            if made["teacher_sha256"] != first.key.teacher_sha256 or "task" not in details:
                continue  # another teacher, or rows recorded before prompts were chosen
            teacher.use(replace(base, task=details["task"], answer_cue=details["answer_cue"]))
            if first.key.config_hash == made["config_hash"]:  # same labels, token budget, calibration, examples
                rows, _ = store_pool(config.data, first.key, None)
                if len(rows) > most:
                    best, most = teacher.scoring, len(rows)
        teacher.use(best)
        return None
    held = _held_out(evalset, gold)
    texts = [t for t in source.texts if text_key(t) not in held]
    return choose(teacher, texts, lambda d: label_dataset(d, teacher, config.store, progress=False, role="pool"),
                  config.prompt_sample, progress, gold,
                  lambda d: label_dataset(d, teacher, config.store, progress=False, role="validation"))


def _held_out(evalset: Dataset | None, gold: Dataset | None) -> set[str]:
    """The ``data.text_key`` of every eval and gold text: never worth a pool label, never trained on as one."""
    return {text_key(t) for t in (evalset.texts if evalset else []) + (gold.texts if gold else [])}


def _left_out_text(left_out: dict[str, int]) -> str:
    why = {"eval": "eval texts", "validation": "validation texts", "synthetic": "LLM-written texts",
           "no_role": "rows labelled before roles were recorded"}
    return ", ".join(f"{n} {why[k]}" for k, n in left_out.items() if n) or "nothing"


def _without(pool: Labelled, texts: list[str]) -> tuple[Labelled, int]:
    """``pool`` without any text that equals one of ``texts`` up to whitespace and case."""
    held = {text_key(t) for t in texts}
    keep = [i for i, t in enumerate(pool.texts) if text_key(t) not in held]
    if len(keep) == len(pool.texts):
        return pool, 0
    gold = None if pool.gold is None else [pool.gold[i] for i in keep]
    trimmed = Labelled([pool.texts[i] for i in keep], [pool.rows[i] for i in keep], gold, pool.total,
                       pool.labelled, pool.cached, pool.skipped, pool.duplicates, pool.seconds)
    return trimmed, len(pool.texts) - len(keep)


def _plus_filled(training, filled, shown: list[str]):
    """``--fill-rest``: the training pool with the texts the teacher never labelled appended, each with the
    rounds' probe distribution (``budget.Filled``; a --few-shot example stays out), untrusted, weight 1."""
    from .train import Pool

    held = {text_key(t) for t in shown}
    keep = [i for i, t in enumerate(filled.texts) if text_key(t) not in held]
    return Pool(training.texts + [filled.texts[i] for i in keep],
                np.vstack([training.probs, filled.probs[keep]]) if keep else training.probs,
                trusted=np.r_[training.trusted, np.zeros(len(keep), bool)],
                weights=np.r_[training.weights, np.ones(len(keep))]), len(keep)


def learn_from_gold(texts: list[str], probs: np.ndarray, gold: Dataset, gold_probs: np.ndarray,
                    labels: tuple[str, ...], seed: int, progress: bool = False, balance: float = CLASS_BALANCE):
    """The training pool with ``--gold``: the pool's texts labelled by the source the gold texts judge best
    (teacher, gold-only probe, or their product; ``gold.judge``), each weighted by the trust of its label's
    class, plus the gold texts themselves as trusted samples. Returns ``(Pool, GoldJudgement)``.

    ``probs``/``gold_probs``: shape (N, K)/(G, K), the teacher's distributions, calibrated alike.
    """
    from ..teacher.encoder import embed
    from .train import Pool

    x = embed(texts + gold.texts, progress=progress)
    judgement = judge(gold_probs, x[len(texts):], gold.gold, labels, seed)
    taught = judgement.labels_for(probs, x[: len(texts)])
    onehot = np.eye(len(labels))[[labels.index(g) for g in gold.gold]]
    pool = Pool(texts + gold.texts, np.vstack([taught, onehot]),
                trusted=np.r_[np.zeros(len(texts), bool), np.ones(len(gold.texts), bool)],
                weights=np.r_[sample_weights(taught, judgement.class_trust, balance),
                              np.ones(len(gold.texts))])
    return pool, judgement


def _relabelled(pool: Labelled, probs: np.ndarray, labels: tuple[str, ...], seed: int, progress: bool):
    """--relabel probe: the pool's distributions times a cross-fitted probe's (relabel.py), and a record."""
    from .relabel import PROBE_C, relabelled
    from ..teacher.encoder import embed

    started = time.perf_counter()
    out = relabelled(probs, embed(pool.texts, progress=progress), seed)
    record = {"method": "probe", "probe_c": PROBE_C, "changed": round(float(np.mean(out.argmax(1) != probs.argmax(1))), 4),
              "seconds": round(time.perf_counter() - started, 2)}
    if pool.gold and all(pool.gold):  # a built-in pool: how right the labels are, before and after
        y = np.array([labels.index(g) if g in labels else -1 for g in pool.gold])
        record["pool_accuracy"] = {"teacher": round(float(np.mean(probs.argmax(1) == y)), 4),
                                   "relabelled": round(float(np.mean(out.argmax(1) == y)), 4)}
    return out, record


def _check_taught(training, labels: LabelSet, minimum: int) -> None:
    """With --gold: enough texts per class among the labels the student learns from (gold texts included)."""
    counts = Counter(training.probs.argmax(axis=1).tolist())
    short = [f"{name} {counts.get(j, 0)}" for j, name in enumerate(labels.names) if counts.get(j, 0) < minimum]
    if short:
        raise DataError(f"too few texts per class to train: {', '.join(short)} of {len(training.texts)} "
                        f"(need at least {minimum} each; add texts or gold examples, or lower --min-per-class)")


def _check_pool(pool: Labelled, labels: LabelSet, minimum: int) -> None:
    counts = Counter(r.label for r in pool.rows)
    short = [f"{name} {counts.get(name, 0)}" for name in labels.names if counts.get(name, 0) < minimum]
    if short:
        raise DataError(
            f"too few texts per class to train: the teacher gave {', '.join(short)} of {len(pool.rows)} "
            f"(need at least {minimum} each; add texts, merge labels, or lower --min-per-class)"
        )


def distill(config: DistillConfig, resume: bool = False, progress: bool = True, teacher_factory=None) -> dict:
    """Run the whole stage; returns the metrics also written to RUN_DIR/metrics.json."""
    from .train import Pool, build_student, predict_proba, resolve_device, save_student, train

    started = time.perf_counter()
    resolve_device(config.train.device)  # --device cuda without a GPU fails before any teacher time is spent
    # Paths as absolute ones, so export/evolve find the same files from any directory.
    config = replace(config, data=resolved(config.data), eval=resolved(config.eval or default_eval(config.data)),
                     store=resolved(run_store(config.data, config.store)))
    labels = config.scoring.labels
    data_is_store = is_store(config.data)
    if data_is_store and config.label_budget:
        raise UserError(f"{config.data} is a label store: its rows are labelled already; --label-budget picks which "
                        "texts of a data file to label")
    if data_is_store:
        check_label_store(Path(config.data))  # another program's sqlite file is refused before anything writes to it
    store_path = config.store
    source = None if data_is_store else read_dataset(config.data, config.text_column, config.label_column).head(config.limit)
    if source is not None and source.gold is not None and not set(filter(None, source.gold)) <= set(labels.names):
        source = Dataset(source.name, source.texts, None)  # the pool's gold is only ever reported, never required
    evalset = None
    if config.eval:
        evalset = read_eval(config.eval, config.text_column, config.label_column, config.eval_limit)
        check_gold(evalset.gold, labels, evalset.name)
    gold = None
    if config.gold:  # checked before any teacher time is spent
        config = replace(config, gold=resolved(config.gold))
        gold = check_gold_set(read_dataset(config.gold, config.text_column, config.label_column), labels.names,
                              evalset.texts if evalset else None, config.scoring.few_shot)
    shown = [t for t, _ in config.scoring.few_shot]
    if evalset and shown:  # a demonstration's answer is in the prompt: scored on it, the teacher would look better
        shared = len({text_key(t) for t in shown} & {text_key(t) for t in evalset.texts})
        if shared:
            raise DataError(f"{evalset.name}: {shared} of its texts are also --few-shot examples; the teacher would be "
                            "scored on texts it was shown with their answers (remove them from one of the two files)")
    run_identity = identity(config)  # as asked: with --prompt auto, before a prompt is chosen
    run_dir = prepare_run_folder(Path(config.out), run_identity, resume, ("identity",), "run")

    # 1. Teacher labels for the pool and the eval texts, through the store.
    teacher = (teacher_factory or open_backend)(config.scoring, config.teacher)  # the local backend
    label_started = time.perf_counter()
    choice = None
    if config.prompt == "auto":
        choice = _choose_prompt(config, teacher, source, evalset, gold, progress)
        config = replace(config, scoring=teacher.scoring)  # recorded, and used by export, evolve and bench
    left_out: dict[str, int] = {}
    budget_record = filled = None
    if data_is_store:
        pool, left_out = _pool_from_store(config, teacher, progress)
    elif config.label_budget:  # the rounds never spend a teacher call on an eval or gold text
        from ..labels.budget import without

        held = _held_out(evalset, gold)
        pool, budget_record, filled = label_within_budget(without(source, held), teacher, store_path,
                                                          config.label_budget, config.train.seed, progress,
                                                          config.pool_calibration)
    else:
        pool = label_dataset(source, teacher, store_path, progress=progress, role="pool")
    overlap = gold_overlap = 0
    if evalset:  # never train on an eval text, in any whitespace/case variant (a store may hold both)
        pool, overlap = _without(pool, evalset.texts)
    if gold:  # a gold text trains once, as a gold sample, never also with the teacher's label
        pool, gold_overlap = _without(pool, gold.texts)
    demo_overlap = 0
    if shown:  # a demonstration's teacher label only echoes the prompt: it is not trained on as if it were learnt
        pool, demo_overlap = _without(pool, shown)
    health, warnings = teacher_health(pool.rows, labels.names)  # the labels as the teacher gave them
    # Pool calibration is read-time: the store keeps the teacher's distributions as it gave them.
    prior = pool_divisor(np.array([r.probs for r in pool.rows]), config.pool_calibration) if pool.rows else None
    pool = replace(pool, rows=recalibrated(pool.rows, labels.names, prior))
    if not gold:  # with gold texts, the labels the student learns from are checked once they are known
        _check_pool(pool, labels, config.min_per_class)  # before the eval set costs any teacher time
    judged = label_dataset(gold, teacher, store_path, progress=progress, role="validation") if gold else None
    stored_eval = label_dataset(evalset, teacher, store_path, progress=progress, role="eval") if evalset else None
    # The teacher is scored as the student was taught: with the pool's prior divided out too.
    evaluated = replace(stored_eval, rows=recalibrated(stored_eval.rows, labels.names, prior)) if evalset else None
    label_seconds = time.perf_counter() - label_started

    provenance: RunConfigRecord = {
        "identity": run_identity,
        "config": asdict(config),
        "teacher": {"name": teacher.model.name, "sha256": teacher.model.sha256, "licence": teacher.model.licence,
                    "prompt": teacher.prompt, "config_hash": teacher.key.config_hash,
                    "label_tokens": teacher.label_tokens,
                    # an ensemble: each member's rows in the store, pooled at read time (Run.pool reads them so)
                    "members": [{"name": m.model.name, "sha256": m.model.sha256, "config_hash": m.key.config_hash}
                                for m in getattr(teacher, "members", None) or []] or None},
        "versions": versions(),
    }
    write_json(run_dir / "config.json", provenance)
    if budget_record:  # which texts the teacher labelled, in pick order, and the probe's fill of the rest: Run.pool
        # and Run.filled read exactly these back, whatever the store gains
        write_json(run_dir / BUDGET_PICKS, {
            "text_sha256": [text_hash(t) for t in pool.texts],
            "filled": {"text_sha256": [text_hash(t) for t in filled.texts], "probs": filled.probs.tolist()}
            if filled and filled.texts else None})

    # 2. The student, with --gold on the labels the gold texts judge best, and on the gold texts themselves.
    train_started = time.perf_counter()
    probs = np.array([r.probs for r in pool.rows], dtype=np.float64)
    judgement = relabel_record = None
    if gold:
        gold_probs = np.array([r.probs for r in recalibrated(judged.rows, labels.names, prior)])
        training, judgement = learn_from_gold(pool.texts, probs, Dataset(gold.name, judged.texts, judged.gold),
                                              gold_probs, labels.names, config.train.seed, progress)
        _check_taught(training, labels, config.min_per_class)
        if judgement.teacher_below_gold_only:
            t, g = judgement.scores["teacher"]["accuracy"], judgement.scores["gold_only"]["accuracy"]
            warnings.append(f"the teacher ({t:.3f}) does worse on your {judgement.n} gold texts than a probe trained on "
                            f"those texts alone ({g:.3f}): its labels count for less here (try another --task or "
                            "teacher, or more gold texts)")
    else:
        information = health.get("answer_information", 1.0)
        if config.relabel and information < LOW_INFORMATION:
            # Labels that hardly depend on the text teach the probe their noise: it makes them surer, not righter
            # (slo-sentiment: 41.5% right before and 40-42% after, mean confidence 0.46 -> 0.57, and the student
            # fell on every seed; bench/RESULTS.md). So near chance the teacher's labels are trained on as they are.
            warnings.append(f"the pool's labels were not checked by the probe (--relabel {config.relabel}): with "
                            f"answers this close to chance (answer information {information:.2f} < "
                            f"{LOW_INFORMATION}) it would only make them surer, not righter")
        elif config.relabel:
            probs, relabel_record = _relabelled(pool, probs, labels.names, config.train.seed, progress)
            np.savez(run_dir / RELABELLED, text_sha256=np.array([text_hash(t) for t in pool.texts]), probs=probs)
        training = Pool(pool.texts, probs)
    filled_count = 0
    if filled:  # never counted as teacher labels: metrics' data.filled_size, label_budget.texts_filled
        training, filled_count = _plus_filled(training, filled, shown)
    student = build_student(config.train.student, labels.names, config.train.seed)
    stats = train(student, training, config.train, run_dir, resume=resume, progress=progress)
    train_seconds = time.perf_counter() - train_started
    write_json(run_dir / "selection.json", [asdict(s) for s in stats])

    # 3. Teacher and student on the same eval texts.
    eval_started = time.perf_counter()
    metrics: dict = {"teacher": None, "student": None}
    if evaluated:
        keep = [i for i, g in enumerate(evaluated.gold) if g]
        gold = [evaluated.gold[i] for i in keep]
        student_probs = predict_proba(student, [evaluated.texts[i] for i in keep], config.train.max_length, progress=progress)
        predicted = [labels.names[j] for j in student_probs.argmax(axis=1)]
        metrics["student"] = rounded(classification_scores(gold, predicted, labels.names))
        metrics["teacher"] = rounded(gold_scores(evaluated, labels.names))
        metrics["per_class_f1"] = {"teacher": per_class_f1(gold, [evaluated.rows[i].label for i in keep], labels.names),
                                   "student": per_class_f1(gold, predicted, labels.names)}
        if judgement:  # the gold-only probe and the labels the student learnt from, on the same eval texts
            from ..teacher.encoder import embed

            x = embed([evaluated.texts[i] for i in keep], progress=progress)
            eval_probs = np.array([evaluated.rows[i].probs for i in keep])
            for name, p in (("gold_only", judgement.probe.predict(x)), ("taught_labels", judgement.labels_for(eval_probs, x))):
                metrics[name] = rounded(classification_scores(gold, [labels.names[j] for j in p.argmax(1)], labels.names))
        confusion_png(run_dir / "confusion_matrix.png", gold, predicted, labels.names,
                       f"{config.train.student} ({config.train.selection}) on {evalset.name}: "
                       f"macro-F1 {metrics['student']['macro_f1']:.3f}")
    eval_seconds = time.perf_counter() - eval_started

    save_student(student, run_dir / "student")
    n = len(pool.rows)
    metrics.update({
        "selection": {
            "method": config.train.selection,
            "fraction_used": round(stats[-1].ever_selected / len(training.texts), 4),
            "selected_per_epoch": [s.selected for s in stats],
            "ever_selected_per_epoch": [s.ever_selected for s in stats],
            "soft_labels": config.train.soft_labels,
        },
        "data": {
            "pool": config.data,
            "pool_size": n,
            "pool_texts_dropped_as_eval_overlap": overlap,
            "pool_texts_dropped_as_gold": gold_overlap,
            "pool_texts_dropped_as_few_shot": demo_overlap,
            "gold_size": len(training.texts) - n - filled_count,  # --gold texts trained on beside the pool
            "filled_size": filled_count,  # --fill-rest: texts the teacher never saw, labelled by the rounds' probe
            "store_rows_left_out": left_out,  # DATA a store: rows not trained on, by reason (eval, validation, ...)
            "eval": evalset.name if evalset else None,
            "eval_size": len(evaluated.rows) if evaluated else 0,
            "labels": list(labels.names),
            "pool_teacher_label_counts": dict(Counter(r.label for r in pool.rows)),
        },
        "pool_calibration": {
            "method": config.pool_calibration,
            "prior": None if prior is None else [round(float(p), 6) for p in prior],
            "teacher_as_stored": rounded(gold_scores(stored_eval, labels.names)) if stored_eval else None,
        },
        "prompt_choice": choice.record() if choice else None,
        "relabel": relabel_record,  # --relabel probe: how many pool labels the probe changed, how many are right
        "label_budget": budget_record,  # --label-budget: the rounds, what each cost, the teacher calls
        # --gold: the teacher, the gold-only probe and their product judged on the gold texts, and the choice
        "gold": None if judgement is None else {
            "file": config.gold, "sha256": sha256_file(config.gold), **judgement.record(),
            "student_learns_from": judgement.chosen, "class_balance": CLASS_BALANCE},
        "teacher_health": health,  # without gold labels: labelling.teacher_health
        "teacher_warnings": warnings,
        "pool_teacher": rounded(gold_scores(pool, labels.names)),  # pseudo-label quality, when the pool has gold
        "student_model": {"name": config.train.student, **{k: v for k, v in student.info.items() if k != "base"}},
        "seconds": {"label": round(label_seconds, 2), "train": round(train_seconds, 2),
                    "eval": round(eval_seconds, 2), "total": round(time.perf_counter() - started, 2)},
        "labelled_now": {"pool": pool.labelled, "eval": evaluated.labelled if evaluated else 0},
        "run_id": stable_hash(provenance["identity"])[:12],
    })
    write_json(run_dir / "metrics.json", metrics)
    return metrics
