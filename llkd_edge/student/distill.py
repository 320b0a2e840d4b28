"""The ``distill`` stage: unlabelled pool -> teacher labels (through the store) -> student -> evaluation.

``distill()`` reads as its five phases, a function each: ``read_inputs`` (DATA, the eval and gold files, checked
before any teacher time), ``label`` (the pool, gold and eval texts through the store, held-out texts left out,
read pool-calibrated), ``pool.training_pool`` (what the student learns from), ``train_student`` and
``evaluate_and_record``. It fills a run folder (RUN_DIR, described in runs.py): config.json first, checkpoint.pt
after each epoch, then selection.json, metrics.json, student/ and confusion_matrix.png, each written atomically.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..config import AUTO_TEACHER, DistillConfig, identity, stable_hash
from ..data import Dataset, read_dataset, text_key
from ..distributions import pool_divisor
from ..errors import DataError, StoreError, UserError
from ..files import read_json, rounded, sha256_file, write_json
from ..labels.gold import CLASS_BALANCE, check_gold_set
from ..labels.labelling import (Labelled, check_gold, gold_scores, label_dataset, label_within_budget, recalibrated,
                                labels_signal, teacher_health)
from ..metrics import classification_scores, per_class_f1
from .curve import where_it_stands
from .plots import confusion_png
from .pool import Training, check_pool, training_pool, without
from .runs import (
    BUDGET_PICKS,
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
    members = teacher.members or [teacher]
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
    rows, left_out = members_pool(config.data, [m.key for m in members], teacher.scoring.labels.names, config.limit,
                                  getattr(teacher, "weights", None))
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
        first = (teacher.members or [teacher])[0]  # an ensemble's members share one prompt
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


@dataclass
class Inputs:
    """Phase 1: the config with absolute paths, and the files it names, read and checked."""

    config: DistillConfig
    source: Dataset | None  # DATA's rows; None when DATA is a label store
    evalset: Dataset | None
    gold: Dataset | None
    shown: list[str]  # the --few-shot texts (their answers are in the prompt)


@dataclass
class Labels:
    """Phase 2: the teacher's labels for the pool (held-out texts left out, read pool-calibrated), for the gold
    texts (``judged``) and the eval texts (as stored, and read as the pool was), and what they say of it."""

    config: DistillConfig  # with --prompt auto: the prompt chosen
    pool: Labelled
    prior: np.ndarray | None  # the pool calibration's divisor
    judged: Labelled | None
    stored_eval: Labelled | None
    evaluated: Labelled | None
    health: dict
    warnings: list[str]
    dropped: dict[str, int]  # pool texts left out as eval, gold and few-shot texts
    left_out: dict[str, int]  # DATA a store: rows not trained on, by reason
    budget: dict | None  # --label-budget: the rounds
    filled: object | None  # --label-budget's fill: budget.Filled
    choice: object | None  # --prompt auto: prompts.Choice
    seconds: float
    encoder_on_gold: dict | None = None  # --gold: the teacher, the encoder teacher and their pool on the gold texts


def with_paths_resolved(config: DistillConfig) -> DistillConfig:
    """The config as a run records it: DATA, the eval set (its default, DATA's test split, filled in) and the store
    as absolute paths, so export/evolve find the same files from any directory."""
    return replace(config, data=resolved(config.data), eval=resolved(config.eval or default_eval(config.data)),
                   store=resolved(run_store(config.data, config.store)))


def read_inputs(config: DistillConfig) -> Inputs:
    """Phase 1: DATA, the eval set, the gold texts and the few-shot examples, checked before any teacher time."""
    from .train import resolve_device

    resolve_device(config.train.device)  # --device cuda without a GPU fails before any teacher time is spent
    config = with_paths_resolved(config)
    labels = config.scoring.labels
    data_is_store = is_store(config.data)
    if data_is_store and config.label_budget:
        raise UserError(f"{config.data} is a label store: its rows are labelled already; --label-budget picks which "
                        "texts of a data file to label")
    if data_is_store:
        check_label_store(Path(config.data))  # another program's sqlite file is refused before anything writes to it
    source = None if data_is_store else read_dataset(config.data, config.text_column, config.label_column).head(config.limit)
    if source is not None and source.gold is not None and not set(filter(None, source.gold)) <= set(labels.names):
        source = Dataset(source.name, source.texts, None)  # the pool's gold is only ever reported, never required
    evalset = None
    if config.eval:
        evalset = read_eval(config.eval, config.text_column, config.label_column, config.eval_limit)
        check_gold(evalset.gold, labels, evalset.name)
    gold = None
    if config.gold:
        config = replace(config, gold=resolved(config.gold))
        gold = check_gold_set(read_dataset(config.gold, config.text_column, config.label_column), labels.names,
                              evalset.texts if evalset else None, config.scoring.few_shot)
    shown = [t for t, _ in config.scoring.few_shot]
    if evalset and shown:  # a demonstration's answer is in the prompt: scored on it, the teacher would look better
        shared = len({text_key(t) for t in shown} & {text_key(t) for t in evalset.texts})
        if shared:
            raise DataError(f"{evalset.name}: {shared} of its texts are also --few-shot examples; the teacher would be "
                            "scored on texts it was shown with their answers (remove them from one of the two files)")
    return Inputs(config, source, evalset, gold, shown)


def label(inputs: Inputs, teacher, progress: bool) -> Labels:
    """Phase 2: the teacher's labels for the pool, the gold and the eval texts, through the store (resumable)."""
    config, source, evalset, gold = inputs.config, inputs.source, inputs.evalset, inputs.gold
    labels = config.scoring.labels
    started = time.perf_counter()
    choice = None
    if config.prompt == "auto":
        choice = _choose_prompt(config, teacher, source, evalset, gold, progress)
        config = replace(config, scoring=teacher.scoring)  # recorded, and used by export, evolve and bench
    left_out: dict[str, int] = {}
    budget = filled = None
    if source is None:
        pool, left_out = _pool_from_store(config, teacher, progress)
    elif config.label_budget:  # the rounds never spend a teacher call on an eval or gold text
        from ..labels.budget import without as leaving_out

        pool, budget, filled = label_within_budget(leaving_out(source, _held_out(evalset, gold)), teacher,
                                                   config.store, config.label_budget, config.train.seed, progress,
                                                   config.pool_calibration)
    else:
        pool = label_dataset(source, teacher, config.store, progress=progress, role="pool")
    # never train on an eval text, in any whitespace/case variant (a store may hold both); a gold text trains once,
    # as a gold sample; a demonstration's teacher label only echoes the prompt
    dropped = {}
    for name, texts in (("eval", evalset.texts if evalset else []), ("gold", gold.texts if gold else []),
                        ("few_shot", inputs.shown)):
        pool, dropped[name] = without(pool, texts) if texts else (pool, 0)
    # the labels as the teacher gave them; the signal test also decides --relabel probe (pool.training_pool)
    health, warnings = teacher_health(pool.rows, labels.names, labels_signal(pool.rows, config.train.seed))
    if config.train.head == "auto":  # the same test decides the head; the run records the head it trained with
        from .head import auto_head

        config = replace(config, train=replace(config.train, head=auto_head(health.get("signal"))))
    # Pool calibration is read-time: the store keeps the teacher's distributions as it gave them.
    prior = pool_divisor(np.array([r.probs for r in pool.rows]), config.pool_calibration) if pool.rows else None
    as_given, pool = pool, replace(pool, rows=recalibrated(pool.rows, labels.names, prior))
    if not gold:  # with gold texts, the labels the student learns from are checked once they are known
        check_pool(pool, labels, config.min_per_class)  # before the eval set costs any teacher time
    judged = label_dataset(gold, teacher, config.store, progress=progress, role="validation") if gold else None
    versus = None
    if judged:  # would the encoder teacher, or a pool with it, do better on the gold texts? said, not acted on
        from ..labels.alternatives import compare_with_encoder

        versus = compare_with_encoder(
            config.scoring, config.teacher.model, judged.texts, judged.gold, np.array([r.probs for r in judged.rows]),
            as_given.texts, np.array([r.probs for r in as_given.rows]), config.train.seed)
    stored_eval = label_dataset(evalset, teacher, config.store, progress=progress, role="eval") if evalset else None
    # The teacher is scored as the student was taught: with the pool's prior divided out too.
    evaluated = replace(stored_eval, rows=recalibrated(stored_eval.rows, labels.names, prior)) if evalset else None
    return Labels(config, pool, prior, judged, stored_eval, evaluated, health, warnings, dropped, left_out, budget,
                  filled, choice, time.perf_counter() - started, versus)


def _record_provenance(run_dir: Path, config: DistillConfig, run_identity: dict, teacher, labelled: Labels) -> dict:
    """config.json (how the run was made), and with --label-budget which texts the teacher labelled."""
    weights = getattr(teacher, "weights", None)
    provenance: RunConfigRecord = {
        "identity": run_identity,
        "config": asdict(config),
        "teacher": {"name": teacher.model.name, "sha256": teacher.model.sha256, "licence": teacher.model.licence,
                    "prompt": teacher.prompt, "config_hash": teacher.key.config_hash,
                    "label_tokens": teacher.label_tokens,
                    # an ensemble: each member's rows in the store, pooled at read time (Run.pool reads them so)
                    # with --teacher a,b*2 each member's weight in the pool too
                    "members": [{"name": m.model.name, "sha256": m.model.sha256, "config_hash": m.key.config_hash,
                                 **({"weight": weights[i]} if weights else {})}
                                for i, m in enumerate(teacher.members or [])] or None},
        "versions": versions(),
    }
    write_json(run_dir / "config.json", provenance)
    if labelled.budget:  # which texts the teacher labelled, in pick order, and the probe's fill of the rest: Run.pool
        # and Run.filled read exactly these back, whatever the store gains
        filled = labelled.filled
        write_json(run_dir / BUDGET_PICKS, {
            "text_sha256": [text_hash(t) for t in labelled.pool.texts],
            "filled": {"text_sha256": [text_hash(t) for t in filled.texts], "probs": filled.probs.tolist()}
            if filled and filled.texts else None})
    return provenance


def train_student(config: DistillConfig, training: Training, run_dir: Path, resume: bool, progress: bool):
    """Phase 4: a new student trained on the pool, resumable from its last epoch; selection.json."""
    from .train import build_student, train

    started = time.perf_counter()
    student = build_student(config.train.student, config.scoring.labels.names, config.train.seed)
    stats = train(student, training.pool, config.train, run_dir, resume=resume, progress=progress)
    write_json(run_dir / "selection.json", [asdict(s) for s in stats])
    return student, stats, time.perf_counter() - started


def evaluate(config: DistillConfig, labelled: Labels, training: Training, student, evalset: Dataset | None,
             run_dir: Path, progress: bool) -> dict:
    """Phase 5a: the teacher and the student on the same eval texts (with --gold, the gold-only probe and the labels
    the student learnt from too); the confusion matrix."""
    from .train import predict_proba

    labels, evaluated = config.scoring.labels, labelled.evaluated
    metrics: dict = {"teacher": None, "student": None}
    if not evaluated:
        return metrics
    keep = [i for i, g in enumerate(evaluated.gold) if g]
    gold = [evaluated.gold[i] for i in keep]
    texts = [evaluated.texts[i] for i in keep]
    predicted = [labels.names[j] for j in predict_proba(student, texts, config.train.max_length,
                                                          progress=progress).argmax(axis=1)]
    metrics["student"] = rounded(classification_scores(gold, predicted, labels.names))
    metrics["teacher"] = rounded(gold_scores(evaluated, labels.names))
    metrics["per_class_f1"] = {"teacher": per_class_f1(gold, [evaluated.rows[i].label for i in keep], labels.names),
                               "student": per_class_f1(gold, predicted, labels.names)}
    if training.judgement:  # the gold-only probe and the labels the student learnt from, on the same eval texts
        from ..teacher.encoder import embed

        x = embed(texts, progress=progress)
        eval_probs = np.array([evaluated.rows[i].probs for i in keep])
        for name, p in (("gold_only", training.judgement.probe.predict(x)),
                        ("taught_labels", training.judgement.labels_for(eval_probs, x))):
            metrics[name] = rounded(classification_scores(gold, [labels.names[j] for j in p.argmax(1)], labels.names))
    confusion_png(run_dir / "confusion_matrix.png", gold, predicted, labels.names,
                  f"{config.train.student} ({config.train.selection}) on {evalset.name}: "
                  f"macro-F1 {metrics['student']['macro_f1']:.3f}")
    return metrics


def record(config: DistillConfig, labelled: Labels, training: Training, student, stats, metrics: dict,
           provenance: dict, evalset: Dataset | None, seconds: dict) -> dict:
    """Phase 5b: metrics.json's record of the run: what was selected, the data, the teacher's health, timings."""
    labels, pool, judgement = config.scoring.labels, labelled.pool, training.judgement
    n = len(pool.rows)
    metrics.update({
        "selection": {
            "method": config.train.selection,
            "fraction_used": round(stats[-1].ever_selected / len(training.pool.texts), 4),
            "selected_per_epoch": [s.selected for s in stats],
            "ever_selected_per_epoch": [s.ever_selected for s in stats],
            "soft_labels": config.train.soft_labels,
        },
        "data": {
            "pool": config.data,
            "pool_size": n,
            "pool_texts_dropped_as_eval_overlap": labelled.dropped["eval"],
            "pool_texts_dropped_as_gold": labelled.dropped["gold"],
            "pool_texts_dropped_as_few_shot": labelled.dropped["few_shot"],
            "gold_size": len(training.pool.texts) - n - training.filled,  # --gold texts trained on beside the pool
            "filled_size": training.filled,  # --fill-rest: texts the teacher never saw, labelled by the rounds' probe
            "store_rows_left_out": labelled.left_out,  # DATA a store: rows not trained on, by reason
            "eval": evalset.name if evalset else None,
            "eval_size": len(labelled.evaluated.rows) if labelled.evaluated else 0,
            "labels": list(labels.names),
            "pool_teacher_label_counts": dict(Counter(r.label for r in pool.rows)),
        },
        "pool_calibration": {
            "method": config.pool_calibration,
            "prior": None if labelled.prior is None else [round(float(p), 6) for p in labelled.prior],
            "teacher_as_stored": rounded(gold_scores(labelled.stored_eval, labels.names)) if labelled.stored_eval else None,
        },
        "prompt_choice": labelled.choice.record() if labelled.choice else None,
        "relabel": training.relabel,  # --relabel probe: how many pool labels the probe changed, how many are right
        "label_budget": labelled.budget,  # --label-budget: the rounds, what each cost, the teacher calls
        # --gold: the teacher, the gold-only probe and their product judged on the gold texts, and the choice
        "gold": None if judgement is None else {
            "file": config.gold, "sha256": sha256_file(config.gold), **judgement.record(),
            "student_learns_from": judgement.chosen, "class_balance": CLASS_BALANCE,
            "encoder_on_gold": labelled.encoder_on_gold},  # labels.alternatives
        "teacher_health": labelled.health,  # without gold labels: labelling.teacher_health
        "teacher_warnings": labelled.warnings + training.warnings,
        "pool_teacher": rounded(gold_scores(pool, labels.names)),  # pseudo-label quality, when the pool has gold
        "student_model": {"name": config.train.student, **{k: v for k, v in student.info.items() if k != "base"}},
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "labelled_now": {"pool": pool.labelled, "eval": labelled.evaluated.labelled if labelled.evaluated else 0},
        "run_id": stable_hash(provenance["identity"])[:12],
    })
    return metrics


CHOICE_FILE = "student_choice.json"


def auto_student(config: DistillConfig, inputs: Inputs, run_dir: Path, progress: bool, choose) -> tuple[DistillConfig, dict]:
    """``--student auto``: the config with the student ``choose`` (``deploy.latency.choose``, handed in by the
    caller: timing needs the later stages' export and runtime) picks for ``max_latency_ms`` on this machine (timed
    on DATA's texts, else the eval set's), and the record of that choice, kept in RUN_DIR so a resumed run trains
    the student it started with."""
    from ..registry import registry

    if choose is None:
        raise UserError("--student auto needs a chooser: call distill(..., choose_student=deploy.latency.choose)")
    path = run_dir / CHOICE_FILE
    if path.exists():  # a resumed run: its choice, checked (the folder may come from someone else)
        try:
            record = read_json(path)
        except (OSError, ValueError):
            record = None
        if not isinstance(record, dict) or record.get("student") not in registry("students"):
            raise UserError(f"{path}: not a student choice of this version; choose another --out")
    else:
        source = inputs.source or inputs.evalset
        if source is None:
            raise UserError("--student auto times the students on DATA's texts or the eval set's: give --eval")
        say = (lambda message: print(message, file=sys.stderr, flush=True)) if progress else (lambda message: None)
        record = choose(config.train.max_latency_ms, list(config.scoring.labels.names), config.train.max_length,
                        config.train.threads, list(source.texts), say)
        write_json(path, record)
        say(f"--student auto: {record['student']}, the best student within {config.train.max_latency_ms:g} ms here")
    return replace(config, train=replace(config.train, student=record["student"], max_latency_ms=None)), record


def distill(config: DistillConfig, resume: bool = False, progress: bool = True, teacher_factory=None,
            choose_student=None) -> dict:
    """Run the whole stage; returns the metrics also written to RUN_DIR/metrics.json.

    ``choose_student``: with ``--student auto``, ``deploy.latency.choose`` (the CLI hands it in).

    ``teacher_factory(scoring, teacher_config)``: a teacher to use instead of opening the configured backend."""
    from .train import save_student

    started = time.perf_counter()
    inputs = read_inputs(config)  # 1. inputs
    config = inputs.config
    run_identity = identity(config)  # as asked: with --prompt auto, before a prompt is chosen
    if config.teacher.model == AUTO_TEACHER:  # before any folder is made or --student auto spends its timing
        from ..labels.teacher_choice import check_auto

        check_auto(config, inputs.source)
    run_dir = prepare_run_folder(Path(config.out), run_identity, resume, ("identity",), "run")
    auto = config.teacher.model == AUTO_TEACHER or config.train.student == "auto"
    if auto and not (run_dir / "config.json").exists():  # a choice is kept in RUN_DIR before the provenance is
        write_json(run_dir / "config.json", {"identity": run_identity})  # written: the identity now, so it resumes
    student_choice = None
    if config.train.student == "auto":  # before the teacher: a budget no student meets fails in a minute, not hours
        config, student_choice = auto_student(config, inputs, run_dir, progress, choose_student)
        inputs = replace(inputs, config=config)  # the later phases read the config from here

    def open_teacher(scoring, teacher_config):
        return (teacher_factory(scoring, teacher_config) if teacher_factory else
                open_backend(scoring, teacher_config, config.backend, config.ray, progress))

    teacher_choice = None
    if config.teacher.model == AUTO_TEACHER:  # both teachers label the pool; their agreement picks the teacher
        from ..labels.teacher_choice import auto_teacher

        config, teacher_choice = auto_teacher(config, inputs.source, _held_out(inputs.evalset, inputs.gold), run_dir,
                                              progress, open_teacher)
        inputs = replace(inputs, config=config)
    teacher = open_teacher(config.scoring, config.teacher)
    try:
        labelled = label(inputs, teacher, progress)  # 2. labels
        config = labelled.config
        provenance = _record_provenance(run_dir, config, run_identity, teacher, labelled)
    finally:
        if not teacher_factory:  # the teacher this run opened is let go before training (its memory, Ray's workers)
            teacher.close()
    tick = time.perf_counter()
    training = training_pool(config, labelled.pool, labelled.judged, inputs.gold, labelled.prior,  # 3. pool
                             labelled.filled, labelled.health, run_dir, progress)
    student, stats, _ = train_student(config, training, run_dir, resume, progress)  # 4. train
    train_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    metrics = evaluate(config, labelled, training, student, inputs.evalset, run_dir, progress)  # 5. evaluate, record
    curve = where_it_stands(config, labelled.evaluated, training.pool, metrics, run_dir, progress)
    eval_seconds = time.perf_counter() - tick
    save_student(student, run_dir / "student")
    record(config, labelled, training, student, stats, metrics, provenance, inputs.evalset,
           {"label": labelled.seconds, "train": train_seconds, "eval": eval_seconds,
            "total": time.perf_counter() - started})
    if student_choice is not None:
        metrics["student_choice"] = student_choice
    if teacher_choice is not None:
        metrics["teacher_choice"] = teacher_choice
    if curve is not None:
        metrics["learning_curve"] = curve
    write_json(run_dir / "metrics.json", metrics)
    return metrics
