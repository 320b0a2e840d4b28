"""``llkd-edge predict``: texts (arguments or a file of any size) -> an exported model -> JSONL.

Input is read and labelled a batch at a time, so memory stays flat however large the file. Output goes
to a temporary file beside ``--out`` and is renamed into place at the end, so a failed run never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..data import iter_texts
from ..errors import DataError, UserError
from ..files import atomic_path
from ..runtime import Classifier


@dataclass
class PredictSummary:
    texts: int
    empty: int
    truncated: int
    max_length: int
    model: str
    variant: str
    provider: str
    seconds: float
    out: str | None

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        rate = f", {self.texts / self.seconds:.0f} texts/s" if self.seconds > 0 else ""
        where = f"; wrote {self.out}" if self.out else ""
        return (f"predicted {self.texts} texts ({self.truncated} cut to {self.max_length} tokens, {self.empty} empty) "
                f"with {self.model} ({self.variant}) on {self.provider} in {self.seconds:.1f}s{rate}{where}")


def predict_stream(model_dir: str, texts: list[str] | None, input_file: str | None, text_column: str = "text",
                   out: str | None = None, variant: str | None = None, batch_size: int = 32,
                   threads: int | None = None, device: str = "auto", progress: bool = True) -> PredictSummary:
    """Label ``texts`` or the texts of ``input_file``; write one JSON object per text to ``out`` (or stdout)."""
    from tqdm.auto import tqdm

    if out is not None:
        check_writable(out)  # before the model loads and any text is read: a bad --out costs nothing
    clf = Classifier.load(model_dir, variant=variant, threads=threads, device=device)
    source = texts if texts is not None else iter_texts(input_file, text_column)
    started = time.perf_counter()
    count = empty = 0
    with _output(out) as sink, tqdm(desc="predicting", unit="text", disable=not progress or out is None,
                                     dynamic_ncols=True) as bar:
        for batch in _batches(source, 1024):  # a big read batch; the model batches within it by length
            probs = clf.predict_proba(batch, batch_size=batch_size)
            for text, row in zip(batch, probs):
                j = int(row.argmax())
                record = {"text": text, "label": clf.labels[j],
                          "probabilities": {name: round(float(p), 6) for name, p in zip(clf.labels, row)}}
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += len(batch)
            empty += sum(1 for t in batch if not t.strip())
            bar.update(len(batch))
        if count == 0:
            raise DataError(f"{input_file or 'input'}: no texts to predict")
    return PredictSummary(count, empty, clf.truncated, clf.max_length, clf.path.name, clf.variant, clf.provider,
                          round(time.perf_counter() - started, 3), out)


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def check_writable(out: str) -> None:
    """One line of error, now, when ``out`` cannot become a file: a folder, or a place we cannot write."""
    path = Path(out)
    if path.is_dir():
        raise UserError(f"--out {out}: is a folder; give a file path such as {path / 'predictions.jsonl'}")
    probe = path.with_name(f".{path.name}.probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.open("w").close()
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


@contextmanager
def _output(out: str | None):
    if out is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    try:
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
            yield f
    except OSError as exc:  # disk full, the folder removed under us, ...: nothing half-written stays behind
        raise UserError(f"--out {out}: writing failed ({exc.strerror or exc}); nothing was written") from None
