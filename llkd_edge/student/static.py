"""The static-embedding student (``--student static``): one vector per token, their mean, a linear head.

No attention: a text costs a table lookup per token and a mean, so it runs thousands of times faster than the
teacher. The table is made from the packaged sentence encoder the way model2vec distils one (Tulkens & van
Dongen, 2024): every vocabulary token through the encoder on its own (``[CLS] token [SEP]``, mean-pooled), PCA
to ``dims`` dimensions, then SIF weights from the token's rank (Zipf's law: frequent tokens weigh less). model2vec
itself is not a dependency: its 0.10 needs huggingface_hub >= 1 and skeletoken, which break optimum-onnx's pins,
and the steps are these few lines. The table is made once per encoder and setting and cached.

Training then fine-tunes the table and the head on the teacher's labels through the same loop as every student
(train.py). The model keeps the tokenizer's special tokens in the mean, so every runtime tokenizes as for the
transformer students; saving writes safetensors and a config.json (never a pickle), and ``export`` writes the
ONNX graph node by node (Optimum has no architecture for it).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..files import atomic_path, one_line, read_json, write_json
from ..registry import cache_dir
from ..teacher.encoder import require_torch

ARCHITECTURE = "static embeddings"  # what the run's record and the model card call it
MODEL_TYPE = "llkd-static"  # config.json's model_type: what tells a static student's folder apart
WEIGHTS = "model.safetensors"
SIF = 1e-4  # model2vec's default SIF coefficient
TABLE_VERSION = 1  # of the steps below: a change to them must change it, so cached tables are made again


def token_vectors(encoder_folder: Path, dims: int, batch_size: int = 512, progress: bool = False) -> np.ndarray:
    """Shape (V, dims), float32: each vocabulary token's vector, distilled from the encoder at ``encoder_folder``
    (cached under the cache folder by the encoder weights' hash and ``dims``)."""
    from ..registry import file_sha256

    weights = next((encoder_folder / n for n in ("model.safetensors", "pytorch_model.bin")
                    if (encoder_folder / n).is_file()), None)
    if weights is None:
        raise ModelError(f"{encoder_folder}: no encoder weights to distil a static student from")
    cached = cache_dir() / "static" / f"v{TABLE_VERSION}-{file_sha256(weights)[:16]}-d{dims}-sif{SIF:g}.npy"
    if cached.is_file():
        try:
            vectors = np.load(cached, allow_pickle=False)
            if vectors.shape == (_vocab_size(encoder_folder), dims) and np.isfinite(vectors).all():
                return vectors.astype(np.float32, copy=False)
        except (OSError, ValueError):
            pass  # a broken cache file is made again
    vectors = _distil(encoder_folder, dims, batch_size, progress)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors, allow_pickle=False)
    return vectors


def _vocab_size(encoder_folder: Path) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(encoder_folder))


def _distil(encoder_folder: Path, dims: int, batch_size: int, progress: bool) -> np.ndarray:
    torch = require_torch()
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoder_folder)
    model = AutoModel.from_pretrained(encoder_folder).eval()
    vocab = len(tokenizer)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    out = np.zeros((vocab, model.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for start in tqdm(range(0, vocab, batch_size), desc="distilling token vectors", unit="batch",
                          disable=not progress, leave=False):
            ids = torch.arange(start, min(start + batch_size, vocab))
            input_ids = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], dim=1)
            hidden = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).last_hidden_state
            out[start : start + len(ids)] = hidden.mean(dim=1).numpy()
    return sif_weighted(pca(out, dims))


def pca(x: np.ndarray, dims: int) -> np.ndarray:
    """``x`` centred and projected on its ``dims`` leading principal axes (signs fixed: largest score positive)."""
    if not 1 <= dims <= x.shape[1]:
        raise ModelError(f"static student: dims must be from 1 to {x.shape[1]}, got {dims}")
    centred = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T.astype(np.float64) @ centred / (len(x) - 1))
    axes = vectors[:, ::-1][:, :dims]
    scores = centred @ axes
    signs = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(dims)])
    return (scores * signs).astype(np.float32)


