"""The static-embedding student's pure parts: the distillation maths and the ONNX graph written node by node,
checked against the same forward pass in numpy (and PyTorch's, for the model class) on random weights."""

import json

import numpy as np
import pytest

from llkd_edge.errors import ModelError
from llkd_edge.student import static


def _state(vocab=50, dims=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"embeddings.weight": rng.normal(size=(vocab, dims)).astype(np.float32),
            "head.weight": rng.normal(size=(k, dims)).astype(np.float32),
            "head.bias": rng.normal(size=k).astype(np.float32)}


def _forward(state, ids, mask):
    rows = state["embeddings.weight"][ids] * mask[..., None]
    pooled = rows.sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
    unit = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return unit @ state["head.weight"].T + state["head.bias"]


def _run(model, ids, mask):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def test_the_onnx_graph_is_the_masked_mean_unit_length_and_head():
    state = _state(vocab=2000, dims=16)
    ids = np.array([[1, 5, 7, 0, 0], [2, 3, 4, 9, 11], [0, 0, 0, 0, 0]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=np.int64)
    expected = _forward(state, ids, mask)
    got = _run(static.onnx_graph(state), ids, mask)
    assert np.abs(got - expected).max() < 1e-5
    # padding changes nothing: the first row alone, unpadded, scores the same
    assert np.abs(_run(static.onnx_graph(state), ids[:1, :3], mask[:1, :3]) - expected[:1]).max() < 1e-5
    # int8: a scale per token row keeps the scores close and the table a quarter of the size
    int8 = static.onnx_graph(state, int8=True)
    assert np.abs(_run(int8, ids, mask) - expected).max() < 0.05
    table = {t.name: t for t in int8.graph.initializer}["table_q"]
    assert table.data_type == 3  # INT8
    assert len(int8.SerializeToString()) < len(static.onnx_graph(state).SerializeToString()) / 2


def test_pca_and_sif_weights():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6)) * np.array([5, 4, 3, 2, 1, 0.5])
    reduced = static.pca(x, 3)
    assert reduced.shape == (200, 3) and np.allclose(reduced.mean(axis=0), 0, atol=1e-5)
    variances = reduced.var(axis=0)
    assert variances[0] > variances[1] > variances[2]  # the leading axes first
    with pytest.raises(ModelError):
        static.pca(x, 7)
    weighted = static.sif_weighted(np.ones((1000, 2), dtype=np.float32))
    assert weighted[0, 0] < weighted[10, 0] < weighted[999, 0] <= 1  # frequent (low id) tokens weigh less


