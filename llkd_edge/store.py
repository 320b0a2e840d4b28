"""The resumable label store: one sqlite3 file (WAL) holding every teacher distribution ever computed.

A row is keyed by (sha256 of the text, sha256 of the teacher file, hash of the scoring config), so a
re-run finds its finished work and labels only the rest, and a text is never stored twice for the same
teacher and prompt. Texts an LLM wrote (``evolve``) are labelled like any other and also listed in
``synthetic`` with their round, so a pool read back from the store never mistakes them for real data.

Every text is also marked with the role it was labelled for (``roles``): ``pool`` (training data),
``eval`` (a gold test set) or ``validation`` (evolve's). Marks are keyed by the text's normalised form
(``data.text_key``: whitespace and case folded) and hold for the whole store, whatever the teacher, so a
text once used for testing is never handed to training, in any spelling. A store read as training data
(``training_rows``) gives only rows marked ``pool`` and never marked ``eval``/``validation``.

Rows are only ever inserted, never updated or deleted, and read back in the order they were inserted.
The schema upgrades itself through the numbered migrations below, each recorded in the ``migrations``
table once applied.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .data import text_key
from .errors import StoreError
from .files import atomic_path, write_jsonl

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_initial",
        """
        CREATE TABLE configs (
            config_hash    TEXT PRIMARY KEY,
            teacher_sha256 TEXT NOT NULL,
            teacher_name   TEXT NOT NULL,
            labels         TEXT NOT NULL,  -- JSON list: the order of every row's probs
            details        TEXT NOT NULL,  -- JSON: prompt, verbaliser tokens, calibration, versions
            created_at     TEXT NOT NULL
        );
        CREATE TABLE labels (
            text_hash      TEXT NOT NULL,
            teacher_sha256 TEXT NOT NULL,
            config_hash    TEXT NOT NULL REFERENCES configs(config_hash),
            text           TEXT NOT NULL,
            probs          TEXT NOT NULL,  -- JSON list of K floats
            label          TEXT NOT NULL,
            confidence     REAL NOT NULL,
            entropy        REAL NOT NULL,
            label_mass     REAL NOT NULL,  -- raw probability the model put on any label token
            n_tokens       INTEGER NOT NULL,
            truncated      INTEGER NOT NULL,
            created_at     TEXT NOT NULL,
            PRIMARY KEY (text_hash, teacher_sha256, config_hash)
        );
        """,
    ),
    (
        "002_synthetic",
        """
        CREATE TABLE synthetic (
            text_hash      TEXT NOT NULL,
            teacher_sha256 TEXT NOT NULL,
            config_hash    TEXT NOT NULL,
            run_id         TEXT NOT NULL,  -- the evolve run that wrote and accepted the text
            round          INTEGER NOT NULL,
            intended_label TEXT NOT NULL,  -- the label the generator was asked for
            generator      TEXT NOT NULL,  -- JSON: generating model's name and sha256, prompt hash
            created_at     TEXT NOT NULL,
            PRIMARY KEY (text_hash, teacher_sha256, config_hash, run_id)
        );
        """,
    ),
    (
        "003_roles",
        """
        CREATE TABLE roles (
            key_hash       TEXT NOT NULL,  -- sha256 of the text's normalised form (data.text_key)
            role           TEXT NOT NULL,  -- pool, eval or validation
            source         TEXT NOT NULL,  -- the dataset the text came from when it got the role
            created_at     TEXT NOT NULL,
            PRIMARY KEY (key_hash, role)
        );
        """,
    ),
]

ROLES = ("pool", "eval", "validation")
HELD_OUT = ("eval", "validation")  # a text with one of these roles is never trained on


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def key_hash(text: str) -> str:
    """sha256 of the text's normalised form: the same for whitespace and case variants of a text."""
    return text_hash(text_key(text))


def unique_texts(texts: list[str]) -> tuple[dict[str, int], int]:
    """Text hash -> index, for the first occurrence of each non-empty text in input order (texts that differ
    only in whitespace or case count as one: ``data.text_key``); and how many texts were empty."""
    first: dict[str, int] = {}
    seen: set[str] = set()
    skipped = 0
    for i, text in enumerate(texts):
        if not text.strip():
            skipped += 1
            continue
        key = text_key(text)
        if key not in seen:
            seen.add(key)
            first[text_hash(text)] = i
    return first, skipped


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LabelRow:
    """The teacher's answer for one text. ``probs`` has shape (K,), in the order of the config's labels."""

    text: str
    probs: tuple[float, ...]
    label: str
    confidence: float
    entropy: float
    label_mass: float
    n_tokens: int
    truncated: bool


@dataclass(frozen=True)
class ScoringKey:
    """Which teacher and which prompt/labels produced a row."""

    teacher_sha256: str
    config_hash: str


