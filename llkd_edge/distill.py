"""The ``distill`` stage: unlabelled pool -> teacher labels (through the store) -> student -> evaluation.

RUN_DIR receives:
  config.json             how the run was made (data, labels, prompt, teacher sha256, training and
                          selection settings, seeds, package versions)
  student/                the trained student (transformers ``save_pretrained``, with its tokenizer)
  metrics.json            teacher and student on the same eval texts, selection figures, sizes, timings
  selection.json          per-epoch selection statistics (selected, distinct ever selected, thresholds)
  confusion_matrix.png    the student on the eval set
  checkpoint.pt           the last finished epoch, for --resume
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path

import numpy as np

from .config import DistillConfig, LabelSet, stable_hash
from .data import Dataset, builtin_spec, eval_dataset, read_dataset, text_key
from .errors import DataError, StoreError, UserError
from .labelling import Labelled, check_gold, gold_scores, label_dataset, unique_texts
from .teacher import load_teacher
from .metrics import classification_scores
from .store import LabelRow, LabelStore, ScoringKey, check_label_store

STORE_SUFFIXES = {".sqlite", ".sqlite3", ".db"}


def versions(*extra: str) -> dict:
    """Python's and the installed packages' versions (None for one that is not installed)."""
    out = {"python": platform.python_version()}
    for dist in ("llkd-edge", "torch", "transformers", "tokenizers", "numpy", "llama_cpp_python", *extra):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def is_store(data: str) -> bool:
    """Whether DATA names an existing label store rather than texts."""
    return Path(data).suffix.lower() in STORE_SUFFIXES and Path(data).is_file()


def run_store(data: str, store: str | None) -> str:
    """The label store a run reads and fills: --store, else DATA when DATA is a store, else labels.sqlite."""
    return store or (data if is_store(data) else "labels.sqlite")


def resolved(source: str | None) -> str | None:
    """A file path made absolute (so a run folder read from another directory finds it); a built-in
    dataset name (``bbc-news:test``) or None as given."""
    if source is None or builtin_spec(source):
        return source
    return str(Path(source).expanduser().resolve())


def default_eval(data: str) -> str | None:
    """The eval set a run gets without --eval: a built-in dataset's test split; nothing for a file."""
    return f"{data.split(':', 1)[0]}:test" if builtin_spec(data) else None


def read_eval(name: str, text_column: str, label_column: str | None, limit: int | None, warn: bool = True) -> Dataset:
    """A gold eval set as every stage scores it: its first ``limit`` rows, then ``data.eval_dataset``."""
    return eval_dataset(read_dataset(name, text_column, label_column or None).head(limit), warn=warn)


def _identity(config: DistillConfig) -> dict:
    """What makes two runs the same run (how the work is spread over cores and devices is left out)."""
    d = asdict(config)
    d["train"].pop("threads")
    d["train"].pop("device")
    for name in ("n_threads", "n_gpu_layers", "parallel"):
        d["teacher"].pop(name)
    d.pop("store")
    return d


def _prepare_run_dir(config: DistillConfig, resume: bool) -> Path:
    return prepare_run_folder(Path(config.out), _identity(config), resume, ("identity",), "run")


