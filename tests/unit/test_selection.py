import numpy as np
import pytest

from llkd_edge.student.selection import (METHODS, PAPER, LlkdRule, ThresholdState, llkd_weights, pool_median_bars, rule_of,
                                 select, update_state, with_floor)


def batch(seed=0, n=64, k=4):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.3, 1.0, n), rng.uniform(0.0, 1.0, n), rng.integers(0, k, n)


def test_global_thresholds_follow_the_moving_averages():
    state = ThresholdState.initial(4, momentum=0.5, teacher_prior=0.25)
    conf, need, pseudo = np.full(8, 0.9), np.full(8, 0.2), np.arange(8) % 4
    state = update_state(state, conf, need, pseudo)
    assert state.global_teacher == pytest.approx(0.5 * 0.25 + 0.5 * 0.9)
    assert state.global_student == pytest.approx(0.5 * 0.0 + 0.5 * 0.2)
    for _ in range(30):
        state = update_state(state, conf, need, pseudo)
    assert state.global_teacher == pytest.approx(0.9) and state.global_student == pytest.approx(0.2)
    # every class looks the same here, so every class faces the global bar
    assert np.allclose(state.teacher_thresholds(), 0.9) and np.allclose(state.student_thresholds(), 0.2)


def test_class_scaling_lowers_the_bar_for_lagging_classes():
    state = ThresholdState.initial(2, momentum=0.0)
    # class 1 lags on both signals: the teacher is less sure of it, the student needs it more
    conf = np.array([0.95, 0.95, 0.6, 0.6])
    need = np.array([0.1, 0.1, 0.7, 0.7])
    pseudo = np.array([0, 0, 1, 1])
    state = update_state(state, conf, need, pseudo)
    tau_t, tau_s = state.teacher_thresholds(), state.student_thresholds()
    assert tau_t[1] < tau_t[0] == pytest.approx(state.global_teacher)
    assert tau_s[1] < tau_s[0] == pytest.approx(state.global_student)
    assert tau_t[1] == pytest.approx(state.global_teacher * 0.6 / 0.95)
    assert tau_s[1] == pytest.approx(state.global_student * 0.3 / 0.9)


def test_classes_absent_from_a_batch_keep_their_averages():
    state = ThresholdState.initial(3, momentum=0.5)
    new = update_state(state, [0.9, 0.8], [0.5, 0.5], [0, 0])
    assert new.class_teacher[1:].tolist() == state.class_teacher[1:].tolist()
    assert new.class_teacher[0] != state.class_teacher[0]


def test_llkd_keeps_confident_teacher_and_needy_student_samples():
    state = ThresholdState.initial(2, momentum=0.0)
    conf = np.array([0.9, 0.9, 0.5, 0.5])
    need = np.array([0.9, 0.1, 0.9, 0.1])
    mask, weights, _ = select("llkd", conf, need, np.zeros(4, dtype=int), state)
    assert mask.tolist() == [True, False, False, False]
    assert weights.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_an_all_confident_batch_and_an_all_certain_student_behave():
    state = ThresholdState.initial(3, momentum=0.9)
    conf, pseudo = np.ones(12), np.arange(12) % 3
    # teacher sure of everything, student unsure of everything: take everything, equal weights
    mask, weights, state = select("llkd", conf, np.ones(12), pseudo, state)
    assert mask.all() and np.allclose(weights, 1.0)
    # a student certain of everything (need 0): nothing to learn, so no weight, and no NaN
    for _ in range(200):
        mask, weights, state = select("llkd", conf, np.zeros(12), pseudo, state)
    assert np.all(np.isfinite(weights)) and (weights >= 0).all()
    assert np.isfinite(state.student_thresholds()).all()


@pytest.mark.parametrize("method", METHODS)
def test_weights_are_finite_non_negative_and_zero_off_mask(method):
    state = ThresholdState.initial(4)
    rng = np.random.default_rng(0)
    for seed in range(20):
        conf, need, pseudo = batch(seed)
        mask, weights, state = select(method, conf, need, pseudo, state, rng=rng)
        assert mask.dtype == bool and mask.shape == conf.shape
        assert np.all(np.isfinite(weights)) and (weights >= 0).all()
        assert (weights[~mask] == 0).all()
        if mask.any():
            assert weights[mask].mean() == pytest.approx(1.0)


