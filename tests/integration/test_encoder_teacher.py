"""The encoder teacher (``--teacher encoder``): the real packaged MiniLM as a zero-shot teacher, through the
label store like any teacher, alone and in an ensemble with the real Gemma."""

import json

import pytest

from click.testing import CliRunner

from llkd_edge.cli import main
from llkd_edge.config import LabelSet, ScoringConfig, TeacherConfig
from llkd_edge.store import LabelStore


def label(args):
    result = CliRunner().invoke(main, ["label", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_encoder_teacher_beats_the_majority_on_bbc_and_a_rerun_asks_nothing(tmp_path):
    args = ["bbc-news:test", "--limit", "80", "--teacher", "encoder", "--prompt", "fixed", "--store",
            str(tmp_path / "labels.sqlite")]
    first = label(args)
    print(f"\nencoder teacher on 80 BBC test texts: macro-F1 {first['macro_f1']}, majority {first['majority_rate']}")
    assert first["labelled"] == 80 and first["macro_f1"] > first["majority_rate"] + 0.3
    assert first["mean_label_mass"] == 1.0 and first["teacher"] == "encoder"
    again = label(args)
    assert again["cached"] == 80 and again["labelled"] == 0 and again["macro_f1"] == first["macro_f1"]


def test_an_ensemble_of_gemma_and_the_encoder_labels_each_under_its_own_key(tmp_path):
    store = tmp_path / "labels.sqlite"
    got = label(["bbc-news:test", "--limit", "4", "--max-text-tokens", "32", "--teacher", "gemma3-270m,encoder",
                 "--prompt", "fixed", "--store", str(store)])
    assert got["labelled"] == 4
    with LabelStore(store) as s:
        assert sorted(c["teacher_name"] for c in s.configs()) == ["encoder", "gemma3-270m"]
        assert s.count() == 8


def test_few_shot_examples_join_their_labels_prototype_and_change_the_key(bbc_test):
    from llkd_edge.teacher.zeroshot import EncoderTeacher

    labels = LabelSet.parse(bbc_test.labels)
    plain = ScoringConfig(labels=labels, task=bbc_test.task)
    teacher = EncoderTeacher(plain, TeacherConfig(model="encoder"))
    try:
        key = teacher.key
        text = bbc_test.texts[0]
        gold = bbc_test.gold[0]
        before = teacher.score([text])[0].probs[labels.index(gold)]
        teacher.use(ScoringConfig(labels=labels, task=bbc_test.task, few_shot=((text, gold),)))
        assert teacher.key != key
        assert teacher.label_tokens[labels.index(gold)][-1] == " ".join(text.split())
        # the example's own text now pulls its label's prototype toward it
        row = teacher.score([text])[0]
        assert row.label == gold and row.probs[labels.index(gold)] > before
    finally:
        teacher.close()


def test_gold_texts_say_when_the_encoder_teacher_would_label_better(bbc_test, monkeypatch):
    """``labels.alternatives``: the real encoder on 15 BBC gold texts against a teacher at chance (the encoder or
    its pool with that teacher is better, and the advice says which to try) and against a teacher right and sure on
    every gold text (it stays best: no advice); a broken encoder is recorded, not raised."""
    import numpy as np

    from llkd_edge.labels.alternatives import advice, compare_with_encoder

    labels = LabelSet.parse(bbc_test.labels)
    names = list(labels.names)
    picked = [i for name in names for i in [j for j, g in enumerate(bbc_test.gold) if g == name][:3]]
    gold_texts, gold_labels = [bbc_test.texts[i] for i in picked], [bbc_test.gold[i] for i in picked]
    pool = bbc_test.texts[:120]  # gold texts among them stay out of the calibration sample
    scoring = ScoringConfig(labels=labels, task=bbc_test.task)
    rng = np.random.default_rng(0)
    chance = rng.dirichlet(np.ones(len(names)), size=len(gold_texts))
    flat_pool = np.full((len(pool), len(names)), 1 / len(names))
    at_chance = compare_with_encoder(scoring, "gemma3-270m", gold_texts, gold_labels, chance, pool,
                                     rng.dirichlet(np.ones(len(names)), size=len(pool)))
    print(f"\nencoder vs a teacher at chance on 15 BBC gold texts: {at_chance}")
    assert at_chance["n"] == 15 and at_chance["best"] in ("encoder", "pool")
    assert at_chance["encoder"]["accuracy"] > 0.6 and at_chance["encoder"]["log_likelihood"] > at_chance["teacher"]["log_likelihood"]
    line = advice(at_chance)
    assert "15 gold texts" in line and ("--teacher encoder)" in line if at_chance["best"] == "encoder"
                                        else "--teacher gemma3-270m,encoder)" in line)

    right = np.full((len(gold_texts), len(names)), 0.001)
    right[np.arange(len(gold_texts)), [names.index(g) for g in gold_labels]] = 1 - 0.001 * (len(names) - 1)
    sure = compare_with_encoder(scoring, "gemma3-270m", gold_texts, gold_labels, right, pool, flat_pool)
    assert sure["teacher"]["accuracy"] == 1.0 and sure["best"] == "teacher" and advice(sure) is None
    # a run whose teacher is the encoder, or has it as a member, is not compared with it
    assert compare_with_encoder(scoring, "gemma3-270m, encoder", gold_texts, gold_labels, right, pool, flat_pool) is None

    def broken(*args, **kwargs):
        raise OSError("model.safetensors: No such file")

    monkeypatch.setattr("llkd_edge.teacher.zeroshot.EncoderTeacher", broken)
    failed = compare_with_encoder(scoring, "gemma3-270m", gold_texts, gold_labels, right, pool, flat_pool)
    assert failed == {"teacher_name": "gemma3-270m", "error": "model.safetensors: No such file"} and advice(failed) is None


def test_distill_teacher_auto_pools_gemma_with_the_encoder_where_they_agree_and_records_it(tmp_path):
    """``distill --teacher auto`` on 48 BBC texts: the real Gemma and the real encoder label the pool, their agreement
    (kappa of the calibrated labels) is over the line on this topic set, so the run learns from their pool, the
    encoder weighted 2; the choice is printed and recorded, config.json holds the resolved teacher (its identity the
    `auto` asked for), and the pool reads back for later stages with the members' weights."""
    import numpy as np

    from llkd_edge.labels.teacher_choice import AGREEMENT_MIN, POOLED, agreement
    from llkd_edge.store import text_hash
    from llkd_edge.student.runs import open_run

    store, out = tmp_path / "labels.sqlite", tmp_path / "run"
    result = CliRunner().invoke(main, [
        "distill", "bbc-news", "--limit", "48", "--eval-limit", "16", "--max-text-tokens", "64", "--teacher", "auto",
        "--student", "minilm-l2", "--max-length", "64", "--batch-size", "16", "--epochs", "1", "--learning-curve",
        "off", "--store", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"--teacher auto: {POOLED} (the LLM and the encoder teacher agree" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    choice = metrics["teacher_choice"]
    print(f"\n--teacher auto on 48 BBC texts: {choice}; teacher macro-F1 {metrics['teacher']['macro_f1']}")
    assert choice["teacher"] == POOLED and choice["agreement"] >= AGREEMENT_MIN and choice["texts"] == 48
    config = json.loads((out / "config.json").read_text())
    assert config["identity"]["teacher"]["model"] == "auto" and config["config"]["teacher"]["model"] == POOLED
    assert [(m["name"], m["weight"]) for m in config["teacher"]["members"]] == [("gemma3-270m", 1.0), ("encoder", 2.0)]
    run = open_run(out)
    hashes = [text_hash(r.text) for r in run.pool()]
    with LabelStore(store) as s:  # the recorded agreement is the two members' stored rows' agreement
        llm, enc = (np.array([by_hash[h].probs for h in hashes]) for by_hash in
                    [s.rows(key, hashes) for key in run.member_keys])
    assert agreement(llm, enc) == pytest.approx(choice["agreement"], abs=1e-3)
    assert len(run.pool()) == metrics["data"]["pool_size"] == 48 and run.member_weights == (1.0, 2.0)
