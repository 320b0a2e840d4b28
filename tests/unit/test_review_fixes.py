"""Issue 20's correctness fixes that need no model: each test here failed on the code before its fix."""

import multiprocessing
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

from llkd_edge.cli import main
from llkd_edge.data import eval_dataset, iter_texts, read_dataset, text_key, Dataset
from llkd_edge.student.pool import without as _without
from llkd_edge.student.runs import default_eval, resolved
from llkd_edge.errors import DataError
from llkd_edge.labels.labelling import Labelled
from llkd_edge.store import unique_texts
from llkd_edge.metrics import classification_scores
from llkd_edge.store import LabelRow, LabelStore, ScoringKey, text_hash
from llkd_edge.distributions import LabelClash, calibrated_distribution, label_token_ids
from tests.support import one_error_line

KEY = ScoringKey("teacher-sha", "config-hash")


def row(text, probs=(0.75, 0.25)):
    return LabelRow(text, probs, "a" if probs[0] >= probs[1] else "b", max(probs), 0.56, 0.4, 5, False)


# ------------------------------------------------------------------ 1, 2: held-out texts never reach training


def test_a_store_that_served_as_an_eval_store_gives_training_only_its_pool_rows(tmp_path):
    path = tmp_path / "s.sqlite"
    pool, held = ["pool one", "pool two", "pool three"], ["Shares fell sharply on Monday.", "A test text"]
    with LabelStore(path) as store:
        store.register(KEY, "t", ["a", "b"], {})
        store.mark(pool, "pool", "pool.csv")
        store.add(KEY, [row(t) for t in pool])
        store.mark(held, "eval", "eval.csv")
        store.add(KEY, [row(t) for t in held])
        store.mark(["validation text"], "validation", "val.csv")
        store.add(KEY, [row("validation text"), row("old row without a role")])
    with LabelStore(path) as store:
        rows, left_out = store.training_rows(KEY)
    assert [r.text for r in rows] == pool  # in the order they were stored
    assert left_out == {"eval": 2, "validation": 1, "synthetic": 0, "no_role": 1}


def test_an_eval_mark_holds_for_whitespace_and_case_variants_and_beats_a_pool_mark(tmp_path):
    variant = "shares  fell sharply on\nmonday. "
    with LabelStore(tmp_path / "s.sqlite") as store:
        store.register(KEY, "t", ["a", "b"], {})
        store.mark([variant, "kept"], "pool", "pool.csv")  # labelled as pool first ...
        store.add(KEY, [row(variant), row("kept")])
        store.mark(["Shares fell sharply on Monday."], "eval", "eval.csv")  # ... then its clean form as eval
        rows, left_out = store.training_rows(KEY)
    assert [r.text for r in rows] == ["kept"] and left_out["eval"] == 1


def test_eval_overlap_is_judged_on_the_normalised_text():
    assert text_key("Shares fell  sharply on\nMonday. ") == text_key("shares fell sharply on monday.")
    texts = ["Shares fell  sharply on\nMonday. ", "Something else entirely", "SOMETHING ELSE\tentirely"]
    pool = Labelled(texts, [row(t) for t in texts], None, 3, 3, 0, 0, 0, 0.0)
    kept, dropped = _without(pool, ["Shares fell sharply on Monday.", "something else entirely"])
    assert dropped == 3 and kept.texts == []
    first, _ = unique_texts(texts)  # duplicates are judged the same way: one text of the two variants
    assert [texts[i] for i in first.values()] == texts[:2]


def test_builtin_test_split_holds_no_variant_of_a_train_text():
    train, test = read_dataset("bbc-news:train"), read_dataset("bbc-news:test")
    assert not {text_key(t) for t in train.texts} & {text_key(t) for t in test.texts}
    assert len({text_key(t) for t in test.texts}) == len(test.texts)


# ------------------------------------------------------------------ 3, 4, 5: wrong numbers


def test_a_primary_token_shared_with_another_labels_variant_is_refused():
    # A word-level stand-in tokenizer: "science" and "Science fiction" start with the same words.
    token = {" science": 1, "science": 2, " Science": 3, "Science": 4, " sport": 5, "sport": 6, " Sport": 7, "Sport": 8}
    firsts = [
        {" science": token[" science"], "science": token["science"], " Science": token[" Science"], "Science": token["Science"]},
        {" Science fiction": token[" Science"], "Science fiction": token["Science"], " science fiction": token[" science"],
         "science fiction": token["science"]},
        {" sport": 5, "sport": 6, " Sport": 7, "Sport": 8},
    ]
    with pytest.raises(LabelClash) as clash:
        label_token_ids(firsts, [" science", " Science fiction", " sport"])
    assert (clash.value.first, clash.value.second) == (0, 1)
    # without the clash every label keeps its own tokens and shared ones are dropped from both
    firsts[1] = {" fiction": 9, "fiction": 10, " Fiction": 11, "Science": 4}
    assert label_token_ids(firsts, [" science", " fiction", " sport"]) == [[1, 2, 3], [9, 10, 11], [5, 6, 7, 8]]


