"""The real Gemma 270M GGUF teacher on real BBC News texts."""

import numpy as np
import pytest

from llkd_edge.config import LabelSet, ScoringConfig, TeacherConfig
from llkd_edge.errors import LabelSpecError, ModelError
from llkd_edge.registry import resolve_teacher
from llkd_edge.teacher.llama import Teacher

from llkd_edge.data import load_builtin

BBC_LABELS = LabelSet.parse(load_builtin("bbc-news:test").labels)



def test_registered_model_is_assembled_and_verified(gemma_file):
    assert gemma_file.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert gemma_file.path.stat().st_size > 200_000_000


def test_distributions_sum_to_one_and_are_deterministic(gemma, gemma_file, bbc_test):
    texts = bbc_test.texts[:8]
    first = gemma.predict_proba(texts)
    assert first.shape == (8, 5)
    assert np.allclose(first.sum(axis=1), 1.0) and (first >= 0).all()
    # Same texts again, in another order, and from a freshly loaded model: the same numbers.
    again = gemma.predict_proba(texts[::-1])[::-1]
    assert np.array_equal(first, again)
    fresh = Teacher(gemma_file, gemma.scoring, TeacherConfig(n_threads=1))
    try:
        assert np.array_equal(first, fresh.predict_proba(texts))
        assert fresh.key == gemma.key
    finally:
        fresh.close()


def test_rows_report_label_confidence_entropy_and_mass(gemma, bbc_test):
    rows = gemma.score(bbc_test.texts[:4])
    for r in rows:
        assert r.label == BBC_LABELS.names[int(np.argmax(r.probs))]
        assert r.confidence == pytest.approx(max(r.probs))
        assert 0 <= r.entropy <= np.log(5) + 1e-9
        assert 0 < r.label_mass < 1


def test_truncation_uses_the_token_budget(gemma_file):
    teacher = Teacher(gemma_file, ScoringConfig(labels=BBC_LABELS, max_text_tokens=12), TeacherConfig())
    try:
        head = "The government announced new tax rules for small firms on Monday, and"
        a, b = teacher.score([head + " shares rose sharply.", head + " the football team won the cup final."])
        assert a.truncated and b.truncated and a.n_tokens > 12
        assert a.probs == b.probs  # only the first 12 tokens were read
    finally:
        teacher.close()


def test_calibration_changes_the_distribution_and_the_key(gemma, gemma_file, bbc_test):
    plain = Teacher(gemma_file, ScoringConfig(labels=BBC_LABELS, task=bbc_test.task, max_text_tokens=64, calibrate=False))
    try:
        assert plain.key != gemma.key
        assert not np.allclose(plain.predict_proba(bbc_test.texts[:4]), gemma.predict_proba(bbc_test.texts[:4]))
    finally:
        plain.close()


def test_labels_sharing_a_first_token_are_rejected_with_a_suggestion(gemma_file):
    spec = ScoringConfig(labels=LabelSet.parse("pie=apple pie,juice=apple juice,tea"))
    with pytest.raises(LabelSpecError, match=r"'pie' and 'juice' both start with the token ' apple'.*--labels \"pie=<word>,juice=<word>,tea\""):
        Teacher(gemma_file, spec)


def test_chat_teacher_wraps_the_prompt_in_its_template(bbc_test):
    smol = resolve_teacher("smollm2-135m-instruct")
    teacher = Teacher(smol, ScoringConfig(labels=BBC_LABELS, task=bbc_test.task, max_text_tokens=32))
    try:
        assert teacher.prompt_style == "chat"
        assert "<|im_start|>assistant" in teacher.prompt
        probs = teacher.predict_proba(bbc_test.texts[:3])
        assert np.allclose(probs.sum(axis=1), 1.0)
    finally:
        teacher.close()


def test_corrupt_gguf_is_a_model_error(tmp_path, gemma_file):
    broken = tmp_path / "broken.gguf"
    with gemma_file.path.open("rb") as f:
        broken.write_bytes(f.read(5_000_000))  # a real header, then nothing
    with pytest.raises(ModelError, match="cannot load it"):
        Teacher(resolve_teacher(str(broken)), ScoringConfig(labels=BBC_LABELS))


def test_few_shot_examples_go_into_the_cached_prefix(gemma_file, bbc_test):
    train = load_builtin("bbc-news:train")
    shots = tuple((train.texts[i], train.gold[i]) for i in range(3))
    teacher = Teacher(gemma_file, ScoringConfig(labels=BBC_LABELS, task=bbc_test.task, max_text_tokens=24, few_shot=shots))
    try:
        assert teacher.prompt.count("Category:") == 4  # three examples and the text's own
        assert teacher.prompt.count("Text:") == 4
        probs = teacher.predict_proba(bbc_test.texts[:2])
        assert np.allclose(probs.sum(axis=1), 1.0)
    finally:
        teacher.close()


def test_generation_follows_the_json_grammar_and_leaves_scoring_unchanged(gemma, bbc_test):
    from llkd_edge.student.synthesis import generation_schema, parse_texts

    before = gemma.predict_proba(bbc_test.texts[:2])
    g = gemma.generate("Write 2 short sports news texts as JSON.", generation_schema(2, 20, 200), max_tokens=200,
                       seed=3)
    assert not gemma.instruct and g.prompt_tokens > 5 and g.new_tokens > 10
    if g.finish_reason != "length":  # the grammar makes every finished generation parse
        assert len(parse_texts(g.text, 2)) == 2
    again = gemma.generate("Write 2 short sports news texts as JSON.", generation_schema(2, 20, 200), max_tokens=200,
                           seed=3)
    assert again.text == g.text  # seeded
    assert np.array_equal(gemma.predict_proba(bbc_test.texts[:2]), before)  # the prefix cache was rebuilt