def prepare_run_folder(out: Path, identity: dict, resume: bool, key: tuple[str, ...], what: str) -> Path:
    """Create OUT, or check that it holds an unfinished ``what`` with this identity (config.json at ``key``)
    when ``resume`` is given; any other content is a one-line error and is left untouched."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        try:
            saved = json.loads((out / "config.json").read_text())
            for part in key:
                saved = saved[part]
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"{out}: not empty and not an llkd-edge {what}; choose another --out") from None
        current = json.loads(json.dumps(identity))
        if saved != current:
            changed = sorted(_diff(saved, current))
            raise UserError(f"{out} holds a different {what} ({', '.join(changed[:4])} differ); choose another --out")
        if (out / "metrics.json").exists():
            raise UserError(f"{out} already holds this finished {what}; choose another --out")
        if not resume:
            raise UserError(f"{out} holds an unfinished {what} of this config; pass --resume to continue it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _diff(a, b, prefix="") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return set().union(*(_diff(a.get(k), b.get(k), f"{prefix}{k}.") for k in keys)) if keys else set()
    return set() if a == b else {prefix.rstrip(".")}


def store_pool(store_path: str, key: ScoringKey, limit: int | None) -> tuple[list[LabelRow], dict[str, int]]:
    """A label store read as training data: its first ``limit`` trainable rows under ``key`` (pool texts,
    never eval/validation texts, never LLM-written; ``LabelStore.training_rows``) and the rows left out, by reason."""
    with LabelStore(store_path, existing=True) as store:
        rows, left_out = store.training_rows(key)
    return (rows[:limit] if limit else rows), left_out


def _pool_from_store(config: DistillConfig, teacher, progress: bool) -> tuple[Labelled, dict[str, int]]:
    """DATA is an existing label store: its trainable rows made by this teacher with this prompt and labels."""
    key = teacher.key
    with LabelStore(config.data, existing=True) as store:
        configs = store.configs()
    if not any(c["config_hash"] == key.config_hash and c["teacher_sha256"] == key.teacher_sha256 for c in configs):
        made = "; ".join(f"{c['teacher_name']} with labels {','.join(c['labels'])}" for c in configs) or "nothing"
        raise StoreError(
            f"{config.data} was made with other labels or another teacher or prompt ({made}); "
            f"it has no rows for {teacher.model.name} with labels {','.join(teacher.scoring.labels.names)}"
        )
    rows, left_out = store_pool(config.data, key, config.limit)
    if progress and any(left_out.values()):
        print(f"{config.data}: training on {len(rows)} pool rows; left out {_left_out_text(left_out)}", file=sys.stderr)
    if not rows and left_out["no_role"]:
        raise DataError(f"{config.data}: none of its rows is marked as pool data ({left_out['no_role']} were labelled "
                        "before llkd-edge recorded what texts are for); mark your pool with `llkd-edge label DATA "
                        f"--store {config.data} --role pool` (no teacher time for texts already labelled)")
    return Labelled([r.text for r in rows], rows, None, len(rows), 0, len(rows), 0, 0, 0.0), left_out


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


def _check_pool(pool: Labelled, labels: LabelSet, minimum: int) -> None:
    counts = Counter(r.label for r in pool.rows)
    short = [f"{name} {counts.get(name, 0)}" for name in labels.names if counts.get(name, 0) < minimum]
    if short:
        raise DataError(
            f"too few texts per class to train: the teacher gave {', '.join(short)} of {len(pool.rows)} "
            f"(need at least {minimum} each; add texts, merge labels, or lower --min-per-class)"
        )


def _confusion_png(path: Path, gold, predicted, labels, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(gold, predicted, labels=list(labels))
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("student's label")
    ax.set_ylabel("gold label")
    top = matrix.max() or 1
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, matrix[i, j], ha="center", va="center", color="white" if matrix[i, j] > top / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def distill(config: DistillConfig, resume: bool = False, progress: bool = True, teacher_factory=None) -> dict:
    """Run the whole stage; returns the metrics also written to RUN_DIR/metrics.json."""
    from .train import Pool, build_student, predict_proba, resolve_device, train

    started = time.perf_counter()
    resolve_device(config.train.device)  # --device cuda without a GPU fails before any teacher time is spent
    # Paths as absolute ones, so export/evolve find the same files from any directory.
    config = replace(config, data=resolved(config.data), eval=resolved(config.eval or default_eval(config.data)),
                     store=resolved(run_store(config.data, config.store)))
    labels = config.scoring.labels
    data_is_store = is_store(config.data)
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
    run_dir = _prepare_run_dir(config, resume)

    # 1. Teacher labels for the pool and the eval texts, through the store.
    teacher = (teacher_factory or load_teacher)(config.scoring, config.teacher)
    label_started = time.perf_counter()
    left_out: dict[str, int] = {}
    if data_is_store:
        pool, left_out = _pool_from_store(config, teacher, progress)
    else:
        pool = label_dataset(source, teacher, store_path, progress=progress, role="pool")
    overlap = 0
    if evalset:  # never train on an eval text, in any whitespace/case variant (a store may hold both)
        pool, overlap = _without(pool, evalset.texts)
    _check_pool(pool, labels, config.min_per_class)  # before the eval set costs any teacher time
    evaluated = label_dataset(evalset, teacher, store_path, progress=progress, role="eval") if evalset else None
    label_seconds = time.perf_counter() - label_started

    provenance = {
        "identity": _identity(config),
        "config": asdict(config),
        "teacher": {"name": teacher.model.name, "sha256": teacher.model.sha256, "licence": teacher.model.licence,
                    "prompt": teacher.prompt, "config_hash": teacher.key.config_hash,
                    "label_tokens": teacher.label_tokens},
        "versions": versions(),
    }
    (run_dir / "config.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n")

    # 2. The student.
    train_started = time.perf_counter()
    student = build_student(config.train.student, labels.names, config.train.seed)
    probs = np.array([r.probs for r in pool.rows], dtype=np.float64)
    stats = train(student, Pool(pool.texts, probs), config.train, run_dir, resume=resume, progress=progress)
    train_seconds = time.perf_counter() - train_started
    (run_dir / "selection.json").write_text(json.dumps([asdict(s) for s in stats], indent=2) + "\n")

    # 3. Teacher and student on the same eval texts.
    eval_started = time.perf_counter()
    metrics: dict = {"teacher": None, "student": None}
    if evaluated:
        keep = [i for i, g in enumerate(evaluated.gold) if g]
        gold = [evaluated.gold[i] for i in keep]
        student_probs = predict_proba(student, [evaluated.texts[i] for i in keep], config.train.max_length, progress=progress)
        predicted = [labels.names[j] for j in student_probs.argmax(axis=1)]
        metrics["student"] = _rounded(classification_scores(gold, predicted, labels.names))
        metrics["teacher"] = _rounded(gold_scores(evaluated, labels.names))
        _confusion_png(run_dir / "confusion_matrix.png", gold, predicted, labels.names,
                       f"{config.train.student} ({config.train.selection}) on {evalset.name}: "
                       f"macro-F1 {metrics['student']['macro_f1']:.3f}")
    eval_seconds = time.perf_counter() - eval_started

    student_dir = run_dir / "student"
    student.model.save_pretrained(student_dir)
    student.tokenizer.save_pretrained(student_dir)
    n = len(pool.rows)
    metrics.update({
        "selection": {
            "method": config.train.selection,
            "fraction_used": round(stats[-1].ever_selected / n, 4),
            "selected_per_epoch": [s.selected for s in stats],
            "ever_selected_per_epoch": [s.ever_selected for s in stats],
            "soft_labels": config.train.soft_labels,
        },
        "data": {
            "pool": config.data,
            "pool_size": n,
            "pool_texts_dropped_as_eval_overlap": overlap,
            "store_rows_left_out": left_out,  # DATA a store: rows not trained on, by reason (eval, validation, ...)
            "eval": evalset.name if evalset else None,
            "eval_size": len(evaluated.rows) if evaluated else 0,
            "labels": list(labels.names),
            "pool_teacher_label_counts": dict(Counter(r.label for r in pool.rows)),
        },
        "pool_teacher": _rounded(gold_scores(pool, labels.names)),  # pseudo-label quality, when the pool has gold
        "student_model": {"name": config.train.student, **{k: v for k, v in student.info.items() if k != "base"}},
        "seconds": {"label": round(label_seconds, 2), "train": round(train_seconds, 2),
                    "eval": round(eval_seconds, 2), "total": round(time.perf_counter() - started, 2)},
        "labelled_now": {"pool": pool.labelled, "eval": evaluated.labelled if evaluated else 0},
        "run_id": stable_hash(provenance["identity"])[:12],
    })
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _rounded(scores: dict | None) -> dict | None:
    if scores is None:
        return None
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}



# ------------------------------------------------------------------------------------ reading a run


@dataclass(frozen=True)
class Run:
    """A finished distill run, as later stages (export, bench) read it."""

    path: Path
    provenance: dict  # config.json
    metrics: dict  # metrics.json

    @property
    def student_dir(self) -> Path:
        return self.path / "student"

    @property
    def labels(self) -> list[str]:
        return list(self.metrics["data"]["labels"])

    @property
    def max_length(self) -> int:
        return int(self.provenance["config"]["train"]["max_length"])

    @property
    def key(self) -> ScoringKey:
        """The store key of the teacher labels the student learned from."""
        return ScoringKey(self.provenance["teacher"]["sha256"], self.provenance["teacher"]["config_hash"])

    @property
    def store(self) -> str:
        config = self.provenance["config"]
        return run_store(config["data"], config.get("store"))

    def eval_set(self) -> Dataset | None:
        """The run's gold eval set, read again exactly as distill scored it (None when the run had none)."""
        config = self.provenance["config"]
        eval_name = config.get("eval") or self.metrics["data"].get("eval")
        if not eval_name:
            return None
        try:
            return read_eval(eval_name, config["text_column"], config["label_column"], config["eval_limit"], warn=False)
        except DataError as exc:
            raise DataError(f"{self.path}: cannot re-read the run's eval set ({exc})") from None

    def pool(self) -> list:
        """The pool the student trained on, as LabelRows read back from the run's label store (no teacher needed)."""
        config = self.provenance["config"]
        if not Path(self.store).is_file():
            raise DataError(f"{self.path}: its label store {self.store} is gone; run distill again")
        if is_store(config["data"]):
            rows = store_pool(config["data"], self.key, config["limit"])[0]
        else:
            source = read_dataset(config["data"], config["text_column"], config["label_column"]).head(config["limit"])
            order = list(unique_texts(source.texts)[0])
            with LabelStore(self.store) as store:
                found = store.rows(self.key, order)
            missing = sum(h not in found for h in order)
            if missing:
                raise DataError(f"{self.store} no longer holds the teacher's labels of {missing} of the run's pool texts; "
                                "run distill again")
            rows = [found[h] for h in order]
        evalset = self.eval_set()
        if evalset:
            held_out = {text_key(t) for t in evalset.texts}
            rows = [r for r in rows if text_key(r.text) not in held_out]
        if len(rows) != self.metrics["data"]["pool_size"]:
            raise DataError(f"{self.path}: its pool reads back as {len(rows)} texts but it trained on "
                            f"{self.metrics['data']['pool_size']}; {config['data']} has changed since")
        return rows

    def check_texts(self, limit: int | None = None) -> tuple[list[str], list[str] | None, str]:
        """Texts to compare copies of the student on (export's int8 gate), never a test text or an LLM-written
        one: the first ``limit`` texts of the pool the student trained on. -> (texts, reference labels, kind).

        The reference is the pool's gold labels when DATA has one for every such text (``"pool, gold"``), else
        the teacher's labels from the store (``"pool, teacher"``); without the store, the pool is read from DATA
        and only agreement is checked (``"pool, none"``). Training texts flatter both copies alike: the gate
        compares int8 with fp32, it does not measure quality (the eval set, in distill and bench, does).
        """
        config = self.provenance["config"]
        try:
            rows = self.pool()[:limit]
            texts, teacher = [r.text for r in rows], [r.label for r in rows]
        except DataError:
            if is_store(config["data"]):
                raise
            source = read_dataset(config["data"], config["text_column"], config["label_column"]).head(config["limit"])
            texts, teacher = [source.texts[i] for i in unique_texts(source.texts)[0].values()][:limit], None
        if not texts:
            raise DataError(f"{self.path}: no pool texts to check the exported model on")
        if not is_store(config["data"]):
            source = read_dataset(config["data"], config["text_column"], config["label_column"]).head(config["limit"])
            if source.gold is not None:
                by_key = {text_key(t): g for t, g in zip(source.texts, source.gold)}
                gold = [by_key.get(text_key(t)) for t in texts]
                if all(g in self.labels for g in gold):
                    return texts, gold, "pool, gold"
        return (texts, teacher, "pool, teacher") if teacher else (texts, None, "pool, none")

    def reference_texts(self, limit: int | None = None) -> tuple[list[str], list[str] | None, str]:
        """Texts to check a copy of the student on: (texts, reference labels, what the labels are).

        The run's own gold eval set when it had one (``"gold"``); else the teacher's labels of the pool
        from the run's label store (``"teacher"``); else an error.
        """
        evalset = self.eval_set()
        if evalset:
            pairs = [(t, g) for t, g in zip(evalset.texts, evalset.gold or []) if g and t.strip()][:limit]
            if pairs:
                return [t for t, _ in pairs], [g for _, g in pairs], "gold"
        if Path(self.store).is_file():
            with LabelStore(self.store) as opened:
                rows = list(opened.rows(self.key).values())[:limit]
            if rows:
                return [r.text for r in rows], [r.label for r in rows], "teacher"
        raise DataError(f"{self.path}: no gold eval set and no label store to take texts from")


def open_run(run_dir: str | Path) -> Run:
    """Read RUN_DIR, or say in one line why it is not a finished distill run."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path}: no such run folder (make one with `llkd-edge distill DATA --out {path}`)")
    if not (path / "config.json").is_file() or not (path / "student" / "config.json").exists():
        raise UserError(f"{path}: not a distill run (no config.json and student/ from `llkd-edge distill`)")
    if not (path / "metrics.json").is_file():
        raise UserError(f"{path}: the distill run did not finish (no metrics.json); finish it with --resume")
    try:
        provenance = json.loads((path / "config.json").read_text())
        metrics = json.loads((path / "metrics.json").read_text())
        run = Run(path, provenance, metrics)
        run.labels, run.max_length  # noqa: B018 - fail here, not later, when a field is missing
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: config.json or metrics.json is unreadable; distil again") from None
    return run