def test_a_label_whose_word_gives_no_token_is_refused():
    with pytest.raises(LabelClash) as clash:
        label_token_ids([{" a": 1}, {}], [" a", " b"])
    assert clash.value.token is None and clash.value.first == 1


def test_calibration_against_a_zero_gives_finite_distributions():
    raw = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]]))
    probs = calibrated_distribution(raw, np.array([0.5, 0.5, 0.0]))
    assert np.all(np.isfinite(probs)) and np.allclose(probs.sum(axis=1), 1)
    assert probs.argmax(axis=1).tolist() == [2, 2]  # the label content-free inputs never name is boosted, not NaN
    same = calibrated_distribution(raw, np.array([1 / 3, 1 / 3, 1 / 3]))  # uniform: a no-op
    assert np.allclose(same, np.exp(raw) / np.exp(raw).sum(axis=1, keepdims=True))


def test_macro_f1_leaves_out_labels_absent_from_gold_and_predictions():
    gold = ["a", "b", "a", "b"]
    scores = classification_scores(gold, gold, ["a", "b", "c"])
    assert scores["macro_f1"] == 1.0 and scores["labels_scored"] == 2
    assert scores["macro_f1_all_labels"] == pytest.approx(2 / 3)
    wrong = classification_scores(["a", "a"], ["a", "c"], ["a", "b", "c"])  # a predicted-only label counts
    assert wrong["labels_scored"] == 2 and wrong["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


# ------------------------------------------------------------------ 9, 10, 11, 12, 13, 14, 15: robustness


def _open_store(args):
    path, barrier = args
    barrier.wait()
    with LabelStore(path) as store:
        return store.applied_migrations()


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    path = str(tmp_path / "new.sqlite")
    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(4)
        with multiprocessing.get_context("fork").Pool(4) as pool:
            results = pool.map(_open_store, [(path, barrier)] * 4)
    assert all(r == results[0] for r in results) and "003_roles" in results[0]


def test_rows_come_back_in_the_order_they_were_stored(tmp_path):
    texts = [f"text {i}" for i in range(40)]
    assert sorted(texts, key=text_hash) != texts  # hash order is not insertion order
    with LabelStore(tmp_path / "s.sqlite") as store:
        store.register(KEY, "t", ["a", "b"], {})
        for t in texts:
            store.add(KEY, [row(t)])
        assert [r.text for r in store.rows(KEY).values()] == texts


def test_predict_out_that_is_a_folder_or_unwritable_fails_before_any_work(tmp_path):
    folder = tmp_path / "existing"
    folder.mkdir()
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "no-model"), "a text", "--out", str(folder)])
    one_error_line(result, "is a folder")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "no-model"), "a text", "--out", str(blocker / "p.jsonl")])
    one_error_line(result, "cannot write there")


def test_default_eval_is_derived_only_for_builtin_datasets(tmp_path):
    assert default_eval("bbc-news") == "bbc-news:test" and default_eval("reuters-r8:train") == "reuters-r8:test"
    assert default_eval("/data/a:b/pool.txt") is None
    odd = tmp_path / "a:b"
    odd.mkdir()
    (odd / "pool.txt").write_text("one\ntwo\n")
    assert default_eval(str(odd / "pool.txt")) is None


def test_run_paths_are_recorded_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pool.csv").write_text("text\nx\n")
    assert resolved("pool.csv") == str(tmp_path / "pool.csv")
    assert resolved("labels.sqlite") == str(tmp_path / "labels.sqlite")
    assert resolved("bbc-news:test") == "bbc-news:test" and resolved(None) is None


def test_a_foreign_sqlite_file_as_data_is_refused_untouched(tmp_path):
    path = tmp_path / "app.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    db.execute("INSERT INTO customers VALUES (1, 'Ada')")
    db.commit()
    db.close()
    before = path.read_bytes()
    result = CliRunner().invoke(main, ["distill", str(path), "--labels", "a,b", "--out", str(tmp_path / "run")])
    one_error_line(result, "not an llkd-edge label store")
    assert path.read_bytes() == before
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert tables == {"customers"} and not (tmp_path / "run").exists()


def test_plain_text_is_split_on_newlines_only_by_every_reader(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes("one\u2028still one\nform\x0cfeed\nlone\rcr\r\nlast\n".encode("utf-8"))
    expected = ["one\u2028still one", "form\x0cfeed", "lone\rcr", "last"]
    assert read_dataset(str(path)).texts == expected
    assert list(iter_texts(str(path))) == expected


def test_the_eval_set_is_deduplicated_and_warns_on_conflicting_gold(capsys):
    data = Dataset("e", ["A text", "a  text", "", "other", "no gold", "Other"], ["x", "y", "x", "y", "", "y"])
    evalset = eval_dataset(data)
    assert evalset.texts == ["A text", "other"] and evalset.gold == ["x", "y"]
    assert "1 texts appear more than once with different gold labels" in capsys.readouterr().err
    with pytest.raises(DataError, match="needs gold labels"):
        eval_dataset(Dataset("e", ["t"]))