class LabelStore:
    """``LabelStore(path)`` opens (creating or upgrading) the store; use it as a context manager.

    ``existing=True`` opens only a file that already is a label store: anything else (a missing file, another
    program's sqlite database) is a StoreError before a byte of it is written.
    """

    def __init__(self, path: str | Path, existing: bool = False):
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder; --store takes a file path")
        if existing:
            check_label_store(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # timeout: another process may hold the write lock (a concurrent run, a migration); wait for it
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=60)  # explicit transactions below
            self._wal()
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a killed process
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable label store ({exc})") from None

    def _wal(self, attempts: int = 100) -> None:
        """Switch to WAL. On a new file, two processes switching at once get "database is locked" at once:
        SQLite does not wait (the busy timeout does not cover this step), so we do, briefly."""
        for attempt in range(attempts):
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.05)

    # -------------------------------------------------------------------------------------- schema
    def _applied(self) -> set[str] | None:
        exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'").fetchone()
        return {row[0] for row in self._db.execute("SELECT name FROM migrations")} if exists else None

    def _migrate(self) -> None:
        known = [name for name, _ in MIGRATIONS]
        if (self._applied() or set()) >= set(known):
            self._check_newer(self._applied() or set())
            return  # the common case: nothing to do, and no write lock taken
        # Read what is applied inside the write transaction: two processes opening a new store at once
        # must not both see "nothing applied" and both create the tables.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
            done = self._applied() or set()
            self._check_newer(done)
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT INTO migrations VALUES (?, ?)", (name, _now()))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _check_newer(self, done: set[str]) -> None:
        unknown = done - {name for name, _ in MIGRATIONS}
        if unknown:
            raise StoreError(
                f"{self.path}: made by a newer llkd-edge (migrations {', '.join(sorted(unknown))}); upgrade"
            )

    def applied_migrations(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM migrations ORDER BY name")]

    # -------------------------------------------------------------------------------------- configs
    def register(
        self, key: ScoringKey, teacher_name: str, labels: Sequence[str], details: dict
    ) -> None:
        """Record how rows under ``key`` are made (once; an existing record is kept as it is)."""
        self._db.execute(
            "INSERT OR IGNORE INTO configs VALUES (?, ?, ?, ?, ?, ?)",
            (
                key.config_hash,
                key.teacher_sha256,
                teacher_name,
                json.dumps(list(labels)),
                json.dumps(details, sort_keys=True),
                _now(),
            ),
        )

    def config(self, config_hash: str) -> dict | None:
        row = self._db.execute(
            "SELECT teacher_sha256, teacher_name, labels, details, created_at FROM configs WHERE config_hash = ?",
            (config_hash,),
        ).fetchone()
        if row is None:
            return None
        return {
            "config_hash": config_hash,
            "teacher_sha256": row[0],
            "teacher_name": row[1],
            "labels": json.loads(row[2]),
            "details": json.loads(row[3]),
            "created_at": row[4],
        }

    def configs(self) -> list[dict]:
        hashes = [row[0] for row in self._db.execute("SELECT config_hash FROM configs ORDER BY created_at")]
        return [self.config(h) for h in hashes]

    # -------------------------------------------------------------------------------------- rows
    def cached(self, key: ScoringKey, hashes: Iterable[str]) -> set[str]:
        """The subset of ``hashes`` (text hashes) already labelled under ``key``."""
        found: set[str] = set()
        hashes = list(hashes)
        for start in range(0, len(hashes), 500):  # stay under sqlite's bound-parameter limit
            chunk = hashes[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                row[0]
                for row in self._db.execute(
                    f"SELECT text_hash FROM labels WHERE teacher_sha256 = ? AND config_hash = ? AND text_hash IN ({marks})",
                    (key.teacher_sha256, key.config_hash, *chunk),
                )
            )
        return found

    def add(self, key: ScoringKey, rows: Sequence[LabelRow]) -> int:
        """Insert ``rows`` in one transaction; rows already present are left untouched. Returns rows added."""
        now = _now()
        values = [
            (
                text_hash(r.text),
                key.teacher_sha256,
                key.config_hash,
                r.text,
                json.dumps([round(p, 8) for p in r.probs]),
                r.label,
                r.confidence,
                r.entropy,
                r.label_mass,
                r.n_tokens,
                int(r.truncated),
                now,
            )
            for r in rows
        ]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            before = self._db.total_changes
            self._db.executemany("INSERT OR IGNORE INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
            added = self._db.total_changes - before
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return added

    def rows(self, key: ScoringKey, hashes: Iterable[str] | None = None) -> dict[str, LabelRow]:
        """Rows under ``key`` by text hash (all of them, or those among ``hashes``), in insertion order."""
        query = (
            "SELECT text_hash, text, probs, label, confidence, entropy, label_mass, n_tokens, truncated "
            "FROM labels WHERE teacher_sha256 = ? AND config_hash = ? ORDER BY rowid"
        )
        wanted = None if hashes is None else set(hashes)
        out = {}
        for row in self._db.execute(query, (key.teacher_sha256, key.config_hash)):
            if wanted is not None and row[0] not in wanted:
                continue
            out[row[0]] = LabelRow(row[1], tuple(json.loads(row[2])), row[3], row[4], row[5], row[6], row[7], bool(row[8]))
        return out

    def mark_synthetic(self, key: ScoringKey, marks: Sequence[tuple[str, str]], run_id: str, round_: int,
                       generator: dict) -> None:
        """Record that the texts of ``marks`` ((text, intended label) pairs) were written by a generator."""
        now = _now()
        about = json.dumps(generator, sort_keys=True)
        values = [(text_hash(t), key.teacher_sha256, key.config_hash, run_id, round_, label, about, now) for t, label in marks]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR IGNORE INTO synthetic VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def synthetic(self, key: ScoringKey) -> dict[str, int]:
        """Text hash -> round, for every text under ``key`` that a generator wrote (first round if several)."""
        query = ("SELECT text_hash, MIN(round) FROM synthetic WHERE teacher_sha256 = ? AND config_hash = ? "
                 "GROUP BY text_hash")
        return dict(self._db.execute(query, (key.teacher_sha256, key.config_hash)).fetchall())

    def mark(self, texts: Iterable[str], role: str, source: str) -> None:
        """Record that ``texts`` were labelled as ``role`` data (one of ROLES), from ``source``."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        now = _now()
        values = [(h, role, source, now) for h in dict.fromkeys(key_hash(t) for t in texts)]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR IGNORE INTO roles VALUES (?, ?, ?, ?)", values)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def roles(self) -> dict[str, set[str]]:
        """Normalised-text hash -> the roles the text was ever labelled for."""
        out: dict[str, set[str]] = {}
        for h, role in self._db.execute("SELECT key_hash, role FROM roles"):
            out.setdefault(h, set()).add(role)
        return out

    def training_rows(self, key: ScoringKey) -> tuple[list[LabelRow], dict[str, int]]:
        """The rows under ``key`` that may be trained on, in insertion order, and how many were left out why.

        A row is kept when its text was labelled as ``pool`` data, was never an ``eval`` or ``validation``
        text (in any whitespace/case variant) and was not written by a generator. Reasons left out:
        ``eval``, ``validation``, ``synthetic`` and ``no_role`` (rows from before roles were recorded).
        """
        roles = self.roles()
        synthetic = self.synthetic(key)
        kept: list[LabelRow] = []
        left_out = dict.fromkeys((*HELD_OUT, "synthetic", "no_role"), 0)
        for h, row in self.rows(key).items():
            marks = roles.get(key_hash(row.text), set())
            held = [r for r in HELD_OUT if r in marks]
            if held:
                left_out[held[0]] += 1
            elif h in synthetic:
                left_out["synthetic"] += 1
            elif "pool" not in marks:
                left_out["no_role"] += 1
            else:
                kept.append(row)
        return kept, left_out

    def count(self, key: ScoringKey | None = None) -> int:
        if key is None:
            return self._db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        return self._db.execute(
            "SELECT COUNT(*) FROM labels WHERE teacher_sha256 = ? AND config_hash = ?",
            (key.teacher_sha256, key.config_hash),
        ).fetchone()[0]

    # -------------------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_label_store(path: Path) -> None:
    """Refuse, without writing to it, a file that is not already a label store."""
    if not path.is_file():
        raise StoreError(f"{path}: no such label store")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            applied = {row[0] for row in db.execute("SELECT name FROM migrations")} if "migrations" in names else set()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a usable label store ({exc})") from None
    if "001_initial" not in applied or "labels" not in names:
        raise StoreError(f"{path}: an sqlite file, but not an llkd-edge label store (no labels table); "
                         "give a store made by `llkd-edge label` or `distill`")


# ------------------------------------------------------------------------------------------ export

EXPORT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def export_rows(rows: Sequence[LabelRow], labels: Sequence[str], path: str | Path, gold: Sequence[str | None] | None = None) -> Path:
    """Write rows to JSONL, CSV or Parquet (chosen by the extension); the probs become one column per label.

    The file is written next to its target and renamed into place, so a killed export leaves no torn file.
    """
    path = Path(path)
    fmt = EXPORT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise StoreError(f"{path}: unknown output format; use one of {', '.join(sorted(EXPORT_FORMATS))}")
    records = []
    for i, r in enumerate(rows):
        record = {
            "text": r.text,
            "label": r.label,
            "confidence": r.confidence,
            "entropy": r.entropy,
            "label_mass": r.label_mass,
            "truncated": r.truncated,
        }
        if gold is not None:
            record["gold"] = gold[i]
        records.append((record, dict(zip(labels, r.probs))))
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        return write_jsonl(path, ({**record, "probs": probs} for record, probs in records))
    flat = [{**record, **{f"p_{k}": v for k, v in probs.items()}} for record, probs in records]
    with atomic_path(path) as tmp:
        if fmt == "csv":
            with tmp.open("w", encoding="utf-8", newline="") as f:
                fields = list(flat[0]) if flat else ["text", "label"]
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(flat)
        else:
            import pandas as pd  # only Parquet needs it

            pd.DataFrame(flat).to_parquet(tmp, index=False)
    return path
