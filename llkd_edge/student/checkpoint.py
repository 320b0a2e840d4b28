"""The student's checkpoint (RUN_DIR/checkpoint.pt, one after every epoch): what ``train`` saves and a resumed
run reads back, and the per-epoch statistics it carries. Tensors as torch tensors, everything else as one JSON
string, loaded with ``weights_only=True``: a checkpoint from someone else's folder cannot run code."""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError, UserError
from ..files import atomic_path, one_line
from ..teacher.encoder import require_torch

CHECKPOINT = "checkpoint.pt"


@dataclass
class EpochStats:
    epoch: int
    steps: int
    selected: int  # samples that received a gradient this epoch
    seen: int  # samples passed through the student this epoch
    ever_selected: int  # distinct samples selected so far (the paper's "data used")
    mean_loss: float
    teacher_thresholds: list[float]
    student_thresholds: list[float]
    seconds: float
    need_seconds: float = 0.0  # of ``seconds``, spent on the extra eval-mode passes (need_pass "eval")


def save_checkpoint(path: Path, torch, model, optimizer, scheduler, state, ever, stats, epoch, rng, config,
                     pool_sha256: str | None = None, device: str | None = None) -> None:
    """Tensors (weights, optimiser, RNG) as torch tensors; everything else as one JSON string.

    ``load_checkpoint`` reads it back with ``weights_only=True``, which unpickles tensors and plain
    containers only: a checkpoint.pt from someone else's run folder cannot run code on load.
    """
    plain = {
        "epoch": epoch,
        "selection_state": state.to_dict(),
        "ever_selected": np.flatnonzero(ever).tolist(),
        "pool_size": len(ever),
        "pool_sha256": pool_sha256,  # what it trained on, and where: a resume must continue the same thing
        "device": device,
        "stats": [asdict(s) for s in stats],
        "numpy_rng": rng.bit_generator.state,
        "config": asdict(config),
    }
    with atomic_path(path) as tmp:  # a kill mid-save leaves the previous checkpoint intact
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "plain": json.dumps(plain, default=_plain),
            },
            tmp,
        )


def _plain(value):
    """numpy scalars in the checkpoint's plain part as Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not plain data")


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """A checkpoint written by ``train``, its plain part decoded (``ever_selected`` back to a bool mask).

    Loaded with ``weights_only=True``: a file holding anything but tensors and plain containers (a crafted
    pickle) is refused with a ModelError, never executed.
    """
    torch = require_torch()
    path = Path(path)
    try:
        saved = torch.load(path, weights_only=True, map_location=map_location)
        plain = json.loads(saved.pop("plain"))
    except (pickle.UnpicklingError, RuntimeError, KeyError, ValueError, AttributeError, EOFError) as exc:
        raise ModelError(f"{path}: not a checkpoint this version wrote, or unsafe to load "
                         f"({one_line(exc, limit=160, first_line=True)}); delete it to train from the start") from None
    try:  # the plain part may come from someone else's folder: any value of the wrong shape is one line
        n, picked = int(plain.pop("pool_size")), np.asarray(plain.pop("ever_selected"), dtype=np.int64)
        if n < 0 or picked.ndim != 1 or (len(picked) and (picked.min() < 0 or picked.max() >= n)):
            raise ValueError("ever_selected does not fit pool_size")
        if not isinstance(plain["epoch"], int) or isinstance(plain["epoch"], bool):
            raise ValueError("epoch is not a whole number")
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ModelError(f"{path}: its saved state is malformed ({one_line(exc, limit=120)}); delete it to train "
                         "from the start") from None
    ever = np.zeros(n, dtype=bool)
    ever[picked] = True
    return {**saved, **plain, "ever_selected": ever}


def check_resumable(ckpt: Path, saved: dict, n: int, fingerprint: str, device: str) -> None:
    """One line, before any step, when the checkpoint was trained on another pool or another device (a CPU run
    continued on a GPU would switch precision mid-run). Checkpoints from before either was recorded: size only."""
    if len(saved["ever_selected"]) != n or saved.get("pool_sha256") not in (None, fingerprint):
        raise UserError(f"{ckpt}: trained on another pool ({len(saved['ever_selected'])} texts; now {n}, or their "
                        "labels changed): DATA or the label store changed since; train again with another --out")
    if saved.get("device") not in (None, device):
        raise UserError(f"{ckpt}: trained on {saved['device']}, this run would continue on {device}; "
                        f"resume with --device {saved['device']}")


def selected_mask(checkpoint_dir: str | Path) -> np.ndarray:
    """Shape (N,), bool: which pool samples ever received a gradient, from the last epoch's checkpoint."""
    return load_checkpoint(Path(checkpoint_dir) / CHECKPOINT)["ever_selected"]
