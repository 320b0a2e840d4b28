"""The GGUF teacher: with its helper llama_batch.py, the only module that imports llama_cpp.

``Teacher.predict_proba(texts) -> (N, K)`` reads, for each text, the model's next-token distribution
after a prompt that states the task and the labels, and turns it into a distribution over the K labels:

1. log-softmax over the whole vocabulary at the answer position;
2. a label's raw log-prob is the log of the summed probability of the first tokens of its verbaliser's
   case/space variants (" sport", "sport", " Sport", "Sport");
3. normalise over the K labels;
4. contextual calibration (Zhao et al. 2021): divide by the mean label distribution the model gives
   content-free inputs ("N/A", "", "[MASK]"), i.e. subtract the log of that mean distribution (floored,
   so a label the content-free inputs give probability 0 cannot turn a row into NaN), renormalise.

The prompt is split into a shared prefix (task, labels, few-shot examples), the text, and a short
suffix. The prefix is evaluated once; for each text the KV cache is cut back to the prefix and only the
text and suffix are evaluated, so per-text cost is the text's own tokens. The cut is checked: a model
whose cache cannot be cut back partway (recurrent or hybrid architectures) gets a full reset and the
prefix evaluated again before every text, slower but never scored on top of the previous text.

``Teacher.generate(instruction, schema)`` writes text for ``evolve``: through the model's chat template
when it has one (else as a plain completion prompt), sampled with a seed, and constrained by a llama.cpp
grammar built from a JSON schema, so a finished generation always parses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import metadata

import numpy as np

from ..config import ScoringConfig, TeacherConfig, stable_hash
from ..distributions import (
    LabelClash,
    calibrated_distribution,
    entropy,
    label_logprobs,
    label_token_ids,
    log_softmax,
)
from ..errors import LabelSpecError, MissingDependencyError, ModelError, UserError
from ..files import one_line
from ..registry import ModelFile, resolve_teacher
from ..store import LabelRow, ScoringKey
from .llama_batch import BatchedScorer, quiet_stderr
from .prompts import TEXT_PLACEHOLDER, instruction, variants

GPU_PARALLEL = 8  # texts per decode when layers are offloaded (on 2 CPU cores wider decodes gained nothing)


@dataclass(frozen=True)
class Generation:
    """One generation: the raw text, why it stopped, and what it cost."""

    text: str
    finish_reason: str  # "stop" (grammar complete, or timed out) or "length" (max_tokens reached)
    prompt_tokens: int
    new_tokens: int
    seconds: float
    timed_out: bool


# ------------------------------------------------------------------------------------------ the teacher


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependencyError(
            "llama-cpp-python is not installed: run `make setup` (it builds it with safe CPU flags)"
        ) from None
    return llama_cpp


class Teacher:
    """A loaded GGUF model that scores texts against a label set.

    Thin by design: everything around llama_cpp (store, data, CLI) talks to it only through
    ``predict_proba`` / ``score`` / ``score_batches`` and the provenance in ``key`` and ``details``; it is
    the local ``backend.TeacherBackend``.
    """

    retried_batches = 0  # a local teacher never loses a batch (the Ray pool counts the ones it resends)
    members = None  # one teacher, not an ensemble

    def __init__(self, model: ModelFile, scoring: ScoringConfig, config: TeacherConfig | None = None):
        config = config or TeacherConfig()
        llama_cpp = _llama_cpp()
        self.model = model
        self.scoring = scoring
        self.config = config
        self.evaluations = 0  # texts evaluated by the model (content-free inputs included)
        n_batch = max(512, scoring.max_text_tokens + 128)
        # Room for the instructions, every few-shot example and one text, each example at most the text budget.
        n_ctx = config.n_ctx or max(2048, n_batch, (len(scoring.few_shot) + 1) * (scoring.max_text_tokens + 16) + 512)
        can_offload = bool(llama_cpp.llama_supports_gpu_offload())
        if config.n_gpu_layers and not can_offload:
            raise UserError(
                "--n-gpu-layers was given but this llama-cpp-python build cannot offload to a GPU; "
                "rebuild it with `make setup GPU=1`"
            )
        self.n_gpu_layers = config.n_gpu_layers if config.n_gpu_layers is not None else (-1 if can_offload else 0)
        self.parallel = config.parallel or (GPU_PARALLEL if self.n_gpu_layers else 1)
        try:
            with quiet_stderr():  # llama.cpp logs to fd 2 even with verbose=False; our errors say enough
                self._llm = llama_cpp.Llama(
                    model_path=str(model.path),
                    n_ctx=n_ctx,
                    n_batch=n_batch,
                    n_ubatch=n_batch,
                    n_threads=config.n_threads,
                    n_threads_batch=config.n_threads,
                    n_gpu_layers=self.n_gpu_layers,
                    swa_full=True,  # full-size sliding-window cache: cutting back to the prefix always works
                    logits_all=False,
                    verbose=False,
                )
        except (ValueError, RuntimeError):
            raise ModelError(
                f"{model.path}: llama.cpp cannot load it (corrupt, truncated, or an unsupported architecture)"
            ) from None
        except Exception as exc:  # llama-cpp-python compiles the file's chat templates on load (in its sandbox)
            from jinja2 import TemplateError

            if not isinstance(exc, TemplateError):
                raise
            raise ModelError(f"{model.path}: its chat template cannot be used ({type(exc).__name__}: "
                             f"{one_line(exc, limit=160)})") from None
        self._n_vocab = self._llm.n_vocab()
        self._llama_cpp = llama_cpp
        self.prompt_style = self._prompt_style()
        self._rewind_ok = True  # False once the KV cache refused a partial removal (see _raw_label_logprobs)
        self._grammars: dict[str, object] = {}  # JSON schema -> compiled llama.cpp grammar
        self._batched: BatchedScorer | None = None  # the multi-sequence context, made on first use when parallel > 1
        self.use(scoring)

    def use(self, scoring: ScoringConfig) -> None:
        """Ask with another prompt or label set from now on, on the loaded model (choosing a prompt tries
        several without loading the model again). ``key`` follows; the few-shot examples and text budget
        must still fit the context the model was loaded with."""
        self.scoring = scoring
        self._prefix, self._suffix = self._prompt_parts()
        self._prefix_tokens = self._tokenize(self._prefix, bos=True)
        self._suffix_tokens = self._tokenize(self._suffix, bos=False)
        n_ctx = self._llm.n_ctx()
        if len(self._prefix_tokens) + scoring.max_text_tokens + len(self._suffix_tokens) > n_ctx:
            raise UserError(
                f"the prompt ({len(self._prefix_tokens)} tokens) plus --max-text-tokens "
                f"{scoring.max_text_tokens} does not fit the context of {n_ctx}; use fewer few-shot examples"
            )
        self.label_tokens = self._label_tokens()
        self._prefix_ready = False
        self._content_free: np.ndarray | None = None  # computed on first use: a fully cached run evaluates nothing
        if self._batched is not None:  # it holds the old prefix
            self._batched.close()
            self._batched = None
        self.key = ScoringKey(self.model.sha256, stable_hash(self._provenance()))

    # ---------------------------------------------------------------------------------- prompt
    def _prompt_style(self) -> str:
        if self.model.prompt_style != "auto":
            return self.model.prompt_style
        return "chat" if self._llm.metadata.get("tokenizer.chat_template") else "plain"

    def _instruction(self) -> str:
        def cut(text: str) -> str:  # examples get the same token budget as the texts
            return self._llm.detokenize(self._text_tokens(text)[0]).decode("utf-8", errors="ignore")

        return instruction(self.scoring, cut)

    def _prompt_parts(self) -> tuple[str, str]:
        """(prefix, suffix) around the text; the text's tokens go between them."""
        instruction = self._instruction()
        if self.prompt_style == "plain":
            full = f"{instruction}\n{self.scoring.answer_cue}"
        else:
            full = self._apply_chat_template(instruction)
        if full.count(TEXT_PLACEHOLDER) != 1:
            raise ModelError(f"{self.model.path}: its chat template drops or repeats the user's message; "
                             f"use another model file")
        prefix, suffix = full.split(TEXT_PLACEHOLDER)
        return prefix, suffix

    def _apply_chat_template(self, user_message: str) -> str:
        """The file's own chat template around one user message, rendered in Jinja's immutable sandbox.

        The template comes from the model file, which may be hostile: a plain ``jinja2.Environment`` lets it
        reach Python objects and run code (llama-cpp-python's CVE-2024-34359). The sandbox refuses attribute
        access to internals, mutation of the arguments and ranges over 100,000; any refusal or template error
        is one ``ModelError`` line.
        """
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment  # jinja2 ships with llama-cpp-python

        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelError(f"{self.model.name}: registered as a chat model but has no chat template")

        def raise_exception(message):
            raise TemplateError(str(message))

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        try:
            return env.from_string(template).render(
                messages=[{"role": "user", "content": user_message}],
                add_generation_prompt=True,
                bos_token="",  # the tokenizer adds BOS itself
                eos_token=self._llm.detokenize([self._llm.token_eos()], special=True).decode("utf-8", "replace"),
                raise_exception=raise_exception,
            )
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError, AttributeError,
                RecursionError) as exc:  # SecurityError is a TemplateError
            raise ModelError(f"{self.model.path}: its chat template cannot be used "
                             f"({type(exc).__name__}: {one_line(exc, limit=160)})") from None

    def _tokenize(self, text: str, bos: bool) -> list[int]:
        special = self.prompt_style == "chat"  # chat templates carry special tokens such as <|im_start|>
        return self._llm.tokenize(text.encode("utf-8"), add_bos=bos, special=special)

    def _text_tokens(self, text: str) -> tuple[list[int], int, bool]:
        """The text's tokens (whitespace collapsed, truncated to the budget), its full length, and whether cut."""
        tokens = self._llm.tokenize((" " + one_line(text, limit=None)).encode("utf-8"), add_bos=False, special=False)
        budget = self.scoring.max_text_tokens
        return tokens[:budget], len(tokens), len(tokens) > budget

    def _label_tokens(self) -> list[list[int]]:
        """For each label, the first-token ids of its verbaliser variants (ids shared by labels dropped).

        The primary variant (" word" after a plain "Category:", "word" at the start of a chat answer) must
        have a first token no other label's variant starts with (``label_token_ids``).
        """
        labels = self.scoring.labels
        lead = " " if self.prompt_style == "plain" else ""
        firsts: list[dict[str, int]] = []
        for word in labels.verbalisers:
            forms = {}
            for v in variants(word):
                ids = self._llm.tokenize(v.encode("utf-8"), add_bos=False, special=False)
                if ids:
                    forms[v] = ids[0]
            firsts.append(forms)
        try:
            return label_token_ids(firsts, [lead + w for w in labels.verbalisers])
        except LabelClash as clash:
            raise LabelSpecError(self._collision_message(clash)) from None

    def _collision_message(self, clash: LabelClash) -> str:
        labels = self.scoring.labels
        a, b = labels.names[clash.first], labels.names[clash.second]
        example = ",".join(f"{n}=<word>" if n in (a, b) else n for n in labels.names)
        if clash.token is None:
            return (f"label {a!r}: its word {labels.verbalisers[clash.first]!r} gives this teacher no token to "
                    f"score; give it another verbaliser, e.g. --labels \"{example}\"")
        piece = self._llm.detokenize([clash.token]).decode("utf-8", "replace")
        return (
            f"labels {a!r} and {b!r} both start with the token {piece!r} for this teacher (in some form of their "
            f"words), so it cannot tell them apart; give them verbalisers that start differently, e.g. "
            f"--labels \"{example}\""
        )

    def _provenance(self) -> dict:
        """Everything that determines a text's distribution (hashed into the store key)."""
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
        }

    @property
    def details(self) -> dict:
        """Provenance plus the facts that do not change answers (recorded, not hashed)."""
        return {
            **self._provenance(),
            "teacher": self.model.name,
            "teacher_licence": self.model.licence,
            "task": self.scoring.task,  # in the prompt already; recorded so a store's prompt can be asked again
            "answer_cue": self.scoring.answer_cue,
            "prompt_style": self.prompt_style,
            "content_free_distribution": None if self.content_free is None else self.content_free.tolist(),
            "llama_cpp_python": metadata.version("llama_cpp_python"),
            "n_threads": self.config.n_threads,
            "n_gpu_layers": self.n_gpu_layers,
            "parallel": self.parallel,
        }

    @property
    def prompt(self) -> str:
        return self._prefix + "{text}" + self._suffix

    @property
    def content_free(self) -> np.ndarray | None:
        """Shape (K,): the mean label distribution on content-free inputs (None without calibration)."""
        if self.scoring.calibrate and self._content_free is None:
            raw = np.stack([self._raw_label_logprobs(self._text_tokens(t)[0])[0] for t in self.scoring.content_free])
            self._content_free = np.exp(log_softmax(raw, axis=-1)).mean(axis=0)
        return self._content_free

    # ---------------------------------------------------------------------------------- scoring
    def _raw_label_logprobs(self, text_tokens: list[int]) -> tuple[np.ndarray, float]:
        """Evaluate one text after the cached prefix -> (raw label log-probs (K,), raw label mass)."""
        llm = self._llm
        n_prefix = len(self._prefix_tokens)
        # Cut the KV cache back to the prefix, and check that it happened: llama-cpp-python's eval() ignores the
        # result, and a recurrent or hybrid model cannot drop part of a sequence, so the text would be scored on
        # top of the previous one. Such a model gets a full reset and the prefix again before every text.
        if self._prefix_ready and self._rewind_ok and not llm._ctx.kv_cache_seq_rm(0, n_prefix, -1):
            self._rewind_ok = False
        if not self._prefix_ready or not self._rewind_ok:
            llm._ctx.kv_cache_clear()
            llm.reset()
            llm.eval(self._prefix_tokens)
            self._prefix_ready = True
        llm.n_tokens = n_prefix
        llm.eval(text_tokens + self._suffix_tokens)
        self.evaluations += 1
        ptr = self._llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
        vocab_lp = log_softmax(logits)
        raw = label_logprobs(vocab_lp, self.label_tokens)
        return raw, float(np.exp(raw).sum())

    def _raw_label_logprobs_many(self, token_lists: list[list[int]]) -> list[tuple[np.ndarray, float]]:
        """Several texts after the cached prefix, ``parallel`` sequences per decode -> [(raw (K,), mass)]."""
        if self.parallel == 1 or len(token_lists) == 1:
            return [self._raw_label_logprobs(tokens) for tokens in token_lists]
        if self._batched is None:
            per_text = self.scoring.max_text_tokens + len(self._suffix_tokens)
            self._batched = BatchedScorer(self._llm, self._llama_cpp, self._prefix_tokens, self.parallel, per_text)
        out = []
        for start in range(0, len(token_lists), self.parallel):
            group = [tokens + self._suffix_tokens for tokens in token_lists[start : start + self.parallel]]
            for logits in self._batched.last_logits(group):
                raw = label_logprobs(log_softmax(logits), self.label_tokens)
                out.append((raw, float(np.exp(raw).sum())))
            self.evaluations += len(group)
        return out

    def score(self, texts: Sequence[str]) -> list[LabelRow]:
        """One LabelRow per text (calibrated distribution, pseudo-label, confidence, entropy, mass)."""
        if not texts:
            return []
        tokenised = [self._text_tokens(text) for text in texts]
        lengths = [n for _, n, _ in tokenised]
        cut = [truncated for _, _, truncated in tokenised]
        raws, masses = zip(*self._raw_label_logprobs_many([tokens for tokens, _, _ in tokenised]))
        probs = calibrated_distribution(np.stack(raws), self.content_free)
        ent = entropy(probs)
        names = self.scoring.labels.names
        return [
            LabelRow(
                text=text,
                probs=tuple(float(p) for p in probs[i]),
                label=names[int(np.argmax(probs[i]))],
                confidence=float(probs[i].max()),
                entropy=float(ent[i]),
                label_mass=masses[i],
                n_tokens=lengths[i],
                truncated=cut[i],
            )
            for i, text in enumerate(texts)
        ]

    def score_batches(self, batches: Iterable[list[str]]) -> Iterator[list[LabelRow]]:
        """Each batch's rows in turn (the Ray backend offers the same, spread over workers)."""
        for texts in batches:
            yield self.score(texts)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Shape (N, K): the calibrated label distribution of each text."""
        rows = self.score(texts)
        return np.array([r.probs for r in rows]).reshape(len(rows), len(self.scoring.labels.names))

    # ---------------------------------------------------------------------------------- llama.cpp directly
    @property
    def llm(self):
        """The loaded ``llama_cpp.Llama``, for tools that measure the binding itself (bench/). Evaluating on it
        moves the KV cache under the teacher: call ``release_cache()`` afterwards."""
        return self._llm

    @property
    def prefix_tokens(self) -> list[int]:
        """The prompt's shared prefix (task, labels, examples), evaluated once and kept in the KV cache."""
        return list(self._prefix_tokens)

    def answer_tokens(self, text: str) -> list[int]:
        """What is evaluated after the prefix for ``text``: its tokens (cut to the budget) and the suffix."""
        return self._text_tokens(text)[0] + self._suffix_tokens

    def release_cache(self) -> None:
        """Forget the cached prefix (someone else used the context): the next text evaluates it again."""
        self._prefix_ready = False

    # ---------------------------------------------------------------------------------- generation
    @property
    def instruct(self) -> bool:
        """Whether the model follows instructions through a chat template (else prompts are plain text)."""
        return self.prompt_style == "chat"

    def generate(self, instruction: str, schema: dict, max_tokens: int = 512, temperature: float = 0.9,
                 seed: int = 0, timeout_s: float | None = None) -> Generation:
        """Write text for ``instruction``, constrained by a llama.cpp grammar made from the JSON ``schema``.

        An instruct model gets the instruction through its chat template; a plain model gets it as a
        completion prompt. Generation stops at ``max_tokens`` or after ``timeout_s`` seconds (then
        ``timed_out`` is set and the text is usually cut short). Sampling is seeded.
        """
        llama_cpp = self._llama_cpp
        prompt = self._apply_chat_template(instruction) if self.instruct else f"{instruction}\n"
        tokens = self._tokenize(prompt, bos=True)
        if len(tokens) + max_tokens > self._llm.n_ctx():
            raise UserError(f"the generation prompt ({len(tokens)} tokens) plus {max_tokens} new tokens does not fit "
                            f"the teacher's context of {self._llm.n_ctx()}")
        grammar_key = json.dumps(schema, sort_keys=True)
        if grammar_key not in self._grammars:
            with quiet_stderr():
                self._grammars[grammar_key] = llama_cpp.LlamaGrammar.from_json_schema(grammar_key, verbose=False)
        started = time.perf_counter()
        timed_out = False

        def out_of_time(_ids, _logits) -> bool:
            nonlocal timed_out
            timed_out = timeout_s is not None and time.perf_counter() - started > timeout_s
            return timed_out

        self._prefix_ready = False  # generation reuses the KV cache; scoring re-evaluates its prefix after
        out = self._llm.create_completion(
            prompt=tokens, max_tokens=max_tokens, temperature=temperature, seed=seed, grammar=self._grammars[grammar_key],
            stopping_criteria=llama_cpp.StoppingCriteriaList([out_of_time]),
        )
        choice = out["choices"][0]
        return Generation(text=choice["text"], finish_reason=choice.get("finish_reason") or "", prompt_tokens=len(tokens),
                          new_tokens=out["usage"]["completion_tokens"], seconds=time.perf_counter() - started,
                          timed_out=timed_out)

    def close(self) -> None:
        if self._batched is not None:
            self._batched.close()
            self._batched = None
        self._llm.close()


def load_teacher(scoring: ScoringConfig, config: TeacherConfig):
    """Resolve ``config.model`` (a registry name or a GGUF path), verify it and load it in this process; for
    ``a,b,...`` (``TeacherConfig.members``) an ``ensemble.Ensemble`` of them, every file verified first."""
    if len(config.members) > 1:
        from .ensemble import Ensemble

        files = [resolve_teacher(name) for name in config.members]  # a bad member fails before any is loaded
        loaded = []
        try:
            for file in files:
                loaded.append(Teacher(file, scoring, replace(config, model=file.name)))
        except BaseException:
            for teacher in loaded:
                teacher.close()
            raise
        return Ensemble(loaded, config.weights)
    return Teacher(resolve_teacher(config.model), scoring, config)