def sif_weighted(vectors: np.ndarray, sif: float = SIF) -> np.ndarray:
    """Rows scaled by SIF weights ``sif / (sif + p)``, ``p`` the token's probability under Zipf's law by id
    (WordPiece ids run roughly from frequent to rare)."""
    inv_rank = 1.0 / np.arange(2, len(vectors) + 2)
    p = inv_rank / inv_rank.sum()
    return (vectors * (sif / (sif + p))[:, None]).astype(np.float32)


# ------------------------------------------------------------------------------------------ the model


@functools.cache
def _model_class():
    torch = require_torch()
    from transformers.modeling_outputs import SequenceClassifierOutput

    class StaticStudent(torch.nn.Module):
        """Token vectors, their mean over the attention mask (unit length), a linear head: logits."""

        def __init__(self, config: StaticConfig):
            super().__init__()
            self.config = config
            self.embeddings = torch.nn.Embedding(config.vocab_size, config.dims)
            self.head = torch.nn.Linear(config.dims, config.num_labels)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            mask = attention_mask.unsqueeze(-1).to(self.embeddings.weight.dtype)
            pooled = (self.embeddings(input_ids) * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            return SequenceClassifierOutput(logits=self.head(pooled))

        def save_pretrained(self, folder) -> None:
            from safetensors.torch import save_file

            Path(folder).mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                      str(Path(folder) / WEIGHTS))
            write_json(Path(folder) / "config.json", self.config.to_dict())

    return StaticStudent


class StaticConfig:
    """What config.json holds for a static student (the fields train.py and export read from ``model.config``)."""

    def __init__(self, vocab_size: int, dims: int, id2label: dict, base: str = ""):
        self.model_type = MODEL_TYPE
        self.vocab_size, self.dims, self.base = int(vocab_size), int(dims), base
        self.id2label = {int(k): str(v) for k, v in id2label.items()}
        self.label2id = {v: k for k, v in self.id2label.items()}
        self.num_labels = len(self.id2label)

    def to_dict(self) -> dict:
        return {"model_type": MODEL_TYPE, "architectures": ["StaticStudent"], "vocab_size": self.vocab_size,
                "dims": self.dims, "base": self.base, "num_labels": self.num_labels,
                "id2label": {str(k): v for k, v in self.id2label.items()}, "label2id": self.label2id}


def build(encoder_folder: Path, labels, dims: int, seed: int, progress: bool = True):
    """A new static student: the distilled table (trainable) and a fresh head, ready for train.py."""
    torch = require_torch()
    vectors = token_vectors(encoder_folder, dims, progress=progress)
    torch.manual_seed(seed)
    model = _model_class()(StaticConfig(len(vectors), dims, dict(enumerate(labels)), base=str(encoder_folder)))
    with torch.no_grad():
        model.embeddings.weight.copy_(torch.from_numpy(vectors))
    return model


def is_static(folder: Path) -> bool:
    """Whether ``folder`` holds a static student (config.json's model_type); any unreadable config is not."""
    try:
        config = read_json(Path(folder) / "config.json")
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == MODEL_TYPE


def load(folder: Path):
    """A saved static student: config.json's shape checked, the weights from safetensors only."""
    require_torch()
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        record = read_json(folder / "config.json")
        config = StaticConfig(record["vocab_size"], record["dims"], record["id2label"], str(record.get("base", "")))
        _check_shapes(folder / WEIGHTS, config)  # before anything is allocated: a folder may come from someone else
        model = _model_class()(config)
        model.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise ModelError(f"{folder}: not a static student this tool saved "
                         f"({one_line(exc, limit=160, first_line=True)})") from None
    model.eval()
    return model


MAX_TABLE = 50_000_000  # vocabulary x dims: 200 MB in fp32, far above any real table (MiniLM's: 7.8M)
MAX_LABELS = 10_000


