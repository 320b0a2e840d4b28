"""llama.cpp plumbing the teacher needs beyond llama-cpp-python's ``Llama``: several texts scored in one
decode (``BatchedScorer``), and silencing llama.cpp's own logging (``quiet_stderr``)."""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from ..errors import ModelError


class BatchedScorer:
    """A second llama.cpp context that scores several texts per decode (multi-sequence batching).

    Sequence 0 holds the shared prompt prefix, evaluated once. For each group of up to ``width`` texts,
    the prefix is copied to sequences 1..width (a copy in the unified KV cache shares the cells, it does
    not recompute them), every text's tokens go into one batch with only its last position marked for
    logits, and one ``llama_decode`` evaluates them all. Afterwards the texts' cells are removed again.

    llama.cpp's results depend slightly on a decode's shape (on the CPU, evaluating one text in two
    chunks moves its label log-probs by up to ~0.1 on Gemma Q4), so a text's distribution here is as
    valid as the one-text-at-a-time one but not bit-identical to it; a lone text is identical.
    """

    def __init__(self, llm, llama_cpp, prefix: list[int], width: int, per_text: int):
        from llama_cpp import _internals

        self._c = llama_cpp
        self.width = width
        self.start = len(prefix)
        params = llama_cpp.llama_context_default_params()
        for name, _ in llama_cpp.llama_context_params._fields_:
            setattr(params, name, getattr(llm.context_params, name))
        params.n_seq_max = width + 1
        params.kv_unified = True  # one cache for all sequences, so the copied prefix cells are shared
        params.swa_full = True
        params.n_ctx = len(prefix) + width * per_text
        params.n_batch = params.n_ubatch = max(len(prefix), width * per_text)
        try:
            with quiet_stderr():
                self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        except ValueError:
            raise ModelError(f"llama.cpp could not make a context for {width} parallel texts (out of memory?); "
                             "lower --parallel") from None
        self._mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
        self._n_vocab = llm.n_vocab()
        self._decode([(0, prefix, 0)])

    def _decode(self, sequences: list[tuple[int, list[int], int]]) -> list[int]:
        """Put (seq id, tokens, first position) runs in the batch and decode; -> each run's last batch index."""
        batch, last = self._batch, []
        batch.n_tokens = 0
        for seq, tokens, first in sequences:
            for i, token in enumerate(tokens):
                j = batch.n_tokens
                batch.token[j] = token
                batch.pos[j] = first + i
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = seq
                batch.logits[j] = i == len(tokens) - 1
                batch.n_tokens += 1
            last.append(batch.n_tokens - 1)
        code = self._c.llama_decode(self._ctx.ctx, batch)
        if code != 0:
            raise ModelError(f"llama.cpp could not decode {len(sequences)} texts at once (code {code}); lower --parallel")
        return last

    def last_logits(self, group: list[list[int]]) -> list[np.ndarray]:
        """Each token list evaluated after the prefix in its own sequence -> the last position's logits."""
        c, mem = self._c, self._mem
        seqs = range(1, len(group) + 1)
        for seq in seqs:
            c.llama_memory_seq_cp(mem, 0, seq, -1, -1)
        try:
            last = self._decode([(seq, tokens, self.start) for seq, tokens in zip(seqs, group)])
            return [np.ctypeslib.as_array(c.llama_get_logits_ith(self._ctx.ctx, i), shape=(self._n_vocab,)).copy()
                    for i in last]
        finally:
            for seq in seqs:
                c.llama_memory_seq_rm(mem, seq, -1, -1)

    def close(self) -> None:
        self._c.llama_batch_free(self._batch)
        self._ctx.close()


@contextlib.contextmanager
def quiet_stderr():
    """Silence llama.cpp's logging for the duration: C code writes to fd 2, and llama-cpp-python's log
    callback prints to sys.stderr (it maps ggml's WARN level to logging.ERROR, so verbose=False does not
    hide warnings)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