def test_the_model_matches_its_onnx_graph_and_a_bad_folder_is_one_error(tmp_path):
    torch = pytest.importorskip("torch")
    state = _state(vocab=30, dims=4, k=2)
    config = static.StaticConfig(30, 4, {0: "a", 1: "b"})
    model = static._model_class()(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    ids = torch.tensor([[1, 2, 3, 0]]), torch.tensor([[1, 1, 1, 0]])
    logits = model(input_ids=ids[0], attention_mask=ids[1]).logits.detach().numpy()
    assert np.abs(logits - _forward(state, ids[0].numpy(), ids[1].numpy())).max() < 1e-5
    model.save_pretrained(tmp_path)
    assert static.is_static(tmp_path) and not static.is_static(tmp_path / "nope")
    again = static.load(tmp_path)
    assert np.abs(again(input_ids=ids[0], attention_mask=ids[1]).logits.detach().numpy() - logits).max() == 0
    good = (tmp_path / "config.json").read_text()
    # hostile sizes are refused before anything is allocated: out of range, or in range but not the file's
    for key, value in (("dims", 10**9), ("vocab_size", 1_000_000), ("vocab_size", 40)):
        record = json.loads(good)
        record[key] = value
        (tmp_path / "config.json").write_text(json.dumps(record))
        with pytest.raises(ModelError, match="not a static student"):
            static.load(tmp_path)
    record = json.loads(good)
    record["id2label"] = {str(i): f"l{i}" for i in range(20_000)}
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(ModelError, match="sizes out of range"):
        static.load(tmp_path)


def test_the_runtimes_cut_at_a_space_gives_the_whole_texts_tokens():
    """Classifier._encode cuts long texts before tokenizing (the static student's main cost); every encoding must
    be the one of the whole text cut to the budget, for texts of every shape."""
    from tokenizers import Tokenizer

    from llkd_edge.registry import registry
    from llkd_edge.runtime import LONG_WORD, Classifier, _cuts_at_spaces, _Words
    from llkd_edge.teacher.encoder import model_folder

    try:
        folder = model_folder(registry("students")["minilm-l6"])
    except Exception:
        pytest.skip("the packaged MiniLM (its tokenizer) is not installed")
    rng = np.random.default_rng(0)
    words = ["the", "Ünïcödé", "naïve", "東京都", "co-operate", "e-mail:x@y.z", "a" * 150, "\u0301", "\t", "\n", "!!",
             "x" * 30, "tokenization", "\x00", "😀",
             "ab\x1ccd", "q\x0bz", "e\x85f", "g\u2028h", "i\u00a0j", "k\u3000l", "m\x0cn",  # spaces to Python, not all to BERT
             "Said,", "said", "U.S.", "it's", "$1,000.50", "Hello,World!", "[MASK]", "x[SEP]y", "[mask]", "[UNK]",
             "A" * 70 + "," + "b" * 40, "x" * 120 + "!", "MiXeD-Case_word~", "caf\u00e9,", "~`^|\\"]  # made from parts
    texts = ["", "one", " " * 3000, "y" * 5000, "word " * 2000, "東" * 3000]
    texts += [" ".join(rng.choice(words, size=rng.integers(1, 900))) for _ in range(300)]
    texts += [sep.join(rng.choice(words, size=rng.integers(1, 900))) for sep in ("\n", "\t", "\r\n", " \n") for _ in range(25)]
    for budget in (8, 64, 128):
        whole = Tokenizer.from_file(str(folder / "tokenizer.json"))
        whole.no_padding()
        whole.enable_truncation(budget)
        assert _cuts_at_spaces(whole)  # BERT's tokenizer: the cut is taken
        expected = whole.encode_batch(texts)
        for words in (False, True):  # the tokenizer on cut texts; the words kept
            seen = []

            class Recording:  # the tokenizer, recording the lengths of the texts it is given
                def __init__(self, inner):
                    self.inner = inner

                def encode_batch_fast(self, batch, **kwargs):
                    seen.extend(map(len, batch))
                    return self.inner.encode_batch_fast(batch, **kwargs)

                encode_batch = encode_batch_fast

            clf = Classifier.__new__(Classifier)
            clf.tokenizer, clf.max_length, clf.cuts_at_spaces, clf.input_names = Recording(whole), budget, True, ["input_ids"]
            clf._words = _Words.for_tokenizer(whole, budget) if words else None
            if words:
                assert clf._words.prefix == [101] and clf._words.suffix == [102] and clf._words.budget == budget - 2
                clf._words.tokenizer = Recording(clf._words.tokenizer)
            for again in (False, True):
                seen.clear()
                ids, types, truncated = clf._encode(texts)
                assert ids == [e.ids for e in expected] and types is None
                assert truncated == sum(1 for e in expected if e.overflowing)
                assert max(seen, default=0) <= max(map(len, texts)) and sum(seen) < sum(map(len, texts)) / 2  # most text never tokenized
                if words and again:  # every word was kept but the long ones
                    assert all(n > LONG_WORD for n in seen)
            if words:
                clf.forget_words()  # what the benches call before each timed pass
                assert not clf._words.kept
    # an added token that holds a space is matched before the split, so a cut could halve it: no cut then
    from tokenizers import AddedToken

    with_phrase = Tokenizer.from_file(str(folder / "tokenizer.json"))
    with_phrase.add_tokens([AddedToken("zz qq")])
    assert not _cuts_at_spaces(with_phrase) and _Words.for_tokenizer(with_phrase, 128) is None


def test_a_text_of_lines_is_cut_too_and_one_call_keeps_no_more_words_than_the_cap(monkeypatch):
    """Texts whose words are parted by newlines or tabs only are cut before tokenizing like spaced ones, and a call
    with more new words than ``WORDS_KEPT`` keeps no more than that (the answers stay the tokenizer's)."""
    from tokenizers import Tokenizer

    from llkd_edge import runtime
    from llkd_edge.registry import registry
    from llkd_edge.teacher.encoder import model_folder

    try:
        folder = model_folder(registry("students")["minilm-l6"])
    except Exception:
        pytest.skip("the packaged MiniLM (its tokenizer) is not installed")
    whole = Tokenizer.from_file(str(folder / "tokenizer.json"))
    whole.no_padding()
    whole.enable_truncation(32)
    for sep in ("\n", "\t", "\r", "\r\n"):
        text = sep.join(f"w{i}" for i in range(20_000))
        assert len(runtime._cut_at_space(text, 32 * 6)) <= 32 * 6
        words = runtime._Words.for_tokenizer(whole, 32)
        ids, _, truncated = words.encode([text])
        assert ids == [whole.encode(text).ids] and truncated == 1
        assert len(words.kept) < 100  # only the words before the cut were tokenized
    monkeypatch.setattr(runtime, "WORDS_KEPT", 50)
    words = runtime._Words.for_tokenizer(whole, 32)
    texts = [" ".join(f"v{i}x{j}" for j in range(20)) for i in range(30)]  # 600 new words, all tokenized (the texts are short of the cut)
    assert words.encode(texts)[0] == [e.ids for e in whole.encode_batch(texts)]
    assert len(words.kept) == 50
    assert words.encode(texts)[0] == [e.ids for e in whole.encode_batch(texts)]
    assert len(words.kept) <= 50


def test_a_students_registered_epochs_are_its_default_and_the_run_records_the_number():
    from llkd_edge.config import DEFAULT_EPOCHS, TrainConfig, identity
    from llkd_edge.registry import registry

    assert registry("students")["static"]["epochs"] != DEFAULT_EPOCHS  # the static student has its own
    assert TrainConfig(student="static").epochs == registry("students")["static"]["epochs"]
    assert TrainConfig(student="minilm-l6").epochs == DEFAULT_EPOCHS
    assert TrainConfig(student="some/folder").epochs == DEFAULT_EPOCHS
    assert TrainConfig(student="static", epochs=3).epochs == 3
    assert identity(TrainConfig(student="static"))["epochs"] == registry("students")["static"]["epochs"]
