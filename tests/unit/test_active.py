"""active.py: which texts the teacher labels under --label-budget. Pure numpy and scikit-learn, by hand."""

import numpy as np
import pytest

from llkd_edge.labels.active import budget_count, coverage_picks, margin, next_picks, run_rounds
from llkd_edge.config import LabelBudget
from llkd_edge.errors import UserError


def _blobs(sizes, seed=0, spread=0.05):
    """Points around well-separated centres (one per size), and which centre each belongs to."""
    rng = np.random.default_rng(seed)
    centres = np.eye(len(sizes), 8) * 3
    x = np.vstack([c + spread * rng.standard_normal((n, 8)) for c, n in zip(centres, sizes)])
    return x, np.repeat(np.arange(len(sizes)), sizes)


def _unsure_of_kinds_1_and_2():
    """Three kinds of 40; a probe sure of kind 0 and unsure of kinds 1 and 2 (a margin that grows with the
    index inside each kind)."""
    x, kind = _blobs([40, 40, 40])
    probs = np.tile([0.98, 0.01, 0.01], (120, 1))
    for j in range(40, 120):
        d = 0.01 * (j % 40) / 40
        probs[j] = [0.0, 0.5 + d, 0.5 - d]
    return x, kind, probs


def test_a_budget_is_a_share_or_a_count():
    assert budget_count(0.25, 1000) == 250
    assert budget_count(1, 1000) == 1000
    assert budget_count(300, 1000) == 300
    assert budget_count(5000, 1000) == 1000
    assert budget_count(0.0001, 1000) == 1
    with pytest.raises(ValueError):
        budget_count(0, 10)
    for bad in (dict(budget=0), dict(budget=2.5), dict(budget=0.5, step=0), dict(budget=0.5, strategy="greedy")):
        with pytest.raises(UserError):
            LabelBudget(**bad)


def test_the_seed_round_covers_every_cluster_the_first_rows_would_miss():
    # 200 texts of one kind first, then 4 small kinds: the first 5 rows are all kind 0, k-means picks one of each.
    x, kind = _blobs([200, 10, 10, 10, 10])
    picks = coverage_picks(x, 5, seed=0)
    assert sorted(kind[picks].tolist()) == [0, 1, 2, 3, 4]
    assert kind[picks[0]] == 0  # the largest cluster's text first
    assert len(set(picks.tolist())) == 5
    assert coverage_picks(x[:3], 5, seed=0).tolist() == [0, 1, 2]


def test_the_seed_round_needs_memory_of_pool_by_clusters_not_by_dimensions():
    # A 2000-text pool of 384-d embeddings, 100 clusters: an (N, n, D) difference array would be 614 MB.
    import tracemalloc

    x = np.random.default_rng(0).normal(size=(2000, 384)).astype(np.float32)
    tracemalloc.start()
    try:
        picks = coverage_picks(x, 100, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(set(picks.tolist())) == 100
    assert peak < 100e6, f"the seed round peaked at {peak / 1e6:.0f} MB"


def test_margin():
    assert margin(np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])) == pytest.approx([0.5, 0.05])


def test_active_rounds_pick_the_unsure_and_spread_them_over_clusters():
    # Three kinds; the probe is sure about kind 0 and unsure about kinds 1 and 2 (a margin that grows with
    # the index inside each kind). Three picks: the least sure of kinds 1 and 2 and never a sure one; the
    # diversity step keeps them from all coming from one kind.
    x, kind, probs = _unsure_of_kinds_1_and_2()
    unlabelled = np.arange(120)
    picks = next_picks("active", probs, x, unlabelled, 2, seed=0, round_=1)
    assert sorted(kind[picks].tolist()) == [1, 2]
    assert set(picks.tolist()) <= {40, 41, 42, 80, 81, 82}
    assert margin(probs[picks[:1]])[0] <= margin(probs[picks[1:]])[0]  # most informative first
    # only unlabelled texts are picked
    rest = np.setdiff1d(unlabelled, [40, 80])
    assert not {40, 80} & set(next_picks("active", probs, x, rest, 2, seed=0, round_=1).tolist())


def test_random_rounds_are_seeded_and_draw_from_the_unlabelled_only():
    x, _ = _blobs([30, 30])
    probs = np.full((60, 2), 0.5)
    unlabelled = np.arange(10, 60)
    a = next_picks("random", probs, x, unlabelled, 8, seed=3, round_=2)
    assert a.tolist() == next_picks("random", probs, x, unlabelled, 8, seed=3, round_=2).tolist()
    assert a.tolist() != next_picks("random", probs, x, unlabelled, 8, seed=3, round_=3).tolist()
    assert set(a.tolist()) <= set(unlabelled.tolist()) and len(set(a.tolist())) == 8