def test_an_instruct_teacher_writes_through_its_chat_template_and_a_timeout_cuts_it_short(bbc_test):
    from llkd_edge.student.synthesis import generation_schema, parse_texts

    smol = Teacher(resolve_teacher("smollm2-135m-instruct"),
                   ScoringConfig(labels=BBC_LABELS, task=bbc_test.task, max_text_tokens=32), TeacherConfig(n_ctx=2048))
    try:
        assert smol.instruct
        g = smol.generate('Write 2 one-sentence news headlines about football. Answer {"texts": [...]}',
                          generation_schema(2, 10, 150), max_tokens=160, seed=1)
        assert g.finish_reason == "stop" and not g.timed_out
        assert len(parse_texts(g.text, 2)) == 2
        cut = smol.generate("Write 2 long essays.", generation_schema(2, 10, 600), max_tokens=400, seed=1,
                            timeout_s=0.05)
        assert cut.timed_out and cut.new_tokens < 400
        with pytest.raises(ValueError):
            parse_texts(cut.text, 2)
    finally:
        smol.close()


def test_several_texts_per_decode_agree_with_one_at_a_time(gemma, gemma_file, bbc_test):
    """Multi-sequence batching: the prefix is copied to each sequence, several texts go in one decode.

    A lone text gives exactly the one-at-a-time numbers (same shapes, same kernels). A full group does not
    bit for bit: llama.cpp's CPU matmuls depend on the decode's shape (one text evaluated in two chunks
    moves as much), so the check is on agreement, with bounds that a text seeing another's tokens breaks.
    """
    texts = bbc_test.texts[:24]
    one = gemma.predict_proba(texts)
    wide = Teacher(gemma_file, gemma.scoring, TeacherConfig(parallel=4))
    try:
        assert wide.parallel == 4 and wide.key == gemma.key
        assert np.array_equal(wide.predict_proba(texts[:1]), one[:1])  # alone: identical
        batched = wide.predict_proba(texts)
        assert wide._batched is not None and wide.details["parallel"] == 4
        # Order within a group does not decide a text's label.
        flipped = wide.predict_proba(texts[::-1])[::-1]
    finally:
        wide.close()
    diff = np.abs(batched - one)
    print(f"\nparallel 4 vs 1 on 24 texts: max |dp| {diff.max():.4f}, mean {diff.mean():.4f}, "
          f"same label {np.mean(batched.argmax(1) == one.argmax(1)):.3f}")
    assert np.allclose(batched.sum(axis=1), 1.0)
    assert np.mean(batched.argmax(1) == one.argmax(1)) >= 0.9
    assert diff.mean() < 0.03 and diff.max() < 0.25
    assert np.mean(flipped.argmax(1) == batched.argmax(1)) >= 0.9


def test_gpu_layers_default_to_none_on_a_cpu_build_and_asking_for_them_is_one_error(gemma_file, gemma):
    from llama_cpp import llama_supports_gpu_offload

    if llama_supports_gpu_offload():
        pytest.skip("this llama.cpp build can offload: the CPU-build defaults do not apply")
    assert gemma.n_gpu_layers == 0 and gemma.parallel == 1 and gemma.details["n_gpu_layers"] == 0
    with pytest.raises(Exception, match="cannot offload to a GPU; rebuild it with `make setup GPU=1`"):
        Teacher(gemma_file, gemma.scoring, TeacherConfig(n_gpu_layers=-1))


@pytest.mark.parametrize("model", ["gemma3-270m", "smollm2-135m-instruct"])
def test_a_text_scored_after_another_equals_it_scored_alone(model, bbc_test):
    scoring = ScoringConfig(labels=BBC_LABELS, task=bbc_test.task, max_text_tokens=48)
    a, b = bbc_test.texts[0], bbc_test.texts[1]
    alone = Teacher(resolve_teacher(model), scoring, TeacherConfig())
    after = Teacher(resolve_teacher(model), scoring, TeacherConfig())
    try:
        expected = alone.predict_proba([b])
        after.predict_proba([a, a])  # fill the cache beyond the prefix with another text
        assert np.array_equal(after.predict_proba([b]), expected)
    finally:
        alone.close()
        after.close()


def test_a_cache_that_refuses_a_partial_cut_gets_a_full_reset(gemma, gemma_file, bbc_test, monkeypatch):
    """A recurrent/hybrid GGUF cannot drop part of a sequence: llama.cpp says so and keeps the cells. Stand in
    for such a model by making the removal refuse (and do nothing) past position 0; the texts must still be
    scored as if alone, not on top of the previous text."""
    import llama_cpp.llama_cpp as native

    texts = bbc_test.texts[:3]
    expected = gemma.predict_proba(texts[2:])
    real = native.llama_memory_seq_rm
    monkeypatch.setattr(native, "llama_memory_seq_rm", lambda mem, seq, p0, p1: real(mem, seq, p0, p1) if p0 <= 0 else False)
    teacher = Teacher(gemma_file, gemma.scoring, TeacherConfig())
    try:
        got = teacher.predict_proba(texts)
        assert not teacher._rewind_ok  # it noticed, and fell back to a full reset per text
        assert np.array_equal(got[2:], expected)
    finally:
        teacher.close()


def test_a_label_sharing_its_first_token_with_another_labels_variant_is_refused(gemma_file):
    labels = LabelSet.parse("sci=science,scifi=Science fiction,sport")
    with pytest.raises(LabelSpecError, match="'sci' and 'scifi' both start with the token"):
        Teacher(gemma_file, ScoringConfig(labels=labels), TeacherConfig())
