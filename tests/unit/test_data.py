import json

import pandas as pd
import pytest

from llkd_edge.data import BUILTINS, load_builtin, read_dataset
from llkd_edge.errors import DataError


def test_reads_csv_tsv_jsonl_parquet_and_text(tmp_path):
    frame = pd.DataFrame({"text": ["first text", "second, with comma", ""], "label": ["a", "b", "a"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_csv(tmp_path / "d.tsv", sep="\t", index=False)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")), encoding="utf-8")
    for name in ["d.csv", "d.tsv", "d.parquet", "d.jsonl"]:
        data = read_dataset(str(tmp_path / name))
        assert data.texts == ["first text", "second, with comma", ""], name
        assert data.gold == ["a", "b", "a"], name
    (tmp_path / "d.txt").write_text("one\ntwo\n\nthree\n", encoding="utf-8")
    data = read_dataset(str(tmp_path / "d.txt"))
    assert data.texts == ["one", "two", "", "three"] and data.gold is None


def test_custom_columns_and_absent_default_label(tmp_path):
    pd.DataFrame({"body": ["x", "y"], "topic": ["a", "b"]}).to_csv(tmp_path / "d.csv", index=False)
    data = read_dataset(str(tmp_path / "d.csv"), text_column="body")
    assert data.gold is None  # no `label` column: no gold, no error
    data = read_dataset(str(tmp_path / "d.csv"), text_column="body", label_column="topic")
    assert data.gold == ["a", "b"]


@pytest.mark.parametrize(
    "content, kwargs, message",
    [
        (None, {}, "no such file"),
        (b"", {}, "empty"),
        (b"text,label\n", {}, "no rows"),
        (b"body,label\nx,a\n", {}, "no column 'text'"),
        (b"text,label\nx,a\n", {"label_column": "topic"}, "no label column 'topic'"),
        (b"text\ncaf\xe9 latin-1\n", {}, "not valid UTF-8"),
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path, content, kwargs, message):
    path = tmp_path / "d.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_dataset(str(path), **kwargs)


def test_builtin_bbc_split_is_fixed_deduplicated_and_disjoint():
    train, test = load_builtin("bbc-news"), load_builtin("bbc-news:test")
    assert train.name == "bbc-news:train"
    assert len(set(train.texts)) == len(train.texts) and len(set(test.texts)) == len(test.texts)
    assert not set(train.texts) & set(test.texts)
    assert 2000 < len(train.texts) + len(test.texts) < 2225  # 2,225 files, 98 duplicates among them
    assert set(test.gold) == {"business", "entertainment", "politics", "sports", "tech"}
    assert load_builtin("bbc-news:test").texts[:5] == test.texts[:5]  # same order every time
    assert len(set(test.gold[:30])) == 5  # shuffled: a small --limit slice still has every class


@pytest.mark.parametrize("name", ["reuters-r8", "20newsgroups", "20ng-hardware", "election-tweets", "slo-sentiment"])
def test_other_builtins_load_with_their_label_sets(name):
    test = load_builtin(f"{name}:test")
    names = [item.split("=")[0] for item in BUILTINS[name].labels.split(",")]
    assert set(test.gold) == set(names)
    assert all(t.strip() for t in test.texts)


def test_unknown_builtin_split():
    with pytest.raises(DataError, match="unknown split"):
        load_builtin("bbc-news:dev")