def test_each_baseline_selects_what_it_claims():
    conf, need, pseudo = batch(3)
    state = ThresholdState.initial(4)
    after = update_state(state, conf, need, pseudo)
    teacher_ok = conf >= after.teacher_thresholds()[pseudo]
    student_ok = need >= after.student_thresholds()[pseudo]
    rng = np.random.default_rng(1)
    picks = {m: select(m, conf, need, pseudo, state, rng=rng, topk_ratio=0.25)[0] for m in METHODS}
    assert picks["all"].all()
    assert (picks["confidence"] == teacher_ok).all()
    assert (picks["uncertainty"] == student_ok).all()
    assert (picks["llkd"] == (teacher_ok & student_ok)).all()
    assert picks["random"].sum() == picks["llkd"].sum()
    assert picks["topk"].sum() == 16 and conf[picks["topk"]].min() >= conf[~picks["topk"]].max()
    # random draws differ from LLKD's own choice (same count, other samples)
    assert (picks["random"] != picks["llkd"]).any()


def test_llkd_weights_favour_confident_and_needy():
    w = llkd_weights([0.9, 0.5, 0.9], [0.9, 0.9, 0.3], [True, True, True])
    assert w[0] > w[1] and w[0] > w[2] and w.mean() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (([0.5], [0.5, 0.4], [0]), "same shape"),
        (([1.5], [0.5], [0]), r"\[0, 1\]"),
        (([0.5], [np.nan], [0]), "finite"),
        (([0.5], [0.5], [7]), "class indices"),
        (([], [], []), "empty batch"),
    ],
)
def test_bad_arguments_raise_value_errors(args, message):
    with pytest.raises(ValueError, match=message):
        select("llkd", *map(np.asarray, args), ThresholdState.initial(2))


def test_unknown_method_and_bad_state():
    with pytest.raises(ValueError, match="unknown selection method"):
        select("magic", [0.5], [0.5], [0], ThresholdState.initial(2))
    with pytest.raises(ValueError, match="momentum"):
        ThresholdState.initial(2, momentum=1.0)


def test_state_round_trips_through_a_dict():
    state = update_state(ThresholdState.initial(3), *batch(1, k=3))
    again = ThresholdState.from_dict(state.to_dict())
    assert np.array_equal(again.class_teacher, state.class_teacher) and again.steps == state.steps


def test_a_student_whose_need_falls_fast_is_not_starved():
    # need drops from 1.0 to ~0.8 within a few steps (a fresh head grows confident quickly); a bar that
    # lags above every sample would select nothing and the student would stop learning
    state = ThresholdState.initial(4, momentum=0.9, teacher_prior=0.7)
    rng = np.random.default_rng(0)
    kept = []
    for step in range(12):
        level = max(0.8, 1.0 - 0.05 * step)
        need = np.clip(level + rng.normal(0, 0.02, 32), 0, 1)
        conf = rng.uniform(0.4, 1.0, 32)
        mask, _, state = select("llkd", conf, need, rng.integers(0, 4, 32), state)
        kept.append(int(mask.sum()))
    assert min(kept) > 0, kept
    assert sum(kept) >= 0.25 * 12 * 32, kept


# ------------------------------------------------------------------ issue 16's rule variants (LlkdRule)


def test_student_stats_over_teacher_passed_samples_ignore_the_rejected_ones():
    # two confident samples the student has nearly learnt, two the teacher doubts (the student is lost on them)
    conf, need, pseudo = np.array([0.9, 0.9, 0.2, 0.2]), np.array([0.3, 0.4, 1.0, 1.0]), np.zeros(4, dtype=int)
    start = ThresholdState.initial(2, momentum=0.0, teacher_prior=0.5)
    over_all = update_state(start, conf, need, pseudo)
    over_passed = update_state(start, conf, need, pseudo, LlkdRule(student_stats="teacher"))
    assert over_all.global_student == pytest.approx(0.675) and over_passed.global_student == pytest.approx(0.35)
    assert over_passed.class_student[0] == pytest.approx(0.65) and over_all.class_student[0] == pytest.approx(0.325)
    kept = {rule: select("llkd", conf, need, pseudo, start, rule=rule)[0]
            for rule in (LlkdRule(), LlkdRule(student_stats="teacher"))}
    assert kept[LlkdRule()].sum() == 0  # the doubted samples' need lifted the bar over both confident ones
    assert kept[LlkdRule(student_stats="teacher")].tolist() == [False, True, False, False]


