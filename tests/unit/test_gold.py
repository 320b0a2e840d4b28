"""--gold: checking the file, judging label sources on it (gold.py), and gold samples in the training loop's
selection. No model is loaded: embeddings here are synthetic clusters, the point being the maths."""

import numpy as np
import pytest
from click.testing import CliRunner

from llkd_edge.cli import main
from llkd_edge.data import Dataset
from llkd_edge.errors import DataError
from llkd_edge.labels.gold import Product, check_gold_set, judge, sample_weights, wilson_interval

LABELS = ("a", "b", "c")


def clusters(per_class: int, seed: int, spread: float = 0.3):
    """Unit vectors around one centre per class: a probe can learn them from a few texts."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 16)
    y = np.repeat(np.arange(3), per_class)
    x = centres[y] + spread * rng.normal(size=(len(y), 16))
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def onehot_ish(y, right: float, seed: int, k: int = 3):
    """Teacher distributions that name the true class with probability ``right``, else a random other one."""
    rng = np.random.default_rng(seed)
    named = np.where(rng.random(len(y)) < right, y, (y + rng.integers(1, k, len(y))) % k)
    p = np.full((len(y), k), 0.1 / (k - 1))
    p[np.arange(len(y)), named] = 0.9
    return p


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)  # the textbook 95% Wilson interval for 8/10
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_a_useless_teacher_is_outvoted_and_named():
    x, y = clusters(8, seed=0)
    teacher = onehot_ish(y, right=0.2, seed=1)  # below chance: worse than guessing
    j = judge(teacher, x, [LABELS[i] for i in y], LABELS, seed=0)
    assert j.scores["gold_only"]["accuracy"] >= 0.9
    assert j.teacher_below_gold_only and j.chosen in ("gold_only", "combined")
    assert j.product.a <= 0.5 < j.product.b  # the product leans on the probe
    # on new texts from the same clusters the chosen labels follow the probe, not the teacher
    x_new, y_new = clusters(20, seed=5)
    taught = j.labels_for(onehot_ish(y_new, right=0.2, seed=6), x_new)
    assert (taught.argmax(1) == y_new).mean() >= 0.85
    record = j.record()
    assert record["chosen"] == j.chosen and record["teacher_below_gold_only"] is True
    low, high = record["scores"]["teacher"]["interval"]
    assert low <= record["scores"]["teacher"]["accuracy"] <= high


def test_a_good_teacher_keeps_its_say():
    x, y = clusters(8, seed=2, spread=2.0)  # texts the probe can barely tell apart
    teacher = onehot_ish(y, right=0.95, seed=3)
    j = judge(teacher, x, [LABELS[i] for i in y], LABELS, seed=0)
    assert not j.teacher_below_gold_only
    assert j.scores["teacher"]["accuracy"] >= 0.9 and j.product.a >= 1.0
    assert j.chosen in ("teacher", "combined") and j.scores[j.chosen]["accuracy"] >= 0.85


def test_the_product_of_experts_fits_the_powers_by_log_loss():
    y = np.array([0, 1, 2] * 10)
    good, noise = onehot_ish(y, 1.0, 0), np.full((30, 3), 1 / 3)
    assert Product.fit(good, noise, y).a > 0
    assert Product.fit(noise, good, y) == Product(0.0, Product.fit(noise, good, y).b)
    p = Product(1.0, 1.0)(good, noise)
    assert np.allclose(p.sum(1), 1.0) and (p.argmax(1) == y).all()


def test_one_gold_text_per_class_still_works():
    x, y = clusters(1, seed=4)
    j = judge(onehot_ish(y, 1.0, 0), x, [LABELS[i] for i in y], LABELS, seed=0)
    assert j.n == 3 and j.chosen in ("teacher", "combined", "gold_only")


def test_sample_weights_follow_the_trust_of_each_label():
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    assert sample_weights(probs, [0.9, 0.45, 0.9]).tolist() == [1.0, 0.5, 1.0]


def test_class_balance_lifts_the_rare_labels_and_keeps_the_mean():
    probs = np.eye(3)[[0, 0, 0, 0, 0, 0, 1, 1, 2]]  # 6 a, 2 b, 1 c
    plain = sample_weights(probs, [1.0, 1.0, 1.0])
    balanced = sample_weights(probs, [1.0, 1.0, 1.0], balance=1.0)
    assert plain.tolist() == [1.0] * 9
    assert balanced.mean() == pytest.approx(1.0)
    # each class carries the same total weight: 6 x w_a = 2 x w_b = 1 x w_c
    assert 6 * balanced[0] == pytest.approx(2 * balanced[6]) == pytest.approx(balanced[8])
    half = sample_weights(probs, [1.0, 1.0, 1.0], balance=0.5)
    assert balanced[0] < half[0] < 1.0 < half[8] < balanced[8]


def gold_set(rows):
    return Dataset("gold.csv", [t for t, _ in rows], [g for _, g in rows])


def test_check_gold_set_refuses_bad_files():
    good = [("one", "a"), ("two", "b"), ("three", "c"), ("three ", "c")]
    assert check_gold_set(gold_set(good), LABELS, None).texts == ["one", "two", "three"]  # each text once
    with pytest.raises(DataError, match="not in the label set: 'zebra'"):
        check_gold_set(gold_set([*good, ("four", "zebra")]), LABELS, None)
    with pytest.raises(DataError, match="at least 1 text per class; none for c"):
        check_gold_set(gold_set(good[:2]), LABELS, None)
    with pytest.raises(DataError, match="1 of its texts are also in the eval set"):
        check_gold_set(gold_set(good), LABELS, ["TWO", "other"])
    with pytest.raises(DataError, match="1 of its texts are also --few-shot examples"):
        check_gold_set(gold_set(good), LABELS, None, (("One", "a"), ("elsewhere", "b")))
    with pytest.raises(DataError, match="needs gold labels"):
        check_gold_set(Dataset("gold.csv", ["one"], None), LABELS, None)


@pytest.mark.parametrize("content, message", [
    ("text,label\nx,a\ny,zebra\n", "not in the label set"),
    ("text,label\nx,a\n", "at least 1 text per class; none for b"),
    ("text\nx\n", "needs gold labels"),
    ("text,label\nsame text,a\nother,b\n", "also in the eval set"),
])
def test_a_bad_gold_file_is_one_line_before_any_model_loads(tmp_path, content, message):
    pool, evalset, gold = tmp_path / "pool.csv", tmp_path / "eval.csv", tmp_path / "gold.csv"
    pool.write_text("text\nfirst\nsecond\n", encoding="utf-8")
    evalset.write_text("text,label\nSame  text,a\n", encoding="utf-8")
    gold.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(main, ["distill", str(pool), "--labels", "a,b", "--eval", str(evalset),
                                       "--gold", str(gold), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not (tmp_path / "run").exists()
