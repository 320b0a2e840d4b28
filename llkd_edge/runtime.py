"""What apps embed: an exported student run by ONNX Runtime. Imports onnxruntime, tokenizers and numpy only.

    from llkd_edge.runtime import Classifier

    clf = Classifier.load("models/bbc")          # the folder `llkd-edge export` wrote
    clf.predict(["Shares fell sharply..."])      # -> ["business"]
    clf.predict_proba(texts)                     # -> array of shape (N, K), columns in clf.labels order

A model folder holds ``llkd_edge.json`` (label names, token budget, which ONNX file is the default, how the
model was made), the ONNX file(s) and the tokenizer's ``tokenizer.json``. Any folder from Optimum's ONNX
export with ``id2label`` names in ``config.json`` also loads.

A folder may come from someone else: what it lists is checked before anything is loaded (types and ranges;
every file it names must lie inside the folder, links followed), and a bad folder is one ``ModelError`` line.
ONNX Runtime (1.31) itself refuses external tensor data outside the ONNX file's folder; a unit test pins that.
"""

from __future__ import annotations

import itertools
import json
import mmap
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config import DEVICES
from .distributions import softmax  # noqa: F401 (also the runtime's public name)
from .errors import MissingDependencyError, ModelError
from .files import lies_inside, one_line

MANIFEST = "llkd_edge.json"
DEFAULT_MAX_LENGTH = 128
CHARS_PER_TOKEN = (6, 16)  # a long text is cut at a space this many characters per token of budget in, then that many (Classifier._encode)
# A cache of each word's tokens (Classifier, where the tokenizer allows it): words are the text between any two of
# these spaces, which every BERT-style tokenizer splits at and drops; at most WORDS_KEPT words are kept (then the
# cache starts over) and none longer than LONG_WORD characters (a hostile text cannot fill memory with one word).
SPACE_CHARS = " \t\n\r"
WORDS_KEPT = 100_000
LONG_WORD = 64
# A printable ASCII word, and its parts where BERT's pre-tokenizer splits it: runs of letters and digits, and each
# other character alone (all punctuation to it). A new word made of kept parts is then not tokenized (_Words).
PRINTABLE_ASCII = re.compile(r"[!-~]+")
ASCII_PARTS = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9]")
MAX_TOKENS = 8192  # the largest token budget a folder may ask for (a bigger one is a broken or hostile manifest)
# How texts share ONNX Runtime calls, so that a text's scores never depend on the texts batched with it:
#   padded       batches of similar length, padded to the longest (fp32: padding is masked out exactly)
#   same length  only texts of one token length share a call (static int8: its activation ranges are fixed,
#                but were calibrated on unpadded texts; the attention mask's large negative values fall outside
#                them and would let padding change the scores)
#   one text     one text per call (dynamic int8: activation scales come from the whole call's input)
BATCHING = ("padded", "same length", "one text")
# Op types (plain strings in the ONNX protobuf) that mark each kind of quantisation: DynamicQuantizeLinear,
# -MatMul, -LSTM; QuantizeLinear/DequantizeLinear (QDQ) and QLinear* (QOperator), MatMulInteger.
DYNAMIC_OPS = (b"DynamicQuantize",)
STATIC_OPS = (b"QuantizeLinear", b"QLinear", b"MatMulInteger", b"ConvInteger")


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
    ``variants`` (variant name -> ONNX file name). Their types and ranges are checked here.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder (make one with `llkd-edge export RUN_DIR --out {folder}`)")
    if (folder / MANIFEST).is_file():
        return _checked(_read_json(_inside(folder, MANIFEST)), folder / MANIFEST)
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: no {MANIFEST} or config.json, so no label names; is this an exported model?")
    config = _read_json(_inside(folder, "config.json"))
    id2label = (config.get("id2label") if isinstance(config, dict) else None) or {}
    if not isinstance(id2label, dict):
        raise ModelError(f"{folder}/config.json: id2label is not an object; export with `llkd-edge export`")
    labels = [id2label.get(str(i), id2label.get(i)) for i in range(len(id2label))]
    if not labels or any(not isinstance(name, str) or not name or name.startswith("LABEL_") for name in labels):
        raise ModelError(f"{folder}/config.json has no label names (id2label); export with `llkd-edge export`")
    positions = config.get("max_position_embeddings", DEFAULT_MAX_LENGTH)
    return _checked({
        "labels": labels,
        "max_length": min(positions, 512) if _is_int(positions) else positions,
        "pad_token_id": config.get("pad_token_id") or 0,
        "default": "fp32",
        # Optimum writes model.onnx at the top; the transformers.js layout keeps it under onnx/
        "variants": {"fp32": next((f for f in ("model.onnx", "onnx/model.onnx") if (folder / f).is_file()),
                                  "model.onnx")},
    }, folder / "config.json")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked(manifest, where: Path) -> dict:
    """``manifest`` if every key the runtimes read has the right type and range; else one ModelError line."""
    if not isinstance(manifest, dict):
        raise ModelError(f"{where}: not a JSON object; export the run again")
    labels, variants = manifest.get("labels"), manifest.get("variants")
    if not labels or not variants:
        raise ModelError(f"{where}: no label names or model files listed; export the run again")
    max_length, pad = manifest.get("max_length", DEFAULT_MAX_LENGTH), manifest.get("pad_token_id", 0)
    problem = None
    if not isinstance(labels, list) or not all(isinstance(name, str) and name for name in labels):
        problem = "labels must be a list of label names"
    elif len(set(labels)) != len(labels):
        problem = "labels must be distinct"
    elif not isinstance(variants, dict) or not all(isinstance(f, str) and f for f in variants.values()):
        problem = "variants must map variant names to ONNX file names"
    elif not isinstance(manifest.get("default"), str) or manifest["default"] not in variants:
        problem = f"default must be one of its variants ({', '.join(variants)})"
    elif not _is_int(max_length) or not 0 < max_length <= MAX_TOKENS:
        problem = f"max_length must be a whole number of tokens from 1 to {MAX_TOKENS}"
    elif not _is_int(pad) or pad < 0:
        problem = "pad_token_id must be a token id (a whole number from 0)"
    if problem:
        raise ModelError(f"{where}: {problem}; export the run again")
    return manifest


