"""The model registries (models/teachers.toml, models/students.toml) and the files installed packages carry.

Teachers, students and the built-in datasets all ship inside registry packages: this module finds a file in
an installed distribution, joins a teacher split into chunks, verifies GGUF files by sha256 (remembered
in the cache, so a big model is hashed once) and resolves a teacher name or path to a verified
``ModelFile``. Standard library only: no model is loaded here.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from .errors import MissingDependencyError, ModelError, UserError
from .files import atomic_path, sha256_file, write_text

GGUF_MAGIC = b"GGUF"
REGISTRIES = ("teachers", "students")


def cache_dir() -> Path:
    return Path(os.environ.get("LLKD_EDGE_CACHE", Path.home() / ".cache" / "llkd-edge"))


def registry(kind: str) -> dict[str, dict]:
    """The known teachers or students, from models/{kind}.toml."""
    if kind not in REGISTRIES:
        raise ValueError(f"unknown registry {kind!r}; expected one of {REGISTRIES}")
    text = resources.files("llkd_edge.models").joinpath(f"{kind}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def package_file(dist: str, relative: str, needed_by: str, install: str,
                 missing: type[UserError] = ModelError) -> Path:
    """The path of ``relative`` inside the installed distribution ``dist``.

    A missing package is a MissingDependencyError naming ``install``; a package without the file raises
    ``missing`` (a broken install: reinstall it).
    """
    try:
        path = Path(metadata.distribution(dist).locate_file(relative))
    except metadata.PackageNotFoundError:
        raise MissingDependencyError(f"{needed_by} needs the package {dist}: {install}") from None
    if not path.exists():
        raise missing(f"{path}: missing from the installed package {dist}; reinstall it ({install})")
    return path


@dataclass(frozen=True)
class ModelFile:
    """A verified GGUF file and what we know about it."""

    name: str  # registry name, or the file's path
    path: Path
    sha256: str
    prompt_style: str  # "plain" or "chat" (registry), "auto" for an arbitrary file
    licence: str = "unknown"


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so big models are hashed once."""
    stat = path.stat()
    memo_path = cache_dir() / "sha256.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    stamp = [stat.st_size, stat.st_mtime_ns]
    entry = memo.get(str(path.resolve()))
    if entry and entry[:2] == stamp:
        return entry[2]
    digest = sha256_file(path)
    memo[str(path.resolve())] = [*stamp, digest]
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(memo_path, json.dumps(memo))
    return digest


def check_gguf(path: Path) -> None:
    if not path.exists():
        raise ModelError(f"{path}: no such model file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")


def _teacher_file(dist: str, relative: str, install: str) -> Path:
    path = package_file(dist, relative, "the teacher", install)
    if not path.is_file():
        raise ModelError(f"{path}: missing from the installed package {dist}; reinstall it ({install})")
    return path


def _assemble(name: str, entry: dict) -> Path:
    """Join a registry model's chunks into the cache (once) and verify the result's sha256."""
    import hashlib

    target = cache_dir() / "models" / entry["sha256"][:16] / entry["file"]
    chunks = [_teacher_file(dist, rel, entry["install"]) for dist, rel in entry["chunks"]]
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()  # hashed while joined: one read of the chunks, not two
    with atomic_path(target) as tmp:
        with tmp.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != entry["sha256"]:
            raise ModelError(f"{name}: the joined model file has sha256 {digest.hexdigest()}, expected {entry['sha256']}")
    return target


def resolve_teacher(model: str) -> ModelFile:
    """A registry name or a GGUF path -> a verified ModelFile (raises ModelError/MissingDependencyError)."""
    known = registry("teachers")
    if model in known:
        entry = known[model]
        if entry["source"] == "chunks":
            path = _assemble(model, entry)
        else:
            path = _teacher_file(entry["package"], entry["path"], entry["install"])
        check_gguf(path)
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            raise ModelError(f"{model}: {path} has sha256 {digest}, expected {entry['sha256']}; reinstall it")
        return ModelFile(model, path, digest, entry["prompt_style"], entry["licence"])
    path = Path(model).expanduser()
    if not path.exists() and not model.lower().endswith(".gguf"):
        raise ModelError(f"unknown teacher {model!r}: give a .gguf path or one of {', '.join(known)}")
    check_gguf(path)
    return ModelFile(str(path), path.resolve(), file_sha256(path), "auto")
