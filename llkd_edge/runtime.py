"""What apps embed: an exported student run by ONNX Runtime. Imports onnxruntime, tokenizers and numpy only.

    from llkd_edge.runtime import Classifier

    clf = Classifier.load("models/bbc")          # the folder `llkd-edge export` wrote
    clf.predict(["Shares fell sharply..."])      # -> ["business"]
    clf.predict_proba(texts)                     # -> array of shape (N, K), columns in clf.labels order

A model folder holds ``llkd_edge.json`` (label names, token budget, which ONNX file is the default, how the
model was made), the ONNX file(s) and the tokenizer's ``tokenizer.json``. Any folder from Optimum's ONNX
export with ``id2label`` names in ``config.json`` also loads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config import DEVICES
from .errors import MissingDependencyError, ModelError
from .files import one_line

MANIFEST = "llkd_edge.json"
DEFAULT_MAX_LENGTH = 128


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("running a model needs ONNX Runtime: pip install 'llkd-edge[runtime]'") from None
    return onnxruntime


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable ({type(exc).__name__})") from None


def read_manifest(model_dir: str | Path) -> dict:
    """The folder's description: ``llkd_edge.json``, or one built from Optimum's ``config.json``.

    Keys used here: ``labels``, ``max_length``, ``pad_token_id``, ``default`` (a variant name) and
    ``variants`` (variant name -> ONNX file name).
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder (make one with `llkd-edge export RUN_DIR --out {folder}`)")
    if (folder / MANIFEST).is_file():
        manifest = _read_json(folder / MANIFEST)
        if not manifest.get("labels") or not manifest.get("variants"):
            raise ModelError(f"{folder / MANIFEST}: no label names or model files listed; export the run again")
        return manifest
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: no {MANIFEST} or config.json, so no label names; is this an exported model?")
    config = _read_json(folder / "config.json")
    id2label = config.get("id2label") or {}
    labels = [id2label.get(str(i), id2label.get(i)) for i in range(len(id2label))]
    if not labels or any(not name or name.startswith("LABEL_") for name in labels):
        raise ModelError(f"{folder}/config.json has no label names (id2label); export with `llkd-edge export`")
    return {
        "labels": labels,
        "max_length": min(int(config.get("max_position_embeddings", DEFAULT_MAX_LENGTH)), 512),
        "pad_token_id": int(config.get("pad_token_id") or 0),
        "default": "fp32",
        # Optimum writes model.onnx at the top; the transformers.js layout keeps it under onnx/
        "variants": {"fp32": next((f for f in ("model.onnx", "onnx/model.onnx") if (folder / f).is_file()),
                                  "model.onnx")},
    }


class Classifier:
    """An exported student: texts in, label names or (N, K) probabilities out.

    ``truncated`` counts the texts, over this object's life, that were cut to ``max_length`` tokens.
    """

    def __init__(self, session, tokenizer, labels: Sequence[str], max_length: int, pad_token_id: int,
                 variant: str, path: Path):
        self.session = session
        self.tokenizer = tokenizer
        self.labels = tuple(labels)
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        self.variant = variant
        self.path = path
        self.provider = session.get_providers()[0]
        self.input_names = [i.name for i in session.get_inputs()]
        self.truncated = 0

    @classmethod
    def load(cls, model_dir: str | Path, variant: str | None = None, threads: int | None = None,
             device: str = "auto") -> Classifier:
        """Load a model folder.

        ``variant``: ``fp32``, ``int8`` or None for the folder's default (int8 when it passed the export's
        accuracy gate). ``threads``: CPU threads (None: ONNX Runtime's default, all cores). ``device``:
        ``auto`` uses CUDA when onnxruntime-gpu can really run on this machine, else the CPU; ``cuda``
        insists on it.
        """
        from tokenizers import Tokenizer

        if device not in DEVICES:
            raise ModelError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
        if threads is not None and threads < 1:
            raise ModelError(f"threads must be at least 1, got {threads}")
        folder = Path(model_dir)
        manifest = read_manifest(folder)
        variants = manifest["variants"]
        variant = variant or manifest["default"]
        if variant not in variants:
            raise ModelError(f"{folder}: no {variant} model (it has {', '.join(variants)})")
        path = folder / variants[variant]
        if not path.is_file():
            raise ModelError(f"{path}: missing; export the run again")
        if not (folder / "tokenizer.json").is_file():
            raise ModelError(f"{folder}/tokenizer.json: missing; export the run again")
        try:
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # the Rust side raises a bare Exception for a bad file
            raise ModelError(f"{folder}/tokenizer.json: unreadable ({one_line(exc, limit=200)})") from None
        max_length = int(manifest.get("max_length", DEFAULT_MAX_LENGTH))
        tokenizer.no_padding()  # we pad per batch, to the longest text in it
        tokenizer.enable_truncation(max_length)
        session = _session(path, threads, device)
        outputs = session.get_outputs()[0].shape
        if isinstance(outputs[-1], int) and outputs[-1] != len(manifest["labels"]):
            raise ModelError(f"{path}: gives {outputs[-1]} scores but {len(manifest['labels'])} labels are listed")
        return cls(session, tokenizer, manifest["labels"], max_length, int(manifest.get("pad_token_id", 0)),
                   variant, path)

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Shape (N, K): raw scores. Texts are batched by length, so padding stays small."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        texts = list(texts)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(texts)
        self.truncated += sum(1 for e in encodings if e.overflowing)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self.session.run(None, self._feed([encodings[i] for i in rows]))[0]
        return out

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Shape (N, K): class probabilities, columns in ``labels`` order."""
        return softmax(self.logits(texts, batch_size))

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[str]:
        """One label name per text."""
        return [self.labels[j] for j in self.logits(texts, batch_size).argmax(axis=1)]

    def _feed(self, encodings) -> dict[str, np.ndarray]:
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
            types[i, : len(e.ids)] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: feed[name] for name in self.input_names}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of shape (N, K) scores."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _session(path: Path, threads: int | None, device: str):
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; ORT's warnings about unused initialisers are noise here
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    wants_cuda = device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if wants_cuda else ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types for a bad file
        raise ModelError(f"{path}: not a usable ONNX model ({one_line(exc, limit=200)})") from None
    # onnxruntime-gpu lists CUDA even where it cannot run (no GPU, no CUDA libraries); the session's own
    # provider list says what it really uses.
    if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise ModelError("--device cuda: ONNX Runtime cannot use CUDA here (needs onnxruntime-gpu and a working GPU)")
    return session

