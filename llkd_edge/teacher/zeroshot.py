"""The encoder teacher (``--teacher encoder``): the packaged sentence encoder (all-MiniLM-L6-v2) as a zero-shot
classifier, a second teacher that costs milliseconds a text where the LLM costs a second, and whose mistakes
differ from the LLM's (so pooling the two, ``--teacher gemma3-270m,encoder``, can beat either).

Each label gets a prototype: the mean of the unit embeddings of its word in ``TEMPLATES`` ("a text about
{word}", ...; averaging the templates is steadier than choosing one, as with CLIP's prompt ensembles) and of
its few-shot examples, if any. A text's label distribution is the softmax of its cosine with each prototype
divided by ``TEMPERATURE``. There is no contextual calibration: an encoder has no answer-word bias to divide
out, and on the built-in sets dividing by the content-free inputs' distribution lowered macro-F1 on four of
five; distill's pool calibration applies as to any teacher. All of a text's probability is on the labels
(label-token mass 1).

It implements ``backend.TeacherBackend`` and labels into the store under its own key (the encoder's weights'
sha256 plus the prompt's hash), so resume, ``--gold``, budgets, the probe and the health figures work on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from importlib import metadata

import numpy as np

from ..config import ScoringConfig, TeacherConfig, stable_hash
from ..distributions import entropy
from ..files import one_line
from ..registry import ModelFile, file_sha256
from ..store import LabelRow, ScoringKey
from .encoder import ENCODER, Encoder

NAME = "encoder"  # the --teacher name
TEMPLATES = ("{word}", "a text about {word}", "This text is about {word}.", "{task}: {word}")
TEMPERATURE = 0.02  # cosines differ by hundredths between labels: this gives LLM-like confidences
MAX_TOKENS = 256  # the encoder's trained length


class EncoderTeacher:
    """The sentence encoder as a zero-shot teacher (``backend.TeacherBackend``; not a ``Writer``)."""

    members = None
    retried_batches = 0
    prompt_style = "encoder"
    content_free = None  # no contextual calibration (module docstring)

    def __init__(self, scoring: ScoringConfig, config: TeacherConfig | None = None):
        self.config = config or TeacherConfig(model=NAME)
        self._encoder = Encoder(ENCODER)
        weights = sorted(self._encoder.folder.glob("*.safetensors")) or sorted(self._encoder.folder.glob("*.bin"))
        digest = stable_hash([file_sha256(w) for w in weights])
        self.model = ModelFile(NAME, self._encoder.folder, digest, "encoder", "Apache-2.0 (all-MiniLM-L6-v2)")
        self.evaluations = 0
        self.use(scoring)

    def use(self, scoring: ScoringConfig) -> None:
        self.scoring = scoring
        self._max_tokens = min(scoring.max_text_tokens, MAX_TOKENS)
        descriptions = self.label_tokens
        flat = [d for ds in descriptions for d in ds]
        vectors = self._encoder.embed(flat, self._max_tokens) if flat else np.zeros((0, 1))
        prototypes, start = [], 0
        for ds in descriptions:
            mean = vectors[start : start + len(ds)].mean(axis=0)
            prototypes.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
            start += len(ds)
        self._prototypes = np.stack(prototypes)
        self.key = ScoringKey(self.model.sha256, stable_hash(self._provenance()))

    @property
    def label_tokens(self) -> list[list[str]]:
        """Each label's descriptions: its word in every template, then its few-shot examples."""
        s = self.scoring
        task = s.task.rstrip(".?!: ")
        out = [[t.format(word=w, task=task) for t in TEMPLATES] for w in s.labels.verbalisers]
        for text, label in s.few_shot:
            out[s.labels.index(label)].append(one_line(text, limit=None))
        return out

    def _provenance(self) -> dict:
        s = self.scoring
        return {"encoder": ENCODER, "teacher_sha256": self.model.sha256, "labels": list(s.labels.names),
                "verbalisers": list(s.labels.verbalisers), "descriptions": self.label_tokens,
                "temperature": TEMPERATURE, "max_text_tokens": self._max_tokens, "pooling": "mean, unit length"}

    @property
    def details(self) -> dict:
        return {**self._provenance(), "teacher": NAME, "teacher_licence": self.model.licence, "task": self.scoring.task,
                "answer_cue": self.scoring.answer_cue, "prompt_style": self.prompt_style, "calibrate": False,
                "transformers": metadata.version("transformers"), "torch": metadata.version("torch")}

    @property
    def prompt(self) -> str:
        return (f"{ENCODER} embeddings: cosine of {{text}} with each label's mean embedding of "
                f"{' | '.join(TEMPLATES)} (and its examples), over {TEMPERATURE}, softmax")

    def score(self, texts: Sequence[str]) -> list[LabelRow]:
        if not texts:
            return []
        cleaned = [one_line(t, limit=None) for t in texts]
        lengths = [len(ids) for ids in self._encoder.tokenizer(cleaned, verbose=False)["input_ids"]]
        logits = self._encoder.embed(cleaned, self._max_tokens) @ self._prototypes.T / TEMPERATURE
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        self.evaluations += len(texts)
        ent = entropy(probs)
        names = self.scoring.labels.names
        return [LabelRow(text=text, probs=tuple(float(p) for p in probs[i]), label=names[int(probs[i].argmax())],
                         confidence=float(probs[i].max()), entropy=float(ent[i]), label_mass=1.0, n_tokens=lengths[i],
                         truncated=lengths[i] > self._max_tokens)
                for i, text in enumerate(texts)]

    def score_batches(self, batches: Iterable[list[str]]) -> Iterator[list[LabelRow]]:
        for texts in batches:
            yield self.score(texts)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        rows = self.score(texts)
        return np.array([r.probs for r in rows]).reshape(len(rows), len(self.scoring.labels.names))

    def close(self) -> None:
        self._encoder = None
