"""The served teacher: an LLM behind an OpenAI-compatible HTTP server (llama.cpp's ``llama-server``,
llama-cpp-python's server, vLLM, Ollama, a hosted endpoint), asked through the same ``TeacherBackend`` as
the in-process one, so ``label``, ``distill`` and ``bench`` work with it unchanged.

``--teacher openai:http://host:port/v1`` (read, with the HTTP layer, in ``endpoint.py``) (``#model`` appended where the server serves several) asks through
``/v1/completions`` with the same plain prompt as the in-process teacher; ``openai-chat:...`` asks through
``/v1/chat/completions``, the text in one user message, for servers and models that only chat. The API key
comes from ``LLKD_EDGE_API_KEY`` (else ``OPENAI_API_KEY``), never from the command line or a stored file.

Distributions, not sampled text: each text is one request for one token at temperature 0 with the next-token
log-probs (``logprobs``/``top_logprobs``), as many as the server gives (1000, else 20, else 5, probed once). A
label's raw log-prob is the summed probability of the returned tokens that are the first tokens of its
verbaliser's variants (``prompts.variants``), found with the server's tokenizer (llama-cpp-python's
``/extras/tokenize``, or ``/tokenize`` as llama-server and vLLM offer it); without one, a returned token counts
for a label when it is a non-blank start of one of its variants and of no other label's. A label none of whose
tokens is among those returned gets the lowest returned log-prob (an upper bound on its own), and the text
is counted (``floored``). ``logit_bias`` is not sent: llama.cpp's servers and vLLM compute the log-probs before
the bias, so it cannot bring a label into the returned ones, and a server that applies it first would shift
them. Calibration, prompt choice, ``--gold`` and ensembles work on these rows as on local ones.

Throughput comes from the server: ``--parallel`` requests in flight (default ``IN_FLIGHT``), so its own
batching and prefix cache do the work. Requests that meet a timeout, a dropped connection, 429 or 5xx are sent
again with exponential backoff (tenacity), up to ``ATTEMPTS`` times. The store keys rows by the model name
the server reports plus a fingerprint (the top log-probs of ``PROBES``, rounded), so a server that swapped its
model behind the same name gets a new key, never mixed rows. A server that cannot be used (unreachable, a
wrong URL, a refused key, not JSON, no log-probs, none of the label tokens) is one line before any text is
asked. The texts are cut to ``--max-text-tokens`` with the server's tokenizer (else at ``CHARS_PER_TOKEN``
characters a token).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata

import numpy as np

from ..config import DEFAULT_CONTENT_FREE, ScoringConfig, TeacherConfig, stable_hash
from ..distributions import (
    LabelClash,
    calibrated_distribution,
    entropy,
    label_token_ids,
)
from ..errors import LabelSpecError, UserError
from ..files import one_line
from ..registry import ModelFile
from ..store import LabelRow, ScoringKey
from .endpoint import (
    ROUTES,
    Failed,
    Http,
    NotFound,
    Refused,
    api_key,
    check_url,
    parse_spec,
)
from .prompts import TEXT_PLACEHOLDER, instruction, variants

IN_FLIGHT = 8  # requests in flight when --parallel is 0
TOP_LOGPROBS = (1000, 20, 5)  # asked in turn at start-up until the server accepts one
CHARS_PER_TOKEN = 4  # the text budget in characters where the server offers no tokenizer
# the fingerprint's prompts: open-ended, so that two models rarely share their five most likely next tokens on all
PROBES = ("Once upon a time, there", "My favourite thing about the weekend is", "The report said that",
          "In 1887, the", "Here is a list of words:")
NEEDS_LOGPROBS = "start llama-cpp-python's server with --logits_all true; vLLM, llama-server: any recent version"


def _logprob(value) -> float | None:
    """A log-prob from a JSON value: a finite number <= 0, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if np.isfinite(value) and value <= 0 else None


def _dig(answer: dict, *path):
    """``answer[path[0]][path[1]]...``, or None where a step is missing."""
    for step in path:
        try:
            answer = answer[step]
        except (KeyError, IndexError, TypeError):
            return None
    return answer