def test_class_mass_gives_a_class_the_teacher_rarely_names_a_lower_bar():
    # equally sure of both classes, but class 1 is named for 1 sample in 8
    conf, need, pseudo = np.full(8, 0.8), np.full(8, 0.5), np.array([0] * 7 + [1])
    mean = update_state(ThresholdState.initial(2, momentum=0.0), conf, need, pseudo)
    rule = LlkdRule(class_terms="mass")
    mass = update_state(ThresholdState.initial(2, momentum=0.0, rule=rule), conf, need, pseudo, rule)
    assert np.allclose(mean.teacher_thresholds(), [0.8, 0.8])
    assert mass.class_teacher == pytest.approx([0.7, 0.1]) and mass.teacher_thresholds() == pytest.approx([0.8, 0.8 / 7])
    assert ThresholdState.initial(4, teacher_prior=0.6, rule=rule).class_teacher == pytest.approx([0.15] * 4)


def test_pool_median_bars_pass_the_surer_half_of_every_class_rare_ones_included_and_stay_fixed():
    # class 0: many sure samples; class 1: rare and unsure; class 2: never named
    conf = np.array([0.9, 0.8, 0.95, 0.85, 0.7, 0.6, 0.3, 0.4])
    pseudo = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    bars = pool_median_bars(conf, pseudo, 3)
    assert bars == pytest.approx([0.825, 0.35, 1.0])
    rule = LlkdRule(class_terms="pool-median")
    state = ThresholdState.initial(3, rule=rule, teacher_bars=bars)
    mask, _, after = select("confidence", conf, np.full(8, 0.5), pseudo, state, rule=rule)
    assert mask.tolist() == [True, False, True, True, False, False, False, True]  # 3 of 6, 1 of 2
    mask, _, after = select("confidence", np.full(8, 0.2), np.full(8, 0.5), pseudo, after, rule=rule)
    assert after.teacher_thresholds() == pytest.approx(bars) and not mask.any()  # no EMA moves them
    again = ThresholdState.from_dict(after.to_dict())
    assert np.array_equal(again.teacher_bars, bars)
    assert ThresholdState.from_dict({**state.to_dict(), "teacher_bars": None}).teacher_bars is None
    with pytest.raises(ValueError, match="teacher_bars"):
        ThresholdState.initial(3, rule=rule)
    with pytest.raises(ValueError, match="teacher_bars"):
        ThresholdState.initial(3, teacher_bars=bars)


def test_a_floor_keeps_the_neediest_teacher_passed_samples_when_the_gates_keep_fewer():
    teacher_ok = np.array([True, True, True, True, False])
    need = np.array([0.1, 0.4, 0.3, 0.2, 0.9])
    none = np.zeros(5, dtype=bool)
    assert with_floor(none, teacher_ok, need, 0.5).tolist() == [False, True, True, False, False]
    assert with_floor(none, teacher_ok, need, 0.0).tolist() == none.tolist()
    some = np.array([True, False, False, True, False])
    assert with_floor(some, teacher_ok, need, 0.5).tolist() == some.tolist()  # already 2 of 4: unchanged
    # through select: a student bar above every sample keeps nothing without the floor, half with it
    state = ThresholdState(0.0, 2.0, np.ones(2), np.ones(2), 0.99)
    conf, pseudo = np.full(4, 0.9), np.zeros(4, dtype=int)
    need4 = np.array([0.1, 0.4, 0.3, 0.2])
    assert not select("llkd", conf, need4, pseudo, state)[0].any()
    mask, weights, _ = select("llkd", conf, need4, pseudo, state, rule=LlkdRule(floor=0.5))
    assert mask.tolist() == [False, True, True, False] and weights[mask].mean() == pytest.approx(1.0)