def _check_shapes(weights: Path, config: StaticConfig) -> None:
    """ValueError unless config.json's sizes are in range and the safetensors header holds exactly the tensors of
    that shape (read from the header alone, before the model is built)."""
    from safetensors import safe_open

    if not (0 < config.vocab_size and 0 < config.dims and config.vocab_size * config.dims <= MAX_TABLE
            and 2 <= config.num_labels <= MAX_LABELS):
        raise ValueError("sizes out of range")
    expected = {"embeddings.weight": [config.vocab_size, config.dims],
                "head.weight": [config.num_labels, config.dims], "head.bias": [config.num_labels]}
    with safe_open(str(weights), framework="numpy") as f:
        shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    if shapes != expected:
        raise ValueError(f"{WEIGHTS} holds other tensors than config.json describes")


# ------------------------------------------------------------------------------------------ ONNX


def onnx_graph(state: dict[str, np.ndarray], int8: bool = False):
    """The student's forward pass as an ONNX model (inputs ``input_ids`` and ``attention_mask``, output ``logits``),
    written node by node: Gather, the masked mean, unit length, the head. ``int8``: the table stored as int8 with a
    scale per token (a quarter of the size); the rows are scaled back to float after the lookup."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.asarray(state["embeddings.weight"], dtype=np.float32)
    weight = np.asarray(state["head.weight"], dtype=np.float32)
    bias = np.asarray(state["head.bias"], dtype=np.float32)
    inits = [numpy_helper.from_array(weight.T.copy(), "head_weight"), numpy_helper.from_array(bias, "head_bias"),
             numpy_helper.from_array(np.array([1e-12], dtype=np.float32), "eps"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
             numpy_helper.from_array(np.array([-1], dtype=np.int64), "last")]
    # The rows are summed with weights by one batched MatMul, (B, 1, T) @ (B, T, D): the weight is the attention mask
    # (times the token's scale for int8). The sum is not divided by the count: unit length does not see the scale.
    nodes = [helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT)]
    if int8:
        scale = np.maximum(np.abs(table).max(axis=1), 1e-12) / 127.0
        inits += [numpy_helper.from_array(np.round(table / scale[:, None]).astype(np.int8), "table_q"),
                  numpy_helper.from_array(scale.astype(np.float32), "table_scale")]
        nodes += [helper.make_node("Gather", ["table_q", "input_ids"], ["rows_q"]),
                  helper.make_node("Cast", ["rows_q"], ["rows"], to=TensorProto.FLOAT),
                  helper.make_node("Gather", ["table_scale", "input_ids"], ["row_scale"]),
                  helper.make_node("Mul", ["mask_f", "row_scale"], ["weights"])]
    else:
        inits.append(numpy_helper.from_array(table, "table"))
        nodes += [helper.make_node("Gather", ["table", "input_ids"], ["rows"]),
                  helper.make_node("Identity", ["mask_f"], ["weights"])]
    nodes += [
        helper.make_node("Unsqueeze", ["weights", "axis1"], ["weights3"]),
        helper.make_node("MatMul", ["weights3", "rows"], ["summed3"]),
        helper.make_node("Squeeze", ["summed3", "axis1"], ["summed"]),
        helper.make_node("ReduceL2", ["summed", "last"], ["norm"], keepdims=1),
        helper.make_node("Max", ["norm", "eps"], ["norm1"]),
        helper.make_node("Div", ["summed", "norm1"], ["unit"]),
        helper.make_node("MatMul", ["unit", "head_weight"], ["scores"]),
        helper.make_node("Add", ["scores", "head_bias"], ["logits"]),
    ]
    k = weight.shape[0]
    graph = helper.make_graph(
        nodes, "llkd_static_student",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="llkd-edge")
    model.ir_version = 9  # what ONNX Runtime 1.17+ and onnxruntime-web read
    onnx.checker.check_model(model)
    return model


def export_onnx(student_dir: Path, target: Path, int8: bool = False) -> None:
    """Write the saved static student at ``student_dir`` as an ONNX file (see ``onnx_graph``)."""
    import onnx
    from safetensors.numpy import load_file

    onnx.save(onnx_graph(load_file(str(Path(student_dir) / WEIGHTS)), int8=int8), str(target))
