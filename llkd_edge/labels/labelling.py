"""The ``label`` stage: texts -> teacher -> label store, resumable, with a summary.

Everything is validated (data, labels, gold labels, model file) before the store is written, so a bad
input never touches finished work. Rows are committed every ``commit_every`` texts: a killed run loses
at most that batch, and a re-run labels only what is missing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from collections import Counter
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from tqdm.auto import tqdm

from ..teacher.backend import TeacherBackend, open_backend
from ..config import LabelRunConfig, LabelSet
from ..data import Dataset, builtin_spec, read_dataset, text_key
from ..distributions import answer_information, batch_calibrated, pool_prior
from ..errors import LabelSpecError, UserError
from ..files import write_text
from ..metrics import classification_scores
from ..store import LabelRow, LabelStore, export_rows, unique_texts


@dataclass
class LabelSummary:
    """What a ``label`` run did; ``--json`` prints this."""

    data: str
    store: str
    teacher: str
    teacher_sha256: str
    config_hash: str
    labels: list[str]
    total: int  # rows read (after --limit)
    labelled: int  # texts the teacher evaluated in this run
    cached: int  # texts found in the store already
    skipped: int  # empty or whitespace-only texts
    duplicates: int  # repeats of a text earlier in the input (labelled once)
    seconds: float
    texts_per_second: float | None
    label_counts: dict[str, int]
    mean_confidence: float | None
    mean_label_mass: float | None
    truncated: int
    accuracy: float | None = None
    macro_f1: float | None = None
    majority_rate: float | None = None
    gold_count: int = 0
    role: str = "pool"
    backend: str = "local"
    workers: int = 1
    retried_batches: int = 0
    out: str | None = None
    prompt: str | None = None  # the prompt the texts were asked with ({text} where each text goes)
    prompt_choice: dict | None = None  # --prompt auto: every candidate's score, the winner first
    budget: dict | None = None  # --budget: the rounds, teacher calls, and how many texts were left unlabelled
    health: dict = field(default_factory=dict)  # teacher_health: how far the labels can be trusted, without gold
    gold: dict | None = None  # --gold: the teacher's accuracy on those texts, with its 95% interval (gold_judgement)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_labels(spec: str | None, default: str | None) -> LabelSet:
    """The user's label spec, else the data's default (a built-in dataset's), else an error."""
    if spec:
        return LabelSet.parse(spec)
    if default:
        return LabelSet.parse(default)
    raise LabelSpecError("no label set: pass --labels a,b,c (or name=verbaliser pairs, or a labels file)")


def check_gold(gold: list[str] | None, labels: LabelSet, source: str) -> None:
    if gold is None:
        return
    unknown = sorted({g for g in gold if g and g not in labels.names})
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise LabelSpecError(f"{source}: gold labels not in the label set: {shown} (labels: {', '.join(labels.names)})")


@dataclass
class Labelled:
    """A dataset's unique non-empty texts (input order) with their teacher rows and gold labels."""

    texts: list[str]
    rows: list[LabelRow]
    gold: list[str] | None  # "" where a row has no gold label
    total: int
    labelled: int
    cached: int
    skipped: int
    duplicates: int
    seconds: float
    retried_batches: int = 0  # batches resent after their Ray worker died (a served teacher: requests resent)
    warnings: list[str] = field(default_factory=list)


def recalibrated(rows: list[LabelRow], labels, prior) -> list[LabelRow]:
    """The rows with their distributions batch-calibrated by ``prior`` (``distributions.batch_calibrated``):
    label, confidence and entropy follow; the stored rows are untouched. ``prior`` None: the rows as they are."""
    if prior is None or not rows:
        return list(rows)
    from ..distributions import batch_calibrated

    return with_probs(rows, batch_calibrated(np.array([r.probs for r in rows]), prior), labels)


def with_probs(rows: list[LabelRow], probs: np.ndarray, labels) -> list[LabelRow]:
    """The rows with their distributions replaced by ``probs`` (N, K): label, confidence and entropy follow."""
    from ..distributions import entropy

    ent = entropy(probs)
    return [replace(r, probs=tuple(float(p) for p in probs[i]), label=labels[int(probs[i].argmax())],
                    confidence=float(probs[i].max()), entropy=float(ent[i])) for i, r in enumerate(rows)]


def label_dataset(dataset: Dataset, teacher: TeacherBackend, store_path: str, commit_every: int = 16, progress: bool = True,
                  role: str = "pool", member: bool = False) -> Labelled:
    """Label every unique non-empty text of ``dataset`` that the store lacks, then return all their rows.

    Every text is marked in the store with ``role`` (pool, eval or validation), cached ones included, so a
    store later read as training data knows which of its texts were held out. An ensemble (``ensemble.py``)
    labels member by member, and its rows are the members' pooled: ``labelled`` counts the texts that any
    member had to be asked about.
    """
    members = teacher.members
    if members:  # an ensemble: each member through the store under its own key; the pooled rows are read-time
        parts = [label_dataset(dataset, m, store_path, commit_every, progress, role, member=True) for m in members]
        return replace(parts[0], rows=teacher.pooled([p.rows for p in parts]),
                       labelled=max(p.labelled for p in parts), cached=min(p.cached for p in parts),
                       seconds=sum(p.seconds for p in parts), warnings=[w for p in parts for w in p.warnings])
    first, skipped = unique_texts(dataset.texts)
    order = list(first)
    if not order:
        raise UserError(f"{dataset.name}: no non-empty texts to label ({skipped} empty)")
    key = teacher.key
    who = f" with {teacher.model.name}" if member else ""  # an ensemble's members: each says which it is
    with LabelStore(store_path) as store:
        store.mark((dataset.texts[i] for i in first.values()), role, dataset.name)  # before any teacher time
        cached = store.cached(key, order)
        todo = [h for h in order if h not in cached]
        warnings, floored = [], 0
        if todo:
            warnings += _same_name_other_teacher(store, teacher)
            details = teacher.details
            floored = details.get("floored_texts", 0)  # a served teacher's count so far: this input's is the rise
            store.register(key, teacher.model.name, teacher.scoring.labels.names, details)
        if cached and progress:
            tqdm.write(f"{dataset.name}{who}: {len(cached)} of {len(order)} texts already in {store_path}; labelling {len(todo)}",
                       file=sys.stderr)
        started = time.perf_counter()
        bar = tqdm(total=len(todo), unit="text", desc=f"labelling {dataset.name}{who}", disable=not progress or not todo,
                   dynamic_ncols=True)
        batches = ([dataset.texts[first[h]] for h in todo[start : start + commit_every]]
                   for start in range(0, len(todo), commit_every))
        try:
            for rows in teacher.score_batches(batches):  # the driver alone writes the store, whatever the backend
                store.add(key, rows)
                bar.update(len(rows))
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        rows = store.rows(key, order)
    floored = teacher.details.get("floored_texts", 0) - floored if todo else 0
    if floored:  # a served teacher: labels outside the top log-probs the server returns
        warnings.append(f"{floored} texts had a label none of whose tokens was among the {teacher.details['top_logprobs']} "
                        "log-probs the server returned; such a label got the lowest returned one (an upper bound)")
    gold = None if dataset.gold is None else [dataset.gold[first[h]] for h in order]
    return Labelled(
        texts=[dataset.texts[first[h]] for h in order],
        rows=[rows[h] for h in order],
        gold=gold,
        total=len(dataset.texts),
        labelled=len(todo),
        cached=len(cached),
        skipped=skipped,
        duplicates=len(dataset.texts) - skipped - len(order),
        seconds=seconds,
        retried_batches=teacher.retried_batches,
        warnings=warnings,
    )


_WARNED: set[tuple[str, str]] = set()  # (store, teacher identity) already warned about in this process


def _same_name_other_teacher(store: LabelStore, teacher: TeacherBackend) -> list[str]:
    """A warning when the store holds rows of another teacher under this one's name: a file replaced in place,
    or a server that swapped its model behind the same name (a served model is named by what the server calls it,
    wherever it runs). Their rows are kept apart (another key)."""
    from ..teacher.endpoint import parse_spec

    def called(name: str) -> str:
        spec = parse_spec(name)
        return spec.model if spec and spec.model else name

    name, sha = teacher.model.name, teacher.key.teacher_sha256
    others = {c["teacher_sha256"] for c in store.configs()
              if called(c["teacher_name"]) == called(name) and c["teacher_sha256"] != sha}
    if not others or (str(store.path), sha) in _WARNED:
        return []
    _WARNED.add((str(store.path), sha))
    message = (f"{name} is not the teacher of that name whose rows {store.path} holds (its identity {sha[:12]} differs "
               f"from {', '.join(sorted(o[:12] for o in others))}): its answers are stored apart, and texts it has not "
               "answered are asked again")
    tqdm.write(f"warning: {message}", file=sys.stderr)
    return [message]


def label_within_budget(dataset: Dataset, teacher: TeacherBackend, store_path: str, budget, seed: int,
                        progress: bool = True, calibration: str = "batch") -> tuple[Labelled, dict, object]:
    """``--label-budget``/``--budget``: only the part of ``dataset`` that active rounds pick is labelled
    (``budget.pick_and_label``). Returns the picked texts as one ``Labelled``, in pick order, the rounds'
    record, and with ``budget.fill_rest`` the rest labelled by the probe (``budget.Filled``; else None)."""
    from .budget import pick_and_label

    picked, rows, record, filled = pick_and_label(
        dataset, tuple(teacher.scoring.labels.names),
        lambda d: label_dataset(d, teacher, store_path, progress=False, role="pool"), store_path, budget, seed,
        progress, calibration)
    calls = record["teacher_calls"]
    labelled = Labelled([dataset.texts[i] for i in picked], rows,
                        None if dataset.gold is None else [dataset.gold[i] for i in picked], len(dataset.texts),
                        calls, len(picked) - calls, 0, 0, record["label_seconds"])
    return labelled, record, filled


def label_texts(config: LabelRunConfig, teacher_factory=None, progress: bool = True) -> LabelSummary:
    """Run the label stage described by ``config`` and return its summary.

    ``teacher_factory(scoring, teacher_config) -> TeacherBackend`` exists for callers that keep a loaded
    teacher around (tests, benchmarks); by default ``backend.open_backend`` loads one for the run.
    """
    started = time.perf_counter()
    dataset = read_dataset(config.data, config.text_column, config.label_column).head(config.limit)
    check_gold(dataset.gold, config.scoring.labels, dataset.name)
    if not any(t.strip() for t in dataset.texts):
        raise UserError(f"{dataset.name}: no non-empty texts to label ({len(dataset.texts)} empty)")
    role = label_role(config)
    if config.budget and role != "pool":
        raise UserError(f"--budget picks training texts: {config.data} is labelled as {role} texts")
    gold = None
    if config.gold:  # checked before any teacher time is spent
        from .gold import check_gold_set

        gold = check_gold_set(read_dataset(config.gold, config.text_column, config.label_column),
                              config.scoring.labels.names, None, config.scoring.few_shot)
    held = {text_key(t) for t in gold.texts} if gold else set()  # gold texts are never sampled or picked as pool
    owned = teacher_factory is None  # a factory's teacher belongs to its caller
    teacher = (teacher_factory(config.scoring, config.teacher) if teacher_factory
               else open_backend(config.scoring, config.teacher, config.backend, config.ray, progress))
    choice = None
    if config.prompt == "auto":  # on the backend that labels afterwards: a Ray pool tries candidates in parallel
        from ..teacher.prompts import choose

        try:
            choice = choose(teacher, [t for t in dataset.texts if text_key(t) not in held] or dataset.texts,
                            lambda d: label_dataset(d, teacher, config.store, progress=False, role=role),
                            config.prompt_sample, progress, gold,
                            lambda d: label_dataset(d, teacher, config.store, progress=False, role="validation"))
        except BaseException:
            if owned:
                teacher.close()
            raise
        config = replace(config, scoring=choice.scoring)
    prompt = teacher.prompt
    budget = None
    try:
        if config.budget:  # only the part the rounds pick; gold texts are never a pool text
            from .budget import without

            pool = without(dataset, held)
            result, budget, _ = label_within_budget(pool, teacher, config.store, config.budget, config.seed, progress)
            chosen = {text_key(t) for t in result.texts}
            left = [pool.texts[i] for i in unique_texts(pool.texts)[0].values() if text_key(pool.texts[i]) not in chosen]
            budget["left_unlabelled"] = len(left)
        else:
            result = label_dataset(dataset, teacher, config.store, config.commit_every, progress, role)
        judged = label_dataset(gold, teacher, config.store, progress=progress, role="validation") if gold else None
    finally:
        if owned:
            teacher.close()  # a Ray pool's actors (and a Ray instance started for them) end with the run
    summary = _summarise(config, dataset.name, teacher, result)
    summary.prompt = prompt
    summary.prompt_choice = choice.record() if choice else None
    summary.budget = budget
    if judged:  # and the encoder teacher on the same gold texts: would it, or a pool with it, do better?
        from .alternatives import compare_with_encoder

        summary.gold = gold_judgement(judged, config.scoring.labels.names)
        summary.gold["encoder_on_gold"] = compare_with_encoder(
            config.scoring, config.teacher.model, judged.texts, judged.gold, np.array([r.probs for r in judged.rows]),
            result.texts, np.array([r.probs for r in result.rows]), config.seed)
    summary.seconds = round(time.perf_counter() - started, 3)
    if result.labelled and result.seconds > 0:
        summary.texts_per_second = round(result.labelled / result.seconds, 2)
    if config.out:
        summary.out = str(export_rows(result.rows, config.scoring.labels.names, config.out, result.gold))
        if budget:  # the texts the teacher was not asked about, one a line, for whoever wants them
            out = Path(config.out)
            budget["unlabelled_file"] = str(write_text(out.with_name(out.stem + ".unlabelled.txt"),
                                                       "".join(" ".join(t.split()) + "\n" for t in left)))
    return summary


def label_role(config: LabelRunConfig) -> str:
    """The role `label` marks its texts with: as asked, else eval for a built-in test split, else pool."""
    if config.role != "auto":
        return config.role
    return "eval" if builtin_spec(config.data) and config.data.endswith(":test") else "pool"


def _summarise(config: LabelRunConfig, name: str, teacher: TeacherBackend, result: Labelled) -> LabelSummary:
    labels = config.scoring.labels.names
    rows = result.rows
    counts = Counter(r.label for r in rows)
    health, warnings = teacher_health(rows, labels, labels_signal(rows))
    summary = LabelSummary(
        data=name,
        store=str(config.store),
        teacher=teacher.model.name,
        teacher_sha256=teacher.model.sha256,
        config_hash=teacher.key.config_hash,
        labels=list(labels),
        total=result.total,
        labelled=result.labelled,
        cached=result.cached,
        skipped=result.skipped,
        duplicates=result.duplicates,
        seconds=0.0,
        texts_per_second=None,
        label_counts={label: counts.get(label, 0) for label in labels},
        mean_confidence=health["mean_confidence"],
        mean_label_mass=health["mean_label_mass"],
        truncated=sum(r.truncated for r in rows),
        role=label_role(config),
        backend=config.backend,
        workers=config.ray.workers if config.backend == "ray" else 1,
        retried_batches=result.retried_batches,
    )
    summary.health, summary.warnings = health, warnings + result.warnings
    scores = gold_scores(result, labels)
    if scores:
        summary.accuracy = round(scores["accuracy"], 4)
        summary.macro_f1 = round(scores["macro_f1"], 4)
        summary.majority_rate = round(scores["majority_rate"], 4)
        summary.gold_count = scores["n"]
    return summary


LOW_LABEL_MASS = 0.05  # below this mean raw mass, the prompt does not fit the model
TRY_NEXT = ("a --task that says what the labels mean, --few-shot examples, verbalisers the model knows "
            "(--labels name=word), or a larger --teacher")


SIGNAL_SAMPLE = 600  # rows the signal test reads (a seeded sample of more): ~5-15 s of embedding on 2 cores


def labels_signal(rows: list[LabelRow], seed: int = 0) -> dict | None:
    """``labels.signal.probe_signal`` on the rows' labels as batch calibration reads them (so a teacher's lean
    towards one label word does not hide which texts it tells apart), over a seeded sample of at most
    ``SIGNAL_SAMPLE`` rows; None with too few rows to judge."""
    from .signal import MIN_ROWS, probe_signal

    if len(rows) < MIN_ROWS:
        return None
    if len(rows) > SIGNAL_SAMPLE:
        picked = np.random.default_rng(seed).choice(len(rows), SIGNAL_SAMPLE, replace=False)
        rows = [rows[i] for i in sorted(picked)]
    from ..teacher.encoder import embed

    probs = np.array([r.probs for r in rows], dtype=np.float64)
    labels = batch_calibrated(probs, pool_prior(probs)).argmax(axis=1)
    return probe_signal(embed([r.text for r in rows]), labels, probs.shape[1], seed).as_dict()


def teacher_health(rows: list[LabelRow], labels, signal: dict | None = None) -> tuple[dict, list[str]]:
    """What the rows say about the teacher without any gold label, and a warning in plain words for each sign
    of trouble: labels no better than chance (``signal``, from ``labels_signal``: a probe on the texts cannot
    predict them), one label named for most texts, little probability on the label words. Answer information
    (how much the answers depend on the text, ``distributions.answer_information``) is reported, not judged: an
    unsure teacher can be a useful one. The mean confidence is a rough guide to accuracy (within about 0.15 on
    the built-in sets, too high where the teacher is weakest)."""
    labels = list(labels)
    if not rows:
        return {}, []
    probs = np.array([r.probs for r in rows])
    counts = Counter(r.label for r in rows)
    top, top_count = counts.most_common(1)[0]
    health = {"answer_information": round(answer_information(probs), 4),
              "mean_confidence": round(float(probs.max(axis=1).mean()), 4),
              "top_label": top, "top_label_share": round(top_count / len(rows), 4),
              "labels_never_named": [name for name in labels if not counts.get(name)],
              "mean_label_mass": round(float(np.mean([r.label_mass for r in rows])), 4)}
    if signal is not None:
        health["signal"] = signal
    warnings = []
    if signal is not None and not signal["signal"]:
        warnings.append(f"the teacher's labels look no better than chance: a probe on the texts predicts them "
                        f"(after batch calibration) no better than the same labels shuffled (kappa {signal['kappa']:.2f}, z {signal['z']:.1f} on "
                        f"{signal['n']} texts). Try {TRY_NEXT}")
    even = 1 / len(labels)
    if len(rows) >= 20 and len(labels) > 1 and health["top_label_share"] > (1 + even) / 2:
        warnings.append(f"the teacher named {top!r} for {health['top_label_share']:.0%} of the texts (an even share "
                        f"is {even:.0%}); if your data is not that skewed, its labels lean on that word (distill's "
                        f"default pool calibration divides the lean out). Try {TRY_NEXT}")
    if health["mean_label_mass"] < LOW_LABEL_MASS:
        warnings.append(f"the teacher put only {health['mean_label_mass']:.1%} of its next-token probability on the "
                        f"label words: the prompt may not fit this model. Try {TRY_NEXT}")
    return health, warnings


def gold_judgement(result: Labelled, labels) -> dict:
    """The teacher's accuracy on ``--gold`` texts (as it gave its labels), its 95% Wilson interval, recall per
    class and macro-F1: how far its labels can be trusted, from a handful of gold labels."""
    from .gold import score_on_gold

    labels = list(labels)
    predicted = [r.label for r in result.rows]
    scores = score_on_gold(np.array([labels.index(p) for p in predicted]),
                           np.array([labels.index(g) for g in result.gold]), tuple(labels))
    return {**scores, "macro_f1": round(classification_scores(result.gold, predicted, labels)["macro_f1"], 4)}


def gold_scores(result: Labelled, labels) -> dict | None:
    """The teacher's accuracy and macro-F1 on the rows that have a gold label (None when none do)."""
    if result.gold is None:
        return None
    pairs = [(g, r.label) for g, r in zip(result.gold, result.rows) if g]
    if not pairs:
        return None
    return classification_scores([g for g, _ in pairs], [p for _, p in pairs], labels)
