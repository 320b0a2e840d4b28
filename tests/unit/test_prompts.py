"""The prompt choice's pure parts: candidates, the label-free criterion, the sample, and the gold ranking."""

import numpy as np

from llkd_edge.config import DEFAULT_TASK, LabelSet, ScoringConfig
from llkd_edge.distributions import answer_information as criterion, mutual_information
from llkd_edge.data import Dataset
from llkd_edge.teacher.prompts import CUES, candidates, gold_accuracy, gold_log_likelihood, gold_sample, sample_texts

LABELS = LabelSet.parse("business,sports=sport,tech=technology")


def test_candidates_cover_wordings_times_cues_and_keep_the_given_task_first():
    scoring = ScoringConfig(labels=LABELS, task="Classify the news article by topic")
    plain = candidates(scoring, chat=False)
    assert len(plain) == 4 * len(CUES) == 12
    assert plain[0].scoring == scoring  # the given prompt first, so it wins ties
    assert {c.scoring.task for c in plain} == {scoring.task, DEFAULT_TASK, "Is this text about business, sport or technology?",
                                               "Which of these words fits the text best?"}
    assert len({c.name for c in plain}) == len(plain) and len({c.scoring for c in plain}) == len(plain)
    # nothing but the prompt changes
    assert all(c.scoring.labels == LABELS and c.scoring.max_text_tokens == scoring.max_text_tokens for c in plain)
    # no given task: the generic one is not tried twice; a chat teacher varies only the wording
    generic = candidates(ScoringConfig(labels=LABELS), chat=True)
    assert [c.scoring.task for c in generic] == [DEFAULT_TASK, "Is this text about business, sport or technology?",
                                                 "Which of these words fits the text best?"]


def test_mutual_information_rewards_answers_that_differ_between_texts():
    sure_and_varied = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    always_the_same = np.tile([[0.9, 0.05, 0.05]], (6, 1))
    assert np.isclose(mutual_information(sure_and_varied), np.log(3))
    assert np.isclose(mutual_information(always_the_same), 0.0, atol=1e-9)


def test_the_criterion_forgives_a_bias_that_batch_calibration_removes():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 300)
    informative = np.full((300, 3), 0.1) + 0.7 * np.eye(3)[truth]
    biased = informative * np.array([8.0, 1.0, 1.0])  # the same signal, leaning on the first label
    biased /= biased.sum(axis=1, keepdims=True)
    hesitant = rng.dirichlet([20, 20, 20], 300)  # answers that barely move from text to text
    assert mutual_information(biased) < mutual_information(informative)  # raw MI punishes the bias ...
    assert abs(criterion(biased) - criterion(informative)) < 0.05 / np.log(3)  # ... the criterion does not
    assert criterion(informative) > criterion(hesitant) + 0.3 / np.log(3)


def test_the_sample_is_seeded_distinct_non_empty_and_in_input_order():
    texts = [f"text {i}" for i in range(50)] + ["text 3", " ", ""]
    a, b = sample_texts(texts, 10), sample_texts(texts, 10)
    assert a == b and len(set(a)) == 10 and all(t.strip() for t in a)
    assert a == sorted(a, key=texts.index)
    assert sample_texts(texts, 10, seed=1) != a
    assert sample_texts(["x", "x", "y"], 10) == ["x", "y"]


def test_the_gold_sample_tries_every_class_before_any_class_twice():
    labels = ["a"] * 30 + ["b"] * 3 + ["c"] * 12
    gold = Dataset("gold", [f"t{i}" for i in range(len(labels))], labels)
    got = gold_sample(gold, 10)
    assert len(got.texts) == 10 and got.gold.count("b") == 3  # the rare class whole, the rest shared out
    assert sorted(got.gold.count(k) for k in "ac") == [3, 4]
    assert all(gold.gold[gold.texts.index(t)] == g for t, g in zip(got.texts, got.gold))  # pairs kept, input order
    assert got.texts == sorted(got.texts, key=gold.texts.index)
    assert gold_sample(gold, 10).texts == got.texts and gold_sample(gold, 10, seed=1).texts != got.texts
    assert gold_sample(gold, 100) is gold


def test_gold_accuracy_reads_the_rows_as_the_pool_will_be_read_with_the_bias_divided_out():
    y = np.repeat([0, 1, 2], 4)
    right = np.full((12, 3), 0.2) + 0.4 * np.eye(3)[y]
    leaning = right * np.array([6.0, 1.0, 1.0])  # the same signal, every raw argmax on the first label
    leaning /= leaning.sum(axis=1, keepdims=True)
    sample = np.full((8, 3), 1 / 3)
    assert np.mean(leaning.argmax(1) == y) == 1 / 3
    assert gold_accuracy(sample, leaning, y) == 1.0  # calibrated: all right
    wrong = np.roll(right, 1, axis=1)  # confidently the next class
    assert gold_accuracy(sample, wrong, y) == 0.0


def test_gold_log_likelihood_ranks_a_sure_right_prompt_above_a_barely_right_one_of_equal_accuracy():
    y = np.repeat([0, 1, 2], 4)
    sample = np.full((8, 3), 1 / 3)
    sure = np.full((12, 3), 0.05) + 0.85 * np.eye(3)[y]
    barely = np.full((12, 3), 0.3) + 0.1 * np.eye(3)[y]
    assert gold_accuracy(sample, sure, y) == gold_accuracy(sample, barely, y) == 1.0
    assert gold_log_likelihood(sample, sure, y) > gold_log_likelihood(sample, barely, y) > np.log(1 / 3)
    # the rows are read calibrated: most of a strong bias toward the first label is divided out
    leaning = sure * np.array([30.0, 1.0, 1.0])
    leaning /= leaning.sum(axis=1, keepdims=True)
    raw = np.mean(np.log(leaning[np.arange(12), y]))
    assert gold_log_likelihood(sample, leaning, y) > raw + 0.25
    # a confident mistake costs more than an unsure one
    assert gold_log_likelihood(sample, np.roll(sure, 1, axis=1), y) < gold_log_likelihood(sample, np.roll(barely, 1, axis=1), y)