class ServerTeacher:
    """A teacher behind an OpenAI-compatible server (``backend.TeacherBackend``; not a ``Writer``)."""

    members = None  # one teacher, not an ensemble

    def __init__(self, name: str, scoring: ScoringConfig, config: TeacherConfig | None = None):
        spec = parse_spec(name)
        if spec is None:
            raise ValueError(f"not a server teacher: {name!r}")
        check_url(spec)
        self.spec = spec
        self.config = config or TeacherConfig(model=name)
        self.parallel = self.config.parallel or IN_FLIGHT
        self.prompt_style = spec.style
        self.floored = 0  # texts where some label had none of its tokens among the returned log-probs
        self.evaluations = 0
        self._lock = threading.Lock()
        self._bos: list[int] = []  # what the tokenizer puts before every text (llama-cpp-python's adds BOS)
        self._http = Http(spec.url, api_key(spec.url))
        try:
            self.model_id = self._model_id()
            self.top_logprobs = self._probe_top_logprobs()
            self._tokenizer = self._find_tokenizer()
            self._signature, self.fingerprint = self._fingerprint()
        except BaseException:
            self._http.close()
            raise
        identity = hashlib.sha256(json.dumps({"server_model": self.model_id, "top_tokens": self._signature}).encode())
        scheme = next(k for k, v in ROUTES.items() if v == spec.style)
        # named as --teacher names it (so a run's record opens it again), keyed by what the server serves
        self.model = ModelFile(f"{scheme}:{spec.url}#{self.model_id}", None, identity.hexdigest(), spec.style,
                               "as the server's model's")
        self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="llkd-edge-server")
        try:
            self.use(scoring)
        except BaseException:
            self.close()
            raise

    @property
    def retried_batches(self) -> int:
        """Requests sent again after a timeout, a dropped connection, 429 or 5xx."""
        return self._http.retried

    # ---------------------------------------------------------------------------------- start-up checks
    def _model_id(self) -> str:
        try:
            answer = self._http.request("GET", "/models", retry=False)
        except NotFound as exc:
            raise UserError(str(exc)) from None
        listed = answer.get("data")
        ids = [m.get("id") for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
        ids = [i for i in ids if isinstance(i, str) and i]
        if self.spec.model:
            if ids and self.spec.model not in ids:
                raise UserError(f"the teacher server at {self.spec.url} does not serve {self.spec.model!r}; it serves "
                                f"{', '.join(ids[:5])}")
            return self.spec.model
        if len(ids) != 1:
            listed = f"it serves {', '.join(ids[:5])}" if ids else "it lists no models"
            raise UserError(f"name the model in --teacher: openai:{self.spec.url}#<model> ({listed})")
        return ids[0]

    def _ask(self, prompt: str, top: int, retry: bool | str = True) -> dict[str, float]:
        """One token after ``prompt`` at temperature 0 -> {token: log-prob} for the ``top`` most likely."""
        if self.prompt_style == "plain":
            body = {"model": self.model_id, "prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": top}
            answer = self._http.request("POST", "/completions", body, retry)
        else:
            body = {"model": self.model_id, "messages": [{"role": "user", "content": prompt}], "max_tokens": 1,
                    "temperature": 0, "logprobs": True, "top_logprobs": top}
            answer = self._http.request("POST", "/chat/completions", body, retry)
        legacy = _dig(answer, "choices", 0, "logprobs", "top_logprobs", 0)  # completions: {token: log-prob}
        listed = _dig(answer, "choices", 0, "logprobs", "content", 0, "top_logprobs")  # chat (and llama-server)
        pairs = (list(legacy.items()) if isinstance(legacy, dict) else
                 [(t.get("token"), t.get("logprob")) for t in listed if isinstance(t, dict)] if isinstance(listed, list)
                 else [])
        got = {t: lp for t, lp in ((t, _logprob(lp)) for t, lp in pairs) if isinstance(t, str) and lp is not None}
        if got:
            return got
        route = "/completions" if self.prompt_style == "plain" else "/chat/completions"
        raise UserError(f"the teacher server at {self.spec.url} returns no log-probs from {route} for "
                        f"{self.model_id!r}; the teacher needs them: {NEEDS_LOGPROBS}")

    def _probe_top_logprobs(self) -> int:
        """The most log-probs per answer the server gives, of ``TOP_LOGPROBS``."""
        for top in TOP_LOGPROBS:
            try:
                self._ask(PROBES[0], top, retry="busy")
                return top
            except NotFound as exc:
                raise UserError(str(exc)) from None
            except (Refused, Failed) as exc:
                if isinstance(exc, Refused) and top != TOP_LOGPROBS[-1]:
                    continue  # too many asked for: fewer
                raise UserError(f"the teacher server at {self.spec.url} gives no log-probs ({one_line(exc, limit=160)}); "
                                f"the teacher needs them: {NEEDS_LOGPROBS}") from None
        raise AssertionError("unreachable")

    def _find_tokenizer(self) -> str | None:
        """Which tokenizer route the server offers: llama-cpp-python's, llama-server's/vLLM's, or none."""
        for route in ("//extras/tokenize", "//tokenize"):
            try:
                answer = self._http.request("POST", route, self._tokenize_body(route, "Hello"), retry=False)
            except UserError:
                continue
            if isinstance(answer, dict) and isinstance(answer.get("tokens"), list) and answer["tokens"]:
                if route == "//extras/tokenize":
                    self._bos = self._http.request("POST", route, {"input": ""}).get("tokens") or []
                return route
        return None

    def _tokenize_body(self, route: str, text: str) -> dict:
        if route == "//extras/tokenize":
            return {"input": text}
        return {"content": text, "prompt": text, "add_special": False, "add_special_tokens": False, "model": self.model_id}

    def _fingerprint(self) -> tuple[list, list]:
        """The model's signature: for each of ``PROBES``, its five most likely next tokens as a set (the identity:
        the noise of a GPU server's batching moves log-probs by thousandths, so they are left out of it and a
        near tie can only matter at the fifth place), and with their log-probs (two decimals, recorded)."""
        identity, recorded = [], []
        for prompt in PROBES:
            top = sorted(self._ask(prompt, 5).items(), key=lambda kv: -kv[1])[:5]
            identity.append(sorted(t for t, _ in top))
            recorded.append([[t, round(lp, 2)] for t, lp in top])
        return identity, recorded

    # ---------------------------------------------------------------------------------- tokens
    def _tokens(self, text: str) -> list[int]:
        answer = self._http.request("POST", self._tokenizer, self._tokenize_body(self._tokenizer, text))
        ids = answer.get("tokens")
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise UserError(f"the teacher server at {self.spec.url} answered {self._tokenizer[1:]} without token ids")
        return ids[len(self._bos):] if self._bos and ids[: len(self._bos)] == self._bos else ids

    def _text(self, ids: list[int]) -> str | None:
        """The text of ``ids``, or None where it is not whole (a cut inside a character)."""
        route = "//extras/detokenize" if self._tokenizer == "//extras/tokenize" else "//detokenize"
        try:  # not retried: llama-cpp-python answers 500 for a cut inside a character, every time
            answer = self._http.request("POST", route, {"tokens": ids, "model": self.model_id}, retry=False)
        except (Failed, Refused):
            return None
        text = answer.get("text", answer.get("content", answer.get("prompt")))
        if not isinstance(text, str):
            raise UserError(f"the teacher server at {self.spec.url} answered {route[1:]} without the text")
        return None if text.endswith("\ufffd") else text

    def _cut(self, text: str) -> tuple[str, int, bool]:
        """The text as the prompt holds it (whitespace collapsed, cut to the budget), its length in tokens, and
        whether it was cut; as the in-process teacher cuts it (``llama.Teacher._text_tokens``)."""
        text = " " + one_line(text, limit=None)
        budget = self.scoring.max_text_tokens
        if self._tokenizer is None:
            n = -(-len(text) // CHARS_PER_TOKEN)
            return text[: budget * CHARS_PER_TOKEN], n, n > budget
        ids = self._tokens(text)
        if len(ids) <= budget:
            return text, len(ids), False
        for end in range(budget, max(budget - 4, 0), -1):  # a cut inside a character: a token less (UTF-8: <= 4)
            cut = self._text(ids[:end])
            if cut is not None:
                return cut, len(ids), True
        raise UserError(f"the teacher server at {self.spec.url} cannot turn the first {budget} tokens of a text back "
                        "into text")

    def _label_pieces(self) -> list[list[str]]:
        """For each label, the token strings that count for it: the first tokens of its variants (a token two
        labels share dropped), or without a tokenizer the variants themselves (matched by prefix)."""
        labels = self.scoring.labels
        lead = " " if self.prompt_style == "plain" else ""
        firsts: list[dict[str, str]] = []
        for word in labels.verbalisers:
            forms = {}
            for v in variants(word):
                if self._tokenizer is None:
                    forms[v] = v
                else:
                    ids = self._tokens(v)
                    piece = self._text(ids[:1]) if ids else None
                    if piece:  # a first token that is part of a character is left out, as a missing one
                        forms[v] = piece
            firsts.append(forms)
        try:
            return label_token_ids(firsts, [lead + w for w in labels.verbalisers])
        except LabelClash as clash:
            a, b = labels.names[clash.first], labels.names[clash.second]
            example = ",".join(f"{n}=<word>" if n in (a, b) else n for n in labels.names)
            what = (f"label {a!r} gives this teacher no token to score" if clash.token is None else
                    f"labels {a!r} and {b!r} both start with the token {clash.token!r} for this teacher")
            raise LabelSpecError(f"{what}; give them verbalisers that start differently, e.g. --labels "
                                 f"\"{example}\"") from None

    def _matches(self, top: dict[str, float]) -> list[list[float]]:
        """The returned log-probs that count for each label."""
        if self._tokenizer is not None:
            return [[top[p] for p in pieces if p in top] for pieces in self.label_tokens]
        out: list[list[float]] = [[] for _ in self.label_tokens]
        for token, lp in top.items():
            if not token.strip():
                continue
            # a token that is a whole variant belongs to that label (" sport" with sport and sports), else to the
            # one label a variant of which it starts
            owners = ([k for k, forms in enumerate(self.label_tokens) if token in forms] or
                      [k for k, forms in enumerate(self.label_tokens) if any(f.startswith(token) for f in forms)])
            if len(owners) == 1:
                out[owners[0]].append(lp)
        return out

    # ---------------------------------------------------------------------------------- prompt
    def use(self, scoring: ScoringConfig) -> None:
        """Ask with another prompt or label set from now on; ``key`` follows."""
        self.scoring = scoring
        full = instruction(scoring, lambda text: self._cut(text)[0])
        if self.prompt_style == "plain":
            full = f"{full}\n{scoring.answer_cue}"
        self._prefix, self._suffix = full.split(TEXT_PLACEHOLDER)
        self.label_tokens = self._label_pieces()
        self.key = ScoringKey(self.model.sha256, stable_hash(self._provenance()))
        # The content-free inputs, asked now: calibration needs them, and they show (before any text is asked)
        # whether the model answers with the label words at all.
        asked = [self._raw(self._cut(t)[0])[::2] for t in (scoring.content_free or DEFAULT_CONTENT_FREE)]
        if self.top_logprobs >= 100 and not any(found for _, found in asked):  # among 20, a label may well be missing
            raise LabelSpecError(f"{self.model.name} returns none of the label words' tokens "
                                 f"({', '.join(scoring.labels.verbalisers)}) among its top {self.top_logprobs} next "
                                 "tokens after this prompt: give words it answers with (--labels name=word) or a --task "
                                 "that asks for them")
        raw = np.stack([r for r, _ in asked])
        shifted = np.exp(raw - raw.max(axis=-1, keepdims=True))
        self._content_free = (shifted / shifted.sum(axis=-1, keepdims=True)).mean(axis=0) if scoring.calibrate else None

    def _provenance(self) -> dict:
        s = self.scoring
        return {
            "prompt_prefix": self._prefix,
            "prompt_suffix": self._suffix,
            "labels": list(s.labels.names),
            "verbalisers": list(s.labels.verbalisers),
            "label_tokens": self.label_tokens,
            "calibrate": s.calibrate,
            "content_free": list(s.content_free) if s.calibrate else [],
            "max_text_tokens": s.max_text_tokens,
            "few_shot": [list(x) for x in s.few_shot],
            "teacher_sha256": self.model.sha256,
            "route": self.prompt_style,
            "tokenizer": self._tokenizer or f"none ({CHARS_PER_TOKEN} characters a token)",
        }

    @property
    def details(self) -> dict:
        return {
            **self._provenance(),
            "teacher": self.model.name,
            "server": self.spec.url,
            "server_model": self.model_id,
            "fingerprint": self.fingerprint,
            "top_logprobs": self.top_logprobs,
            "task": self.scoring.task,
            "answer_cue": self.scoring.answer_cue,
            "prompt_style": self.prompt_style,
            "content_free_distribution": None if self.content_free is None else self.content_free.tolist(),
            "parallel": self.parallel,
            "floored_texts": self.floored,
            "httpx": metadata.version("httpx"),
        }

    @property
    def prompt(self) -> str:
        return self._prefix + "{text}" + self._suffix

    @property
    def content_free(self) -> np.ndarray | None:
        """Shape (K,): the mean label distribution on content-free inputs (None without calibration)."""
        return self._content_free

    # ---------------------------------------------------------------------------------- scoring
    def _raw(self, piece: str) -> tuple[np.ndarray, float, int]:
        """Raw label log-probs (K,) for the text ``piece``, the probability mass on the returned label tokens, and
        how many labels had a token among those returned (the others get the lowest returned log-prob)."""
        try:
            top = self._ask(self._prefix + piece + self._suffix, self.top_logprobs)
        except Refused as exc:
            raise UserError(f"the teacher server at {self.spec.url} refused a text ({one_line(exc, limit=120)}); if "
                            "its context is smaller than the prompt and --max-text-tokens, give fewer tokens") from None
        floor = min(top.values())
        found = self._matches(top)
        raw = np.array([np.logaddexp.reduce(lps) if lps else floor for lps in found])
        mass = float(sum(np.exp(lp) for lps in found for lp in lps))
        with self._lock:
            self.evaluations += 1
        return raw, mass, sum(bool(lps) for lps in found)

    def _one(self, text: str) -> tuple[np.ndarray, float, int, int, bool]:
        piece, n_tokens, cut = self._cut(text)
        raw, mass, found = self._raw(piece)
        return raw, mass, found, n_tokens, cut

    def score(self, texts: Sequence[str]) -> list[LabelRow]:
        if not texts:
            return []
        results = list(self._pool.map(self._one, texts))
        raws = np.stack([r[0] for r in results])
        with self._lock:
            self.floored += sum(r[2] < len(self.scoring.labels.names) for r in results)
        probs = calibrated_distribution(raws, self.content_free)
        ent = entropy(probs)
        names = self.scoring.labels.names
        return [LabelRow(text=text, probs=tuple(float(p) for p in probs[i]), label=names[int(np.argmax(probs[i]))],
                         confidence=float(probs[i].max()), entropy=float(ent[i]),
                         label_mass=results[i][1], n_tokens=results[i][3], truncated=results[i][4])
                for i, text in enumerate(texts)]

    def score_batches(self, batches: Iterable[list[str]]) -> Iterator[list[LabelRow]]:
        for texts in batches:
            yield self.score(texts)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        rows = self.score(texts)
        return np.array([r.probs for r in rows]).reshape(len(rows), len(self.scoring.labels.names))

    def close(self) -> None:
        self._http.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
