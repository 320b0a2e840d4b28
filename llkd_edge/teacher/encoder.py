"""The packaged sentence encoder (all-MiniLM-L6-v2, frozen): unit-length mean-pooled embeddings of texts, what
the label-budget rounds, the gold-only probe and the relabelling probe read (``embed``). Also where a registered
student's weights are found in their package (``model_folder``), shared with training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError, UserError
from ..registry import package_file, registry


def require_torch():
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("training and embedding need torch: run `make setup`") from None
    return torch


def model_folder(entry: dict) -> Path:
    """The folder of a registered student (or the encoder) inside its installed package."""
    folder = package_file(entry["package"], entry["path"], "the student", entry["install"], missing=UserError)
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: no config.json; reinstall {entry['package']}")
    return folder


ENCODER = "minilm-l6"  # the packaged sentence encoder behind gold.py's gold-only probe


class Encoder:
    """The packaged sentence encoder, loaded once: ``embed`` as many times as needed."""

    def __init__(self, name: str = ENCODER):
        self.torch = require_torch()
        from transformers import AutoModel, AutoTokenizer

        self.folder = model_folder(registry("students")[name])
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.model = AutoModel.from_pretrained(self.folder).eval()

    def embed(self, texts: Sequence[str], max_length: int = 128, batch_size: int = 64,
              progress: bool = False) -> np.ndarray:
        """Shape (N, D): unit-length mean-pooled embeddings, texts cut at ``max_length`` tokens."""
        torch = self.torch
        from tqdm.auto import tqdm

        out = []
        with torch.no_grad():
            for start in tqdm(range(0, len(texts), batch_size), desc="embedding", disable=not progress, leave=False):
                batch = self.tokenizer(list(texts[start : start + batch_size]), truncation=True, max_length=max_length,
                                       padding=True, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size), dtype=np.float32)


def embed(texts: Sequence[str], max_length: int = 128, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Shape (N, D): unit-length mean-pooled embeddings from the packaged sentence encoder (all-MiniLM-L6-v2,
    trained for mean pooling), frozen; what the gold-only probe reads."""
    return Encoder().embed(texts, max_length, batch_size, progress)
