"""Small file and text helpers every stage shares: atomic writes, JSON lines, file hashes, one-line errors.

Every file the package writes goes through ``atomic_path`` (directly or through the writers below): the
content goes to a hidden temporary file beside the target, which replaces the target only once complete,
so a killed or failed write never leaves half a file where a whole one was expected. Standard library only,
so the light paths (store, config, runtime) may import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path``, on an error it is removed.

    Works for files and folders alike: the caller creates a folder at the yielded path and fills it. A folder
    that already stands at ``path`` is moved aside, replaced, and only then removed, so at every moment
    either the old folder or the new one is in place.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    _remove(tmp)
    try:
        yield tmp
        aside = tmp.is_dir() and path.is_dir()
        if aside:
            _remove(old)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if aside:  # the new folder could not take its place: the old one goes back, never both lost
                os.replace(old, path)
            raise
    finally:
        _remove(tmp)
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def lies_inside(folder: str | Path, path: str | Path) -> bool:
    """Whether ``path``, links followed, lies inside ``folder``: a folder from someone else must not make us read
    other files (``../x``, an absolute name, a link out). Raises OSError/ValueError for a name no path can hold."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def to_json(obj) -> str:
    """The package's JSON file format: indented, UTF-8 kept readable, paths and other objects as strings."""
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, to_json(obj))


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    return Path(path)


def append_jsonl(path: str | Path, record: dict) -> None:
    """Add one line to a JSON-lines log. A kill can tear only the last line, which ``read_jsonl`` drops."""
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines log ([] when absent), up to the first line a kill tore."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # a line torn by a kill: everything before it stands
    return out


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """A matplotlib figure written atomically, in the format its suffix names."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    return Path(path)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def one_line(exc: BaseException | str, limit: int | None = 300, first_line: bool = False) -> str:
    """An exception (or text) as one line for an ``error:`` message: whitespace collapsed, cut at ``limit``
    (None: not cut);
    ``first_line``: only its first non-empty line (for messages that carry a remote traceback, like Ray's)."""
    text = str(exc).strip()
    if first_line and text:
        text = text.splitlines()[0]
    text = " ".join(text.split())
    if not text and isinstance(exc, BaseException):
        text = type(exc).__name__
    return text if limit is None else text[:limit]


def rounded(scores: dict | None, digits: int = 4) -> dict | None:
    """A flat dict of scores with its floats rounded for a report (None stays None)."""
    if scores is None:
        return None
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in scores.items()}