def _inside(folder: Path, name: str, what: str = "file") -> Path:
    """``folder / name`` if it resolves inside ``folder`` (symlinks followed): a folder from someone else must
    not make us read other files (``../../x``, an absolute path, a link out)."""
    path = folder / name
    try:
        inside = lies_inside(folder, path)
    except (OSError, ValueError):  # a NUL byte, a link loop
        raise ModelError(f"{folder}: {what} {name!r} is not a usable file name; refused") from None
    if not inside:
        raise ModelError(f"{folder}: {what} {name!r} lies outside the model folder; refused")
    return path


class Classifier:
    """An exported student: texts in, label names or (N, K) probabilities out.

    ``truncated`` counts the texts, over this object's life, that were cut to ``max_length`` tokens.
    ``batching``: how texts share a model call (one of ``BATCHING``, read from the graph's op types) so that a
    text gets the same scores whatever it is scored with: ``padded`` for fp32, ``same length`` for static int8,
    ``one text`` for dynamic int8.
    """

    def __init__(self, session, tokenizer, labels: Sequence[str], max_length: int, pad_token_id: int,
                 variant: str, path: Path, batching: str = "padded"):
        self.session = session
        self.tokenizer = tokenizer
        self.labels = tuple(labels)
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        self.variant = variant
        self.path = path
        self.provider = session.get_providers()[0]
        self.input_names = [i.name for i in session.get_inputs()]
        self.batching = batching
        self.truncated = 0
        self.cuts_at_spaces = _cuts_at_spaces(tokenizer)
        self._words = _Words.for_tokenizer(tokenizer, max_length)

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
        path = _inside(folder, variants[variant], f"the {variant} model")
        if not path.is_file():
            raise ModelError(f"{path}: missing; export the run again")
        tokenizer_file = _inside(folder, "tokenizer.json")
        if not tokenizer_file.is_file():
            raise ModelError(f"{folder}/tokenizer.json: missing; export the run again")
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # the Rust side raises a bare Exception for a bad file
            raise ModelError(f"{folder}/tokenizer.json: unreadable ({one_line(exc, limit=200)})") from None
        max_length = manifest.get("max_length", DEFAULT_MAX_LENGTH)
        tokenizer.no_padding()  # we pad per batch, to the longest text in it
        tokenizer.enable_truncation(max_length)
        session = _session(path, threads, device)
        outputs = session.get_outputs()[0].shape
        if isinstance(outputs[-1], int) and outputs[-1] != len(manifest["labels"]):
            raise ModelError(f"{path}: gives {outputs[-1]} scores but {len(manifest['labels'])} labels are listed")
        return cls(session, tokenizer, manifest["labels"], max_length, manifest.get("pad_token_id", 0), variant, path,
                   batching=_batching(path))

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Shape (N, K): raw scores. Texts are batched by length, so padding stays small, and as ``batching``
        says, so no other text in a call (or its padding) moves a text's scores."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        texts = list(texts)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return out
        ids, types, truncated = self._encode(texts)
        self.truncated += truncated
        for rows in self._calls([len(row) for row in ids], batch_size):
            out[rows] = self.session.run(None, self._feed([ids[i] for i in rows],
                                                          None if types is None else [types[i] for i in rows]))[0]
        return out

    def _encode(self, texts: list[str]) -> tuple[list[list[int]], list[list[int]] | None, int]:
        """Token ids of ``texts`` (and their token type ids, None where all are 0) and how many texts were cut,
        exactly as the tokenizer gives them for each whole text cut to the budget.

        Tokenizing costs time in proportion to a text's length, also past the budget; for the static student it is
        most of the time a text takes. Where the tokenizer splits words at spaces and normalises character by
        character (BERT's), a long text is first cut at a space ``CHARS_PER_TOKEN`` characters per token of budget
        in: its tokens are then a prefix of the whole text's, and if they overflow the budget they are the whole
        text's; a text they do not fill is cut more loosely, then taken whole (rare: a text of very long tokens).
        Where its template is plain (special tokens around the text), each word's tokens are also kept
        (``_Words``), so a word seen before is not tokenized again."""
        if self._words is not None:
            return self._words.encode(texts)
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)  # no offsets: faster
        if not self.cuts_at_spaces:
            encodings = encode(texts)
        else:
            encodings = [None] * len(texts)
            todo = list(range(len(texts)))
            for chars in (*CHARS_PER_TOKEN, None):  # a tighter cut first; the texts it leaves short, a looser one
                cut = [texts[i] if chars is None else _cut_at_space(texts[i], self.max_length * chars) for i in todo]
                for i, e in zip(todo, encode(cut)):
                    encodings[i] = e
                todo = [i for i, text in zip(todo, cut) if text is not texts[i] and not encodings[i].overflowing]
                if not todo:
                    break
        types = [e.type_ids for e in encodings] if "token_type_ids" in self.input_names else None
        return [e.ids for e in encodings], types, sum(1 for e in encodings if e.overflowing)

    def forget_words(self) -> None:
        """Drop the kept words' tokens (``_Words``): the next texts are tokenized as on a first pass. For timing."""
        if self._words is not None:
            self._words.kept.clear()

    def _calls(self, lengths: list[int], batch_size: int):
        """Row indices for each model call: texts sorted by token length, cut into batches as ``batching`` says."""
        order = np.argsort(lengths, kind="stable")
        groups = [order]
        if self.batching == "one text":
            batch_size = 1
        elif self.batching == "same length":  # runs of one length: nothing to pad
            groups = np.split(order, np.flatnonzero(np.diff(np.asarray(lengths)[order])) + 1)
        for group in groups:
            for start in range(0, len(group), batch_size):
                yield group[start : start + batch_size]

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Shape (N, K): class probabilities, columns in ``labels`` order."""
        return softmax(self.logits(texts, batch_size))

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[str]:
        """One label name per text."""
        return [self.labels[j] for j in self.logits(texts, batch_size).argmax(axis=1)]

    def _feed(self, ids: list[list[int]], types: list[list[int]] | None) -> dict[str, np.ndarray]:
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        mask = np.arange(lengths.max()) < lengths[:, None]  # each row's tokens, then padding
        feed = {"input_ids": np.full(mask.shape, self.pad_token_id, dtype=np.int64), "attention_mask": mask.astype(np.int64)}
        feed["input_ids"][mask] = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.zeros(mask.shape, dtype=np.int64)
            if types is not None:
                feed["token_type_ids"][mask] = np.fromiter(itertools.chain.from_iterable(types), dtype=np.int64,
                                                            count=int(lengths.sum()))
        return {name: feed[name] for name in self.input_names}


class _Words:
    """Token ids for texts, from each word's tokens kept across calls (a word seen before is not tokenized again).

    Exact where ``for_tokenizer`` allows it: the tokenizer splits at every space (``SPACE_CHARS``) and normalises
    character by character, so a text's tokens are its words' tokens one after another, and its template only
    puts special tokens before and after them (type id 0), so the budget cuts the words' tokens and the special
    tokens go around them, as the tokenizer's own truncation does."""

    def __init__(self, tokenizer, prefix: list[int], suffix: list[int], budget: int, parts: str | None = None,
                 added: tuple[str, ...] = ()):
        self.tokenizer, self.prefix, self.suffix, self.budget = tokenizer, prefix, suffix, budget
        self.kept: dict[str, list[int]] = {}
        # "lower"/"cased": a new printable ASCII word's tokens are its parts' (ASCII_PARTS), lower-cased first where
        # the normaliser lower-cases (BERT's pre-tokenizer and normaliser); None: every new word is tokenized whole
        self.parts, self.added = parts, added

    @classmethod
    def for_tokenizer(cls, tokenizer, max_length: int) -> _Words | None:
        """A ``_Words`` for ``tokenizer`` with a budget of ``max_length`` tokens, or None where it would not be exact."""
        from tokenizers import Tokenizer

        if not _cuts_at_spaces(tokenizer) or not hasattr(tokenizer, "to_str"):
            return None
        bare = Tokenizer.from_str(tokenizer.to_str())
        bare.no_truncation()
        bare.no_padding()
        word, full = bare.encode("a", add_special_tokens=False).ids, bare.encode("a")
        ids, n = full.ids, len(word)
        starts = [i for i in range(len(ids) - n + 1) if ids[i : i + n] == word]
        if n != 1 or len(starts) != 1 or any(full.type_ids) or bare.encode("").ids != ids[: starts[0]] + ids[starts[0] + n :]:
            return None
        prefix, suffix = ids[: starts[0]], ids[starts[0] + n :]
        budget = max_length - len(prefix) - len(suffix)
        config = json.loads(bare.to_str())
        pre, norm = config.get("pre_tokenizer") or {}, config.get("normalizer")
        parts = None
        if pre.get("type") == "BertPreTokenizer" and (norm is None or norm.get("type") == "BertNormalizer"):
            parts = "lower" if norm and norm.get("lowercase") else "cased"
        # an added token is matched in the raw word before the split: a word holding one is tokenized whole
        added = tuple(token.content.lower() for token in bare.get_added_tokens_decoder().values())
        return cls(bare, prefix, suffix, budget, parts, added) if budget > 0 else None

    def encode(self, texts: list[str]) -> tuple[list[list[int]], None, int]:
        """As ``Classifier._encode``: ids, no type ids, how many texts were cut."""
        out: list[list[int] | None] = [None] * len(texts)
        truncated, budget = 0, self.budget
        todo = list(range(len(texts)))
        for chars in (*CHARS_PER_TOKEN, None):  # a tighter cut first; the texts it leaves short, a looser one
            cut = [texts[i] if chars is None else _cut_at_space(texts[i], budget * chars) for i in todo]
            short = []
            for i, text, row in zip(todo, cut, self._pieces(cut)):
                ids = list(itertools.islice(itertools.chain.from_iterable(row), budget + 1))
                if len(ids) > budget or text is texts[i]:
                    truncated += len(ids) > budget
                    out[i] = self.prefix + ids[:budget] + self.suffix
                else:
                    short.append(i)
            todo = short
            if not todo:
                break
        return out, None, truncated

    def _pieces(self, texts: list[str]) -> list[list[list[int]]]:
        """Each text's words' tokens, from the kept ones; the words not kept are tokenized together, in one call.
        (Splitting at each space char, not at runs of them, gives empty words between two spaces: no tokens.)"""
        kept = self.kept
        words = [text.replace("\t", " ").replace("\n", " ").replace("\r", " ").split(" ") for text in texts]
        pieces = [list(map(kept.get, row)) for row in words]
        lacking = [r for r, got in enumerate(pieces) if None in got]
        if lacking:
            missing = list({word for r in lacking for word, ids in zip(words[r], pieces[r]) if ids is None})
            fresh = self._tokenize(missing)
            for r in lacking:
                pieces[r] = [fresh[word] if ids is None else ids for word, ids in zip(words[r], pieces[r])]
            if len(kept) + len(fresh) > WORDS_KEPT:
                kept.clear()
            short = ((word, ids) for word, ids in fresh.items() if len(word) <= LONG_WORD)
            kept.update(itertools.islice(short, WORDS_KEPT - len(kept)))  # one huge call cannot pass the cap either
        return pieces


    def _tokenize(self, words: list[str]) -> dict[str, list[int]]:
        """Tokens of each of ``words`` (and of the new parts they were made from), in one tokenizer call. A printable
        ASCII word is made from its parts (``self.parts``), kept or tokenized: the tokenizer costs microseconds a
        word, and most new words are kept ones with other capitals or punctuation ("Said", "said,")."""
        kept, split, whole = self.kept, {}, []
        for word in words:
            if self.parts and PRINTABLE_ASCII.fullmatch(word) and not any(a in word.lower() for a in self.added):
                split[word] = ASCII_PARTS.findall(word.lower() if self.parts == "lower" else word)
            else:
                whole.append(word)
        asked = whole + list({part for parts in split.values() for part in parts if part not in kept})
        fresh = dict(zip(asked, (e.ids for e in self.tokenizer.encode_batch_fast(asked, add_special_tokens=False))))
        for word, parts in split.items():
            fresh[word] = [i for part in parts for i in (fresh[part] if part in fresh else kept[part])]
        return fresh


