import json
import sqlite3

import pandas as pd
import pytest

from llkd_edge.errors import StoreError
from llkd_edge.store import MIGRATIONS, LabelRow, LabelStore, ScoringKey, export_rows, text_hash

KEY = ScoringKey("teacher-sha", "config-hash")


def row(text, probs=(0.75, 0.25)):
    return LabelRow(text, probs, "a" if probs[0] >= probs[1] else "b", max(probs), 0.56, 0.4, 5, False)


def test_new_store_applies_and_records_every_migration(tmp_path):
    with LabelStore(tmp_path / "s.sqlite") as store:
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
    with LabelStore(tmp_path / "s.sqlite") as store:  # reopening applies nothing twice
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
        mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_rows_are_keyed_by_text_teacher_and_config_and_never_duplicated(tmp_path):
    with LabelStore(tmp_path / "s.sqlite") as store:
        store.register(KEY, "t", ["a", "b"], {"prompt": "p"})
        assert store.add(KEY, [row("x"), row("y")]) == 2
        assert store.add(KEY, [row("x", (0.1, 0.9)), row("z")]) == 1  # x is kept as first stored
        assert store.count(KEY) == 3
        assert store.rows(KEY)[text_hash("x")].probs == (0.75, 0.25)
        assert store.cached(KEY, [text_hash(t) for t in "xyzw"]) == {text_hash(t) for t in "xyz"}
        other = ScoringKey("teacher-sha", "another-prompt")
        store.register(other, "t", ["a", "b"], {"prompt": "q"})
        assert store.cached(other, [text_hash("x")]) == set()
        store.add(other, [row("x")])
        assert store.count() == 4
        assert store.config(KEY.config_hash)["details"] == {"prompt": "p"}


def test_a_newer_store_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    LabelStore(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO migrations VALUES ('999_future', 'x')")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer llkd-edge"):
        LabelStore(path)


def test_a_file_that_is_not_a_store_is_refused_untouched(tmp_path):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a usable label store"):
        LabelStore(path)
    assert path.read_bytes() == b"this is not sqlite at all" * 100


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_export_formats(tmp_path, suffix):
    rows = [row("x"), row("y, with comma", (0.2, 0.8))]
    path = export_rows(rows, ["a", "b"], tmp_path / f"out{suffix}", gold=["a", "a"])
    if suffix == ".jsonl":
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert records[1]["probs"] == {"a": 0.2, "b": 0.8} and records[1]["gold"] == "a"
    else:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        assert list(frame["text"]) == ["x", "y, with comma"]
        assert list(frame["p_b"]) == [0.25, 0.8]
    with pytest.raises(StoreError, match="unknown output format"):
        export_rows(rows, ["a", "b"], tmp_path / "out.xlsx")


def test_synthetic_texts_are_marked_and_a_pool_read_from_the_store_leaves_them_out(tmp_path):
    from llkd_edge.student.runs import store_pool

    path = tmp_path / "s.sqlite"
    with LabelStore(path) as store:
        store.register(KEY, "t", ["a", "b"], {})
        store.mark(["real one", "real two"], "pool", "pool.csv")
        store.add(KEY, [row("real one"), row("written"), row("real two")])
        store.mark_synthetic(KEY, [("written", "a")], "run-1", 2, {"teacher": "t"})
        store.mark_synthetic(KEY, [("written", "a")], "run-1", 2, {"teacher": "t"})  # idempotent
        assert store.synthetic(KEY) == {text_hash("written"): 2}
        assert store.synthetic(ScoringKey("teacher-sha", "other")) == {}
    rows, left_out = store_pool(str(path), KEY, None)
    assert [r.text for r in rows] == ["real one", "real two"] and left_out["synthetic"] == 1
    assert len(store_pool(str(path), KEY, 1)[0]) == 1


def test_a_store_made_before_synthetic_marks_upgrades_in_place(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    db.executescript(MIGRATIONS[0][1])
    db.execute("INSERT INTO migrations VALUES ('001_initial', 'then')")
    db.commit()
    db.close()
    with LabelStore(path) as store:
        assert store.applied_migrations() == ["001_initial", "002_synthetic", "003_roles"]
        assert store.synthetic(KEY) == {}
