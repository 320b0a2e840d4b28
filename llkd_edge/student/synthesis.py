"""The pure half of ``evolve`` (EvoKD, Liu et al. 2024): no model, store or file is touched here.

analyse (the student's weaknesses on the validation texts) -> plan_requests (how many texts of which
label, aimed at which confusion) -> request_prompt (the instruction the teacher writes from) ->
generation_schema / parse_texts (the JSON the teacher must produce, read back) -> screen (too short,
copies of the prompt, near-duplicates) -> verify (the teacher's own label must agree, confidently).
``round_summary`` turns a round's records into its figures. The loop that calls these is evolve.py.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from ..distributions import entropy
from ..metrics import classification_scores
from ..store import LabelRow

VERDICTS = ("accepted", "teacher_disagrees", "low_confidence", "duplicate", "copies_prompt", "too_short")
SHOWN_WORDS = 60  # a text shown in a prompt is cut to this many words


# ------------------------------------------------------------------------------------ weaknesses


@dataclass(frozen=True)
class Weakness:
    """Where a student goes wrong on the validation texts (reference labels: gold or the teacher's)."""

    labels: list[str]
    support: list[int]  # validation texts per reference label
    error_rate: list[float | None]  # 1 - recall per label; None where the label has no validation text
    confusions: list[tuple[str, str, int]]  # (reference, predicted, count), most frequent first
    mistakes: list[dict]  # {"text", "label", "predicted", "confidence"}: wrong, most confident first
    accuracy: float
    macro_f1: float

    def worst_confusion(self, label: str) -> str | None:
        """The label the student most often says for texts of ``label`` (None when it never errs there)."""
        return next((p for r, p, _ in self.confusions if r == label), None)


def analyse(texts: Sequence[str], reference: Sequence[str], probs: np.ndarray, labels: Sequence[str],
            keep: int = 60) -> Weakness:
    """The student's probabilities, shape (N, K), against reference labels -> its weaknesses."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(texts), len(labels)) or len(reference) != len(texts):
        raise ValueError(f"{len(texts)} texts and {len(reference)} references need probs of shape "
                         f"({len(texts)}, {len(labels)}), got {probs.shape}")
    if not texts:
        raise ValueError("no validation texts to analyse")
    predicted = [labels[j] for j in probs.argmax(axis=1)]
    support = Counter(reference)
    wrong = Counter((r, p) for r, p in zip(reference, predicted) if r != p)
    error_rate = [None if not support[lab] else sum(c for (r, _), c in wrong.items() if r == lab) / support[lab]
                  for lab in labels]
    confusions = sorted(((r, p, c) for (r, p), c in wrong.items()), key=lambda x: (-x[2], x[0], x[1]))
    order = np.argsort(-probs.max(axis=1), kind="stable")
    mistakes = [{"text": texts[i], "label": reference[i], "predicted": predicted[i],
                 "confidence": round(float(probs[i].max()), 4)} for i in order if reference[i] != predicted[i]]
    scores = classification_scores(list(reference), predicted, labels)
    return Weakness(list(labels), [support[lab] for lab in labels], error_rate, confusions, mistakes[:keep],
                    scores["accuracy"], scores["macro_f1"])


# ------------------------------------------------------------------------------------ requests


@dataclass(frozen=True)
class Request:
    """Ask for ``n`` texts of ``label``; ``versus`` is the label the student mistakes it for (a hard request)."""

    label: str
    n: int
    versus: str | None = None


def _largest_remainder(total: int, weights: np.ndarray) -> list[int]:
    share = total * weights / weights.sum()
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def plan_requests(weakness: Weakness, per_round: int, per_request: int, hard_share: float) -> list[Request]:
    """Split ``per_round`` texts over the labels by error rate (every label keeps a small share), then each
    label's texts into hard ones (aimed at its worst confusion) and easy ones, ``per_request`` per request."""
    rates = [r for r in weakness.error_rate if r is not None]
    unknown = float(np.mean(rates)) if rates else 0.5  # a label with no validation text: assume the average
    weights = np.array([unknown if r is None else r for r in weakness.error_rate]) + 0.1
    requests = []
    for label, quota in zip(weakness.labels, _largest_remainder(per_round, weights)):
        versus = weakness.worst_confusion(label)
        hard = round(quota * hard_share) if versus else 0
        for n, target in ((hard, versus), (quota - hard, None)):
            while n > 0:
                requests.append(Request(label, min(n, per_request), target))
                n -= per_request
    return requests


def _shown(text: str) -> str:
    words = text.split()
    return " ".join(words[:SHOWN_WORDS]) + (" ..." if len(words) > SHOWN_WORDS else "")


def request_prompt(request: Request, weakness: Weakness, task: str, verbalisers: dict[str, str],
                   style_examples: Sequence[str], n_examples: int) -> tuple[str, list[str]]:
    """The instruction for one request, and the excerpts it shows, as shown (a generated text must not copy
    them; the excerpt, not the whole text, is what a copy resembles).

    ``verbalisers`` maps label names to the words the teacher knows them by; ``style_examples`` are texts of
    the request's label to show when the student made no mistake worth showing.
    """
    word = verbalisers[request.label]
    listing = ", ".join(verbalisers.values())
    lines = [f"You are writing training examples for a text classifier. The task: {task.rstrip('.?!:')}. "
             f"The labels are: {listing}.", ""]
    trouble = []
    for label, rate in zip(weakness.labels, weakness.error_rate):
        if rate:
            versus = weakness.worst_confusion(label)
            trouble.append(f"- {verbalisers[label]}: {rate:.0%} wrong, most often taken for {verbalisers[versus]}")
    if trouble:
        lines += ["A small student classifier trained on this task still makes these mistakes on a validation set:",
                  *trouble, ""]
    if request.versus:
        wanted = [m for m in weakness.mistakes if m["label"] == request.label and m["predicted"] == request.versus]
    else:
        wanted = [m for m in weakness.mistakes if m["label"] == request.label]
    shown = [_shown(m["text"]) for m in wanted[:n_examples]]
    if shown:
        lines.append(f"Texts whose correct label is {word} but that the student got wrong:")
        for m, excerpt in zip(wanted, shown):
            lines.append(f'- "{excerpt}" (the student said {verbalisers[m["predicted"]]})')
    else:
        shown = [_shown(t) for t in style_examples[:n_examples]]
        if shown:
            lines.append(f"Texts whose correct label is {word}:")
            lines += [f'- "{excerpt}"' for excerpt in shown]
    lines.append("")
    if request.versus:
        other = verbalisers[request.versus]
        lines.append(f"Write {request.n} new texts whose correct label is clearly {word}, but that a weak "
                     f"classifier could mistake for {other}: they may share words or themes with {other}, "
                     f"while what they are about is {word}.")
    else:
        lines.append(f"Write {request.n} new, typical texts whose correct label is clearly {word}.")
    lines.append("Each text is 2 to 4 sentences in the style of the texts of this task, about a different "
                 "subject from the others; do not copy the examples above and do not name the label.")
    lines.append('Answer with JSON only: {"texts": ["...", ...]}')
    return "\n".join(lines), shown


CHARS_PER_TOKEN = 3  # a safe floor for English prose (about 4 on average)


def text_chars(n: int, max_new_tokens: int, min_chars: int = 40, cap: int = 700) -> int:
    """The longest text the grammar allows, so that ``n`` of them fit ``max_new_tokens``: an answer then ends
    inside its budget and parses, instead of being cut off at the token limit."""
    return max(2 * min_chars, min(cap, max_new_tokens * CHARS_PER_TOKEN // n - 16))


def generation_schema(n: int, min_chars: int = 40, max_chars: int = 700) -> dict:
    """The JSON schema (and so the llama.cpp grammar) of an answer: exactly ``n`` texts."""
    text = {"type": "string", "minLength": min_chars, "maxLength": max_chars}
    return {"type": "object", "properties": {"texts": {"type": "array", "items": text, "minItems": n, "maxItems": n}},
            "required": ["texts"], "additionalProperties": False}


def parse_texts(raw: str, n: int) -> list[str]:
    """The ``n`` texts of a generation; ValueError saying why when it is not that."""
    try:
        answer = json.loads(raw, strict=False)  # a raw newline or tab inside a text is no reason to drop it
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc.args[0][:60]})") from None
    texts = answer.get("texts") if isinstance(answer, dict) else None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError('no "texts" list of strings')
    texts = [" ".join(t.split()) for t in texts]
    if len(texts) != n:
        raise ValueError(f"{len(texts)} texts, asked for {n}")
    return texts


# ------------------------------------------------------------------------------------ screening


def screen(candidates: Sequence[str], shown: Sequence[Sequence[str]], references: Sequence[str], min_words: int,
           threshold: float) -> list[str | None]:
    """A verdict per candidate before the teacher sees it: None (keep) or why it is dropped.

    ``shown[i]`` are the texts candidate i's prompt showed ("copies_prompt" when it is as close as
    ``threshold`` to one); ``references`` are texts it must not repeat (pool, validation, earlier synthetic):
    a candidate that close to one of them, or to an earlier kept candidate, is a "duplicate". Closeness is
    the cosine similarity of TF-IDF character 3-5-gram vectors, so exact copies score 1.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(shown) != len(candidates):
        raise ValueError(f"{len(candidates)} candidates but {len(shown)} lists of shown texts")
    verdicts: list[str | None] = [None] * len(candidates)
    if not candidates:
        return verdicts
    shown_texts = sorted({t for group in shown for t in group})
    vectoriser = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), lowercase=True, sublinear_tf=True)
    matrix = vectoriser.fit_transform([*candidates, *references, *shown_texts])
    cand = matrix[: len(candidates)]
    ref = matrix[len(candidates) : len(candidates) + len(references)]
    shown_vecs = matrix[len(candidates) + len(references) :]
    shown_index = {t: i for i, t in enumerate(shown_texts)}
    ref_max = (cand @ ref.T).max(axis=1).toarray().ravel() if len(references) else np.zeros(len(candidates))
    among = (cand @ cand.T).toarray()
    kept: list[int] = []
    for i, text in enumerate(candidates):
        if len(text.split()) < min_words:
            verdicts[i] = "too_short"
        elif shown[i] and (cand[i] @ shown_vecs[[shown_index[t] for t in shown[i]]].T).max() >= threshold:
            verdicts[i] = "copies_prompt"
        elif ref_max[i] >= threshold or any(among[i, j] >= threshold for j in kept):
            verdicts[i] = "duplicate"
        else:
            kept.append(i)
    return verdicts


def verify(intended: Sequence[str], rows: Sequence[LabelRow], min_confidence: float) -> list[str | None]:
    """The teacher's verdict per scored text: None (accept), "teacher_disagrees" or "low_confidence"."""
    out: list[str | None] = []
    for label, row in zip(intended, rows, strict=True):
        if row.label != label:
            out.append("teacher_disagrees")
        elif row.confidence < min_confidence:
            out.append("low_confidence")
        else:
            out.append(None)
    return out


class RoundRecord(TypedDict):
    """rounds/NN/round.json: one round's figures (``round_summary`` plus the scores and training)."""

    round: int
    requests: int
    texts_asked: int
    attempts: int
    failed_attempts: int
    timeouts: int
    requests_without_texts: int
    generated: int
    accepted: int
    acceptance_rate: float | None
    verdicts: dict[str, int]
    accepted_per_label: dict[str, int]
    hard_accepted: int
    new_tokens: int
    tokens_per_second: float | None
    seconds: dict[str, float]
    synthetic_total: int  # texts kept so far, this round included
    before: dict  # the student's validation and eval scores when the round began
    after: dict  # ... and after it retrained (the same as before when nothing was kept)
    train_epochs: list[dict]


def round_summary(round_no: int, prompts, attempts, records, seconds: dict) -> dict:
    """A round's figures from its prompts, every generation attempt and every candidate's record."""
    tries = [a for group in attempts for a in group]
    verdicts = Counter(r["verdict"] for r in records)
    accepted = [r for r in records if r["verdict"] == "accepted"]
    gen_seconds = sum(a["seconds"] for a in tries)
    return {
        "round": round_no,
        "requests": len(prompts),
        "texts_asked": sum(p["request"]["n"] for p in prompts),
        "attempts": len(tries),
        "failed_attempts": sum(1 for a in tries if a["error"]),
        "timeouts": sum(1 for a in tries if a["timed_out"]),
        "requests_without_texts": sum(1 for group in attempts if not any(a["texts"] for a in group)),
        "generated": len(records),
        "accepted": len(accepted),
        "acceptance_rate": round(len(accepted) / len(records), 4) if records else None,
        "verdicts": dict(verdicts),
        "accepted_per_label": dict(Counter(r["intended"] for r in accepted)),
        "hard_accepted": sum(1 for r in accepted if prompts[r["request_index"]]["request"]["versus"]),
        "new_tokens": sum(a["new_tokens"] for a in tries),
        "tokens_per_second": round(sum(a["new_tokens"] for a in tries) / gen_seconds, 2) if gen_seconds else None,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def synthetic_row(record: dict, labels: list[str]) -> LabelRow:
    """A kept candidate's record (its teacher distribution) as the LabelRow it trains as."""
    p = np.asarray(record["probs"], dtype=np.float64)
    return LabelRow(record["text"], tuple(record["probs"]), labels[int(p.argmax())], float(p.max()),
                    float(entropy(p[None])[0]), 0.0, 0, False)