def _cuts_at_spaces(tokenizer) -> bool:
    """Whether cutting a text at a space leaves its tokens before the cut unchanged: the pre-tokenizer splits at
    every space and the normaliser works character by character (BERT's WordPiece tokenizers)."""
    pre = type(getattr(tokenizer, "pre_tokenizer", None)).__name__
    norm = type(getattr(tokenizer, "normalizer", None)).__name__
    if pre not in ("BertPreTokenizer", "Whitespace", "WhitespaceSplit") or norm not in ("BertNormalizer", "NoneType"):
        return False
    # added tokens are matched in the raw text before the split: one that holds a space could be cut in two
    added = getattr(tokenizer, "get_added_tokens_decoder", dict)()
    return not any(any(c.isspace() for c in token.content) for token in added.values())


def _cut_at_space(text: str, limit: int) -> str:
    """``text`` itself when at most ``limit`` characters long (the same object), else cut at its last space
    (any of ``SPACE_CHARS``: a text of lines has no other) before ``limit`` (the whole text when there is none)."""
    if len(text) <= limit:
        return text
    space = max(text.rfind(c, 0, limit) for c in SPACE_CHARS)
    return text[:space] if space > 0 else text


def _batching(path: Path) -> str:
    """One of ``BATCHING`` for the ONNX file at ``path``, from the op types it holds. They are plain strings in
    the protobuf, so a byte search finds them without the onnx package (a name that merely holds one of these
    words costs speed only, never a different answer)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as graph:
        if any(graph.find(op) >= 0 for op in DYNAMIC_OPS):
            return "one text"
        return "same length" if any(graph.find(op) >= 0 for op in STATIC_OPS) else "padded"


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

