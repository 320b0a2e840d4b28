"""The run folder: what ``distill`` writes, and how every later stage (export, evolve, bench) reads it.

RUN_DIR holds:
  config.json             ``RunConfigRecord``: what makes the run (its identity), the full config, the
                          teacher (file sha256, prompt, label tokens) and the package versions
  metrics.json            ``MetricsRecord``: teacher and student on the same eval texts, selection figures,
                          data sizes, timings
  selection.json          per-epoch selection statistics (``train.EpochStats``)
  student/                the trained student (transformers ``save_pretrained``, with its tokenizer)
  confusion_matrix.png    the student on the eval set
  learning_curve.json     with --learning-curve (auto: a student below its teacher): the student on 25/50/100% of
  learning_curve.png      the pool, scored on the eval texts, and what more teacher-labelled texts would likely buy
  curve/p25, curve/p50    those students' checkpoints, for --resume
  checkpoint.pt           the last finished epoch, for --resume (tensors + JSON; no pickle)
  budget_picks.json       with --label-budget: which texts the teacher labelled (their hashes), so the pool reads
                          back exactly, however the label store grows after

``prepare_run_folder`` creates one or checks that a resumed one holds the same run (its identity, the
config fields not marked ``config.RUNTIME``); ``open_run`` reads a finished one as a ``Run``. Nothing here
loads a model.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TypedDict

import numpy as np

from ..config import MAX_WEIGHT
from ..data import Dataset, builtin_spec, eval_dataset, read_dataset, text_key
from ..errors import DataError, UserError
from ..files import lies_inside, read_json
from ..labels.labelling import recalibrated, with_probs
from ..store import LabelRow, LabelStore, ScoringKey, text_hash, unique_texts


class TeacherRecord(TypedDict):
    """config.json["teacher"]: the teacher whose labels the student learned from."""

    name: str
    sha256: str
    licence: str
    prompt: str
    config_hash: str
    label_tokens: list[list[int]] | dict[str, list[list[int]]]  # an ensemble's: by member
    members: list[dict] | None  # an ensemble's members: name, sha256, config_hash, weight when weighted (runs before: absent)


class RunConfigRecord(TypedDict):
    """config.json: how the run was made."""

    identity: dict  # config.identity(DistillConfig): equal for two runs that compute the same thing
    config: dict  # the whole DistillConfig (asdict)
    teacher: TeacherRecord
    versions: dict[str, str | None]


class SelectionRecord(TypedDict):
    method: str
    fraction_used: float  # distinct pool samples that ever received a gradient
    selected_per_epoch: list[int]
    ever_selected_per_epoch: list[int]
    soft_labels: bool


class MetricsRecord(TypedDict, total=False):
    """metrics.json: what the run measured (scores as ``metrics.classification_scores``, rounded)."""

    teacher: dict | None  # the teacher on the eval texts (None without an eval set)
    student: dict | None  # the student on the same texts
    selection: SelectionRecord
    data: dict  # pool and eval sources and sizes, labels, texts left out and why
    pool_calibration: dict  # method, the prior divided out (None: none), the teacher's eval scores as stored
    pool_teacher: dict | None  # pseudo-label quality, when the pool has gold labels
    student_model: dict
    seconds: dict[str, float]
    labelled_now: dict[str, int]
    run_id: str
    evolve: dict  # evolve runs only: rounds, before/after scores


STORE_SUFFIXES = {".sqlite", ".sqlite3", ".db"}
BUDGET_PICKS = "budget_picks.json"  # --label-budget: the hashes of the texts the teacher labelled, in pick order
CURVE = "learning_curve.json"  # --learning-curve: student/curve.py's record
RELABELLED = "relabelled.npz"  # --relabel probe: the distributions the student learnt, by text hash


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


def prepare_run_folder(out: Path, identity: dict, resume: bool, key: tuple[str, ...], what: str) -> Path:
    """Create OUT, or check that it holds an unfinished ``what`` with this identity (config.json at ``key``)
    when ``resume`` is given; any other content is a one-line error and is left untouched."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        try:
            saved = read_json(out / "config.json")
            for part in key:
                saved = saved[part]
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"{out}: not empty and not an llkd-edge {what}; choose another --out") from None
        current = json.loads(json.dumps(identity))
        # an option added after the run was made counts as unchanged while it is off (None): _diff
        if saved != current and (changed := sorted(_diff(saved, current))):
            changed.sort(key=lambda key: _at(saved, key) is None)  # settings the run has first: they tell most
            shown = "; ".join(f"{key}: {_short(_at(saved, key))} there, {_short(_at(current, key))} now" for key in changed[:4])
            raise UserError(f"{out} holds a different {what} ({shown}); resume it with its settings "
                            "(a default may have changed since it was made) or choose another --out")
        if (out / "metrics.json").exists():
            raise UserError(f"{out} already holds this finished {what}; choose another --out")
        if not resume:
            raise UserError(f"{out} holds an unfinished {what} of this config; pass --resume to continue it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _at(tree, dotted: str):
    """The value at a ``_diff`` key (dotted path) of ``tree``, None where it has none."""
    for part in dotted.split(".") if dotted else []:
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


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


def members_pool(store_path: str, keys: list[ScoringKey], labels, limit: int | None,
                 weights: tuple[float, ...] | None = None) -> tuple[list[LabelRow], dict[str, int]]:
    """``store_pool`` for one key, or for an ensemble's member keys: the trainable texts every member has a row
    for (in the first member's order), their rows pooled (``ensemble.pooled_rows``); the first ``limit`` of them.
    Left-out counts: the first member's."""
    parts = [store_pool(store_path, key, None) for key in keys]
    per_key = [{text_hash(r.text): r for r in rows} for rows, _ in parts]
    order = [h for h in per_key[0] if all(h in rows for rows in per_key[1:])]
    rows = _pooled(per_key, order, labels, weights)
    return (rows[:limit] if limit else rows), parts[0][1]


def _pooled(per_key: list[dict[str, LabelRow]], order: list[str], labels,
            weights: tuple[float, ...] | None = None) -> list[LabelRow]:
    """The rows of ``order`` (text hashes): one key's as stored, several keys' (an ensemble's) pooled."""
    if len(per_key) == 1:
        return [per_key[0][h] for h in order]
    from ..teacher.ensemble import pooled_rows

    return pooled_rows([[rows[h] for h in order] for rows in per_key], labels, weights)


@dataclass(frozen=True)
class Run:
    """A finished distill run, as later stages (export, bench) read it."""

    path: Path
    provenance: RunConfigRecord  # config.json
    metrics: MetricsRecord  # metrics.json

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
    def member_keys(self) -> list[ScoringKey]:
        """The store keys of the rows the student's labels were read from: the teacher's, or each ensemble
        member's (pooled at read time, ensemble.py)."""
        members = self.provenance["teacher"].get("members")
        return [ScoringKey(m["sha256"], m["config_hash"]) for m in members] if members else [self.key]

    @property
    def member_weights(self) -> tuple[float, ...] | None:
        """An ensemble's member weights in the pool (``--teacher a,b*2``), as the run recorded them; None: equal."""
        members = self.provenance["teacher"].get("members") or []
        if not any("weight" in m for m in members):
            return None
        weights = tuple(m.get("weight") for m in members)
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and 0 < w <= MAX_WEIGHT for w in weights):
            raise DataError(f"{self.path}: config.json's teacher members have weights that are not positive numbers")
        return tuple(float(w) for w in weights)

    @property
    def store(self) -> str:
        config = self.provenance["config"]
        return run_store(config["data"], config.get("store"))

    def source(self) -> Dataset:
        """The run's DATA, read again as distill read it (its first ``limit`` rows)."""
        config = self.provenance["config"]
        return read_dataset(config["data"], config["text_column"], config["label_column"]).head(config["limit"])

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

    def pool(self, relabelled: bool = False) -> list:
        """The pool the student trained on, as LabelRows read back from the run's label store (no teacher needed),
        calibrated as the student saw them, in the order it saw them (with --label-budget: the rounds' pick order;
        the texts the probe filled are ``filled()``). ``relabelled``: as the cross-fitted probe corrected them when the run
        was relabelled (``distill --relabel probe`` wrote them to RELABELLED), so a retrained student learns what
        this one learnt."""
        config = self.provenance["config"]
        if not Path(self.store).is_file():
            raise DataError(f"{self.path}: its label store {self.store} is gone; run distill again")
        keys = self.member_keys
        if is_store(config["data"]):
            rows = members_pool(config["data"], keys, self.labels, config["limit"], self.member_weights)[0]
        else:
            source = self.source()
            order = list(unique_texts(source.texts)[0])
            with LabelStore(self.store) as store:
                per_key = [store.rows(key, order) for key in keys]
            found = {h for h in order if all(h in rows for rows in per_key)}
            if self.metrics.get("label_budget"):  # the teacher labelled only the part the rounds picked, in this
                picks = self.path / BUDGET_PICKS  # order (runs before it was written: every pool text the store holds)
                order = self._budget_picks()["text_sha256"] if picks.is_file() else [h for h in order if h in found]
            missing = sum(h not in found for h in order)
            if missing:
                raise DataError(f"{self.store} no longer holds the teacher's labels of {missing} of the run's pool texts; "
                                "run distill again")
            rows = _pooled(per_key, order, self.labels, self.member_weights)
        held_out = self.held_out_keys()
        rows = [r for r in rows if text_key(r.text) not in held_out]
        prior = (self.metrics.get("pool_calibration") or {}).get("prior")
        rows = recalibrated(rows, self.labels, None if prior is None else np.asarray(prior))  # as the student saw them
        if len(rows) != self.metrics["data"]["pool_size"]:
            raise DataError(f"{self.path}: its pool reads back as {len(rows)} texts but it trained on "
                            f"{self.metrics['data']['pool_size']}; {config['data']} has changed since")
        if relabelled and self.metrics.get("relabel"):
            path = self.path / RELABELLED
            try:  # allow_pickle stays False: an object array in a crafted file is refused, never unpickled
                with np.load(path) as saved:
                    by_hash = dict(zip(saved["text_sha256"].tolist(), saved["probs"]))
                probs = np.array([by_hash[text_hash(r.text)] for r in rows], dtype=np.float64)
                if (probs.shape != (len(rows), len(self.labels)) or not np.all(np.isfinite(probs)) or probs.min() < 0
                        or not np.allclose(probs.sum(axis=1), 1, atol=1e-4)):
                    raise ValueError("not one distribution per pool text")
                rows = with_probs(rows, probs, self.labels)
            except (OSError, KeyError, ValueError, TypeError, AttributeError):
                raise DataError(f"{self.path}: its relabelled pool ({RELABELLED}) is missing or does not match the "
                                "pool; run distill again") from None
        return rows

    def _budget_picks(self) -> dict:
        """budget_picks.json, checked: a list of text hashes, and the filled texts' hashes and distributions."""
        path = self.path / BUDGET_PICKS
        try:
            saved = read_json(path)
            hashes = saved["text_sha256"]
            filled = saved.get("filled")
            if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
                raise ValueError("text_sha256 is not a list of hashes")
            if filled is not None:
                probs = np.asarray(filled["probs"], dtype=np.float64).reshape(-1, len(self.labels))
                if len(probs) != len(filled["text_sha256"]) or (len(probs) and (
                        not np.all(np.isfinite(probs)) or probs.min() < 0
                        or not np.allclose(probs.sum(axis=1), 1, atol=1e-4))):
                    raise ValueError("the filled distributions do not match their texts")
                filled = {"text_sha256": [str(h) for h in filled["text_sha256"]], "probs": probs}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise DataError(f"{path}: unreadable or malformed; run distill again") from None
        return {"text_sha256": hashes, "filled": filled}

    def filled(self) -> tuple[list[str], np.ndarray]:
        """``--fill-rest``: the pool texts the teacher never labelled that the student learnt beside ``pool()``, with
        the rounds' probe distributions it learnt them with, in training order: (texts, shape (M, K)). Empty for a
        run without them, and for one made before they were recorded (its metrics' ``filled_size`` says so)."""
        k = len(self.labels)
        if not (self.metrics.get("data") or {}).get("filled_size"):
            return [], np.zeros((0, k))
        config = self.provenance["config"]
        saved = self._budget_picks()["filled"] if (self.path / BUDGET_PICKS).is_file() else None
        if saved is None:  # a run made before they were recorded: its filled texts cannot be read back
            return [], np.zeros((0, k))
        source = self.source()
        by_hash = {text_hash(t): t for t in source.texts}
        held_out = self.held_out_keys()
        keep = [(by_hash.get(h), p) for h, p in zip(saved["text_sha256"], saved["probs"])]
        if any(t is None for t, _ in keep):
            raise DataError(f"{self.path}: {config['data']} no longer holds all of the run's filled texts; run distill again")
        keep = [(t, p) for t, p in keep if text_key(t) not in held_out]
        if len(keep) != self.metrics["data"]["filled_size"]:
            raise DataError(f"{self.path}: its filled texts read back as {len(keep)} but it trained on "
                            f"{self.metrics['data']['filled_size']}; {config['data']} has changed since")
        return [t for t, _ in keep], np.array([p for _, p in keep]).reshape(-1, k)

    def held_out_keys(self) -> set[str]:
        """``text_key``s of the texts no teacher-labelled training or checking may use: the eval set's, the --gold
        texts (trained as gold samples, not with the teacher's labels) and the few-shot demonstrations."""
        config = self.provenance["config"]
        evalset = self.eval_set()
        held_out = {text_key(t) for t in evalset.texts} if evalset else set()
        if config.get("gold"):
            held_out |= {text_key(t) for t in read_dataset(config["gold"], config["text_column"],
                                                           config["label_column"]).texts}
        return held_out | {text_key(t) for t, _ in config["scoring"]["few_shot"]}

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
            source = self.source()
            held_out = self.held_out_keys()  # the pool as trained: never an eval, gold or few-shot text
            texts = [source.texts[i] for i in unique_texts(source.texts)[0].values()
                     if text_key(source.texts[i]) not in held_out][:limit]
            teacher = None
        if not texts:
            raise DataError(f"{self.path}: no pool texts to check the exported model on")
        if not is_store(config["data"]):
            source = self.source()
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
    if not lies_inside(path, path / "student"):
        raise UserError(f"{path}/student: lies outside the run folder (a link); copy the student in instead")
    try:
        provenance = read_json(path / "config.json")
        metrics = read_json(path / "metrics.json")
        run = Run(path, provenance, metrics)
        _check_record(run)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{path}: config.json or metrics.json is unreadable or malformed; distil again") from None
    return run