def test_weight_kinds():
    conf, need, mask = np.array([0.9, 0.5, 0.8]), np.array([0.2, 0.6, 0.9]), np.array([True, True, False])
    assert llkd_weights(conf, need, mask, "one").tolist() == [1.0, 1.0, 0.0]
    assert llkd_weights(conf, need, mask, "conf") == pytest.approx([0.9 / 0.7, 0.5 / 0.7, 0.0])
    assert llkd_weights(conf, need, mask) == pytest.approx([0.18 / 0.24, 0.30 / 0.24, 0.0])
    with pytest.raises(ValueError, match="weights must be one of"):
        LlkdRule(weights="square")
    with pytest.raises(ValueError, match="floor must be in"):
        LlkdRule(floor=1.5)


def test_during_warm_up_llkd_keeps_what_the_teacher_gate_keeps():
    conf, need, pseudo = np.array([0.9, 0.9, 0.1]), np.array([0.0, 0.0, 1.0]), np.zeros(3, dtype=int)
    state = ThresholdState(0.5, 0.5, np.ones(1), np.ones(1), 0.99)  # a student bar above the first two samples
    rule = LlkdRule(warmup_steps=2)
    masks = []
    for _ in range(3):
        mask, _, state = select("llkd", conf, need, pseudo, state, rule=rule)
        masks.append(mask.tolist())
    assert masks == [[True, True, False], [True, True, False], [False, False, False]]
    assert not select("llkd", conf, need, pseudo, ThresholdState(0.5, 0.5, np.ones(1), np.ones(1), 0.99))[0].any()


def test_random_draws_as_many_as_llkd_keeps_floor_included():
    conf, need, pseudo = np.full(8, 0.9), np.linspace(0.1, 0.8, 8), np.zeros(8, dtype=int)
    state = ThresholdState(0.0, 2.0, np.ones(1), np.ones(1), 0.99)  # the student bar above every sample
    rule = LlkdRule(floor=0.5)
    llkd = select("llkd", conf, need, pseudo, state, rule=rule)[0]
    drawn = select("random", conf, need, pseudo, state, rng=np.random.default_rng(0), rule=rule)[0]
    assert llkd.sum() == drawn.sum() == 4


def test_distills_default_rule_keeps_every_teacher_passed_sample_and_weights_them_by_need():
    from llkd_edge.config import TrainConfig

    rule = rule_of(TrainConfig())
    assert rule != PAPER and rule.floor == 1.0
    conf, pseudo = np.array([0.9, 0.9, 0.9, 0.2]), np.zeros(4, dtype=int)
    need = np.array([0.1, 0.6, 0.3, 0.9])
    state = ThresholdState(0.5, 0.5, np.ones(1), np.ones(1), 0.99)  # a student bar above two of the confident three
    paper_mask = select("llkd", conf, need, pseudo, state)[0]
    mask, weights, after = select("llkd", conf, need, pseudo, state, rule=rule)
    assert paper_mask.tolist() == [False, True, False, False]
    assert mask.tolist() == (conf >= after.teacher_thresholds()[pseudo]).tolist() == [True, True, True, False]
    assert weights[:3] == pytest.approx(need[:3] / need[:3].mean())  # conf is equal: the need alone weights


def test_the_methods_are_the_configs_choices_and_say_truly_whether_they_read_the_need():
    from llkd_edge.config import SELECTION_METHODS

    assert tuple(METHODS) == SELECTION_METHODS  # one list of names: the CLI's choices are the methods
    conf, need, pseudo = batch(5)
    for name, method in METHODS.items():
        masks = [select(name, conf, n, pseudo, ThresholdState.initial(4), rng=np.random.default_rng(0))[0]
                 for n in (need, 1.0 - need)]
        # a method that claims not to read the need picks the same samples whatever it is (train.py then
        # skips need_pass="eval"'s extra forward pass for it); one that reads it picks otherwise here
        assert (masks[0] == masks[1]).all() != method.reads_need, name
