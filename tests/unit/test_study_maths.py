"""The study's arithmetic (bench/study.py) and the calibration table it draws its reliability diagrams from."""


import numpy as np
import pytest

from llkd_edge.metrics import calibration

from bench import study


def test_calibration_bins_counts_and_ece_by_hand():
    conf = [0.05, 0.15, 0.15, 0.95, 0.95, 0.95, 0.95, 1.0]
    correct = [False, True, False, True, True, True, False, True]
    table = calibration(conf, correct, bins=10)
    counts = [b["count"] for b in table["bins"]]
    assert counts == [1, 2, 0, 0, 0, 0, 0, 0, 0, 5]
    assert table["bins"][1]["accuracy"] == 0.5 and table["bins"][2]["accuracy"] is None
    top = table["bins"][9]
    assert top["accuracy"] == pytest.approx(0.8) and top["confidence"] == pytest.approx(0.96)
    # ECE: count-weighted |accuracy - confidence| per bin
    expected = (1 * abs(0 - 0.05) + 2 * abs(0.5 - 0.15) + 5 * abs(0.8 - 0.96)) / 8
    assert table["ece"] == pytest.approx(expected)
    assert table["accuracy"] == pytest.approx(5 / 8) and table["n"] == 8


def test_a_calibrated_teacher_has_a_small_ece_and_an_overconfident_one_a_large_one():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 20000)
    calibrated = rng.uniform(size=conf.size) < conf
    overconfident = rng.uniform(size=conf.size) < conf - 0.2
    assert calibration(conf, calibrated)["ece"] < 0.02
    assert calibration(conf, overconfident)["ece"] == pytest.approx(0.2, abs=0.02)


def test_calibration_rejects_bad_input():
    with pytest.raises(ValueError):
        calibration([], [])
    with pytest.raises(ValueError):
        calibration([0.5, 0.6], [True])
    with pytest.raises(ValueError):
        calibration([1.5], [True])


def test_used_vs_skipped_splits_pseudo_label_accuracy():
    used = [True, True, True, False, False]
    correct = [True, True, False, False, True]
    out = study.used_vs_skipped(used, correct)
    assert out == {"fraction_used": 0.6, "accuracy_used": pytest.approx(2 / 3), "accuracy_skipped": 0.5}
    assert study.used_vs_skipped([True, True], [True, False])["accuracy_skipped"] is None


def test_learning_rate_is_picked_on_validation_never_on_test():
    cells = [
        {"learning_rate": 5e-4, "val": {"macro_f1": 0.70}, "test": {"macro_f1": 0.90}},
        {"learning_rate": 1e-3, "val": {"macro_f1": 0.75}, "test": {"macro_f1": 0.60}},
        {"learning_rate": 2e-3, "val": {"macro_f1": 0.75}, "test": {"macro_f1": 0.50}},
    ]
    assert study.best_learning_rate(cells) == 1e-3  # best validation score; the smaller rate on a tie


def test_summaries_are_mean_and_sample_std_over_seeds():
    def cell(seed, f1, used):
        return {"teacher": "t", "dataset": "d", "pool_size": 10, "method": "llkd", "seed": seed,
                "test": {"accuracy": f1, "macro_f1": f1}, "fraction_used": used, "accuracy_used": 0.9,
                "accuracy_skipped": None, "train_seconds": 1.0}

    (row,) = study.summarise([cell(0, 0.6, 0.5), cell(1, 0.7, 0.5), cell(2, 0.8, 0.5)])
    assert row["seeds"] == [0, 1, 2]
    assert row["macro_f1"]["mean"] == pytest.approx(0.7) and row["macro_f1"]["std"] == pytest.approx(0.1)
    assert row["accuracy_skipped"] is None
    assert study.mean_std([0.5])["std"] == 0.0


def _evolve_study():
    from bench import evolve_study

    return evolve_study


def test_evolve_study_pool_takes_the_first_texts_of_each_class_and_the_control_matches_steps():
    es = _evolve_study()
    gold = ["a", "b", "a", "a", "c", "b", "c", "b", "a"]
    assert es.pick_pool(gold, ["a", "b", "c"], 2, start=1) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(SystemExit, match="not enough train texts of c"):
        es.pick_pool(gold, ["a", "b", "c"], 3, start=0)
    # 80 pool texts, batch 16: 5 steps an epoch; 125 texts: 8 steps, x 10 epochs = 80 steps = 16 pool epochs
    assert es.matched_epochs(80, 125, 16, 10) == 16
    assert es.matched_epochs(80, 80, 16, 10) == 10  # nothing written: the same training


def test_a_relabelled_pools_cells_are_named_apart_and_earlier_names_are_kept():
    from dataclasses import replace
    from types import SimpleNamespace

    split = SimpleNamespace(teacher="gemma3-270m", dataset="bbc-news")
    plain = study.cell_name(split, study.FULL, 1000, "llkd", 0, 1e-3, 4)
    probe = study.cell_name(split, replace(study.FULL, relabel="probe"), 1000, "llkd", 0, 1e-3, 4)
    assert plain == "gemma3-270m__bbc-news__minilm-l2-e4-t64-b32__n1000__llkd__s0__lr0.001"
    assert probe == plain + "__relabel-probe"