def _check_record(run: Run) -> None:
    """The fields every later stage reads, with the types they need: a crafted or damaged record fails here, in
    one line (ValueError/KeyError/TypeError), not as a traceback deep in export or evolve."""
    config, teacher = run.provenance["config"], run.provenance["teacher"]
    labels = run.labels
    if not labels or len(set(labels)) != len(labels) or not all(isinstance(x, str) and x for x in labels):
        raise ValueError("labels must be distinct non-empty names")
    if not isinstance(run.max_length, int) or not 1 <= run.max_length <= 8192:
        raise ValueError("max_length out of range")
    for name in ("data", "text_column"):
        if not isinstance(config[name], str):
            raise TypeError(name)
    for name in ("store", "eval", "gold", "label_column"):
        if not isinstance(config.get(name), (str, type(None))):
            raise TypeError(name)
    for name in ("limit", "eval_limit"):
        if config.get(name) is not None and (not isinstance(config[name], int) or config[name] < 0):
            raise TypeError(name)
    if not all(isinstance(teacher[k], str) for k in ("sha256", "config_hash")):
        raise TypeError("teacher")
    members = teacher.get("members")
    if members is not None and not (isinstance(members, list) and all(
            isinstance(m, dict) and isinstance(m.get("sha256"), str) and isinstance(m.get("config_hash"), str)
            for m in members)):
        raise TypeError("teacher members")
    run.member_weights  # noqa: B018  (weights that are not positive numbers fail here, in one line)
    if not all(isinstance(t, str) and isinstance(g, str) for t, g in config["scoring"]["few_shot"]):
        raise TypeError("few_shot")
    if not isinstance(run.metrics["data"].get("pool_size", 0), int):
        raise TypeError("pool_size")