def test_random_rounds_fit_no_probe_and_active_ones_do(monkeypatch):
    # The default strategy pays for no probe fit per round; only active rounds read the probe.
    import llkd_edge.labels.active as active

    x, kind = _blobs([20, 20])
    answers = np.eye(2)[kind] * 0.8 + 0.1
    fits = []
    real = active._probe
    monkeypatch.setattr(active, "_probe", lambda *a: fits.append(1) or real(*a))
    picks, _, _ = run_rounds(x, 20, 5, "random", 0, lambda idx: answers[idx])
    assert fits == [] and len(set(picks.tolist())) == 20
    run_rounds(x, 20, 5, "active", 0, lambda idx: answers[idx])
    assert len(fits) == 3  # one per round after the coverage round


def test_rounds_ask_only_for_their_picks_and_a_larger_budget_makes_the_same_rounds_first():
    # The teacher's answers are a fixed table here (the part under test is the rounds, not the teacher).
    x, kind = _blobs([30, 30, 30], spread=0.6)
    answers = np.eye(3)[kind] * 0.7 + 0.1
    asked = []

    def ask(idx):
        asked.append(idx.tolist())
        return answers[idx]

    picks, probs, seconds = run_rounds(x, 25, 10, "active", 0, ask)
    assert [len(a) for a in asked] == [10, 10, 5] and len(seconds) == 3
    assert len(set(picks.tolist())) == 25 and probs == pytest.approx(answers[picks])
    more, _, _ = run_rounds(x, 40, 10, "active", 0, lambda idx: answers[idx])
    assert more[:20].tolist() == picks[:20].tolist()  # whole rounds repeat; the partial one starts the same
    assert set(picks[20:].tolist()) <= set(more[20:30].tolist())
    assert set(kind[picks[:10]].tolist()) == {0, 1, 2}


def test_coverage_rounds_pick_one_typical_text_per_cluster_of_the_unlabelled():
    # Three kinds; kind 0's texts already labelled. Two picks: one from each of the other kinds, each the
    # text nearest its cluster's centre, whatever the probe says (uniform here).
    x, kind = _blobs([20, 20, 20], spread=0.3)
    probs = np.full((60, 3), 1 / 3)
    unlabelled = np.arange(20, 60)
    picks = next_picks("coverage", probs, x, unlabelled, 2, seed=0, round_=1)
    assert sorted(kind[picks].tolist()) == [1, 2]
    for p in picks:
        same = unlabelled[kind[unlabelled] == kind[p]]
        centre = x[same].mean(axis=0)
        nearest = same[np.argmin(((x[same] - centre) ** 2).sum(1))]
        assert np.sum((x[p] - centre) ** 2) <= np.sum((x[nearest] - centre) ** 2) + 0.05
    assert next_picks("coverage", probs, x, unlabelled, 2, seed=0, round_=1).tolist() == picks.tolist()


def test_the_rest_is_filled_by_a_probe_on_the_teachers_labels():
    # Two kinds; the teacher labelled 5 texts of each, right. The 50 others get the probe's distribution,
    # sure and right, in ascending index order; nothing picked is filled again.
    from llkd_edge.labels.active import fill_rest

    x, kind = _blobs([30, 30], spread=0.3)
    picked = np.r_[np.arange(5), 30 + np.arange(5)]
    teacher = np.eye(2)[kind[picked]] * 0.8 + 0.1
    rest, probs = fill_rest(x, picked, teacher)
    assert rest.tolist() == [i for i in range(60) if i not in set(picked.tolist())]
    assert probs.shape == (50, 2) and probs.sum(1) == pytest.approx(1)
    assert (probs.argmax(1) == kind[rest]).all() and probs.max(1).min() > 0.9
    none, empty = fill_rest(x[:10], np.arange(10), np.eye(2)[kind[:10]])
    assert none.size == 0 and empty.shape == (0, 2)


def test_a_tempered_fill_keeps_the_probes_labels_and_is_no_surer_than_the_teacher():
    # The probe is sure (> 0.9) where the teacher said 0.8 at best: tempered, its mean top probability is
    # the teacher's (batch-calibrated, as the probe learns it), and every argmax stays.
    from llkd_edge.labels.active import fill_rest, tempered

    x, kind = _blobs([30, 30], spread=0.3)
    picked = np.r_[np.arange(5), 30 + np.arange(5)]
    teacher = np.eye(2)[kind[picked]] * 0.6 + 0.2
    _, sure = fill_rest(x, picked, teacher)
    rest, calm = fill_rest(x, picked, teacher, temper=True)
    assert (calm.argmax(1) == sure.argmax(1)).all() and (calm.argmax(1) == kind[rest]).all()
    assert calm.max(1).mean() == pytest.approx(0.8, abs=1e-6) and sure.max(1).mean() > 0.85
    assert calm.sum(1) == pytest.approx(1)
    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]])
    assert tempered(p, 0.9) == pytest.approx(p)  # already calmer than asked: unchanged
    assert tempered(p, 0.4).max(1).mean() == pytest.approx(0.4, abs=1e-6)


def test_confident_rounds_pick_the_unsure_texts_the_teacher_is_predicted_to_get_right():
    # Three kinds, the probe equally unsure of kinds 1 and 2 and sure of kind 0. The teacher was sure on the
    # kind-1 texts it labelled and unsure on the kind-2 ones: the ridge predicts that for the rest, and the
    # picks come from kind 1 only, where plain uncertainty (``active``) splits them over kinds 1 and 2.
    from llkd_edge.labels.active import teacher_trusted

    x, kind, probs = _unsure_of_kinds_1_and_2()
    labelled = np.r_[35:40, 75:80, 115:120]
    told = np.array([[0.9, 0.05, 0.05]] * 5 + [[0.05, 0.9, 0.05]] * 5 + [[0.3, 0.3, 0.4]] * 5)
    trusted = teacher_trusted(x[labelled], told, x)
    assert trusted.shape == (120,) and trusted[:75].all() and not trusted[80:].any()
    unlabelled = np.setdiff1d(np.arange(120), labelled)
    picks = next_picks("confident", probs, x, unlabelled, 2, seed=0, round_=1, trusted=trusted)
    assert set(kind[picks].tolist()) == {1} and not set(picks.tolist()) & set(labelled.tolist())
    assert sorted(kind[next_picks("active", probs, x, unlabelled, 2, seed=0, round_=1)].tolist()) == [1, 2]


def test_confident_rounds_fit_the_probe_and_the_teacher_gate_each_round():
    x, kind = _blobs([20, 20, 20], spread=0.6)
    answers = np.eye(3)[kind] * 0.7 + 0.1
    picks, probs, seconds = run_rounds(x, 30, 10, "confident", 0, lambda idx: answers[idx])
    assert len(set(picks.tolist())) == 30 and len(seconds) == 3 and probs == pytest.approx(answers[picks])
    again, _, _ = run_rounds(x, 30, 10, "confident", 0, lambda idx: answers[idx])
    assert again.tolist() == picks.tolist()  # a pure function of pool, labels and seed: resume and reuse hold


def test_shares_split_a_round_equally_as_far_as_each_class_has_texts():
    from llkd_edge.labels.active import shares

    assert shares(np.array([10, 1, 10]), 9).tolist() == [4, 1, 4]  # the small class's leftover goes to the others
    assert shares(np.array([10, 1, 10]), 10).tolist() == [5, 1, 4]  # remainder: the largest first, then index
    assert shares(np.array([3, 5]), 20).tolist() == [3, 5]  # never more than there is
    assert shares(np.array([7, 7, 7]), 2).tolist() == [1, 1, 0]
    assert shares(np.array([4, 0]), 3).tolist() == [3, 0]


def test_balanced_rounds_give_every_predicted_class_its_share_of_the_confident_picks():
    # The setting of the test above: ``confident`` spends the whole round on kind 1 (the probe's class 1, where
    # the teacher is trusted and the probe unsure); ``balanced`` gives the probe's class 0 (kind 0) half of it,
    # and still takes class 1's half from kind 1, not from the untrusted kind 2. Most informative first.
    from llkd_edge.labels.active import teacher_trusted

    x, kind, probs = _unsure_of_kinds_1_and_2()
    labelled = np.r_[35:40, 75:80, 115:120]
    told = np.array([[0.9, 0.05, 0.05]] * 5 + [[0.05, 0.9, 0.05]] * 5 + [[0.3, 0.3, 0.4]] * 5)
    trusted = teacher_trusted(x[labelled], told, x)
    unlabelled = np.setdiff1d(np.arange(120), labelled)
    confident = next_picks("confident", probs, x, unlabelled, 4, seed=0, round_=1, trusted=trusted)
    picks = next_picks("balanced", probs, x, unlabelled, 4, seed=0, round_=1, trusted=trusted)
    assert kind[confident].tolist() == [1, 1, 1, 1]
    assert kind[picks].tolist() == [1, 1, 0, 0] and len(set(picks.tolist())) == 4
    picked, _, _ = run_rounds(x, 30, 10, "balanced", 0, lambda idx: np.eye(3)[kind[idx]] * 0.7 + 0.1)
    assert len(set(picked.tolist())) == 30 and set(kind[picked].tolist()) == {0, 1, 2}


def test_the_strategies_are_the_configs_choices_and_say_truly_what_they_read():
    from llkd_edge.config import STRATEGIES as NAMES
    from llkd_edge.labels.active import STRATEGIES

    assert tuple(sorted(STRATEGIES)) == NAMES  # one list of names: the CLI's choices are the strategies
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    probs = rng.dirichlet(np.ones(3), size=60)
    unlabelled = np.arange(10, 60)
    trusted = rng.random(60) < 0.5
    for name, how in STRATEGIES.items():
        # run_rounds skips the probe fit and the teacher gate for a strategy that says it reads neither: then it
        # must pick without them; one that reads them must fail without them
        call = lambda: next_picks(name, probs if how.reads_probe else None, x, unlabelled, 5, seed=0, round_=1,
                                  trusted=trusted if how.reads_trust else None)
        assert len(call()) == 5, name
        if how.reads_probe:
            with pytest.raises((TypeError, IndexError)):
                next_picks(name, None, x, unlabelled, 5, seed=0, round_=1, trusted=trusted)
        if how.reads_trust:
            with pytest.raises((TypeError, IndexError)):
                next_picks(name, probs, x, unlabelled, 5, seed=0, round_=1, trusted=None)
