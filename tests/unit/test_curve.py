"""student/curve.py: what a learning curve tells a user whose student ends below its teacher (pure arithmetic), and
the seeded share of the pool each curve student learns from."""

import numpy as np

from llkd_edge.student.curve import FLAT, REACH, advice, subset, summary_line
from llkd_edge.student.pool import Pool


def test_a_rising_curve_says_about_how_many_texts_would_reach_the_teacher():
    # +0.04 a doubling, 0.08 short at 600 texts: two more doublings, about 2,400 texts
    curve = advice([(150, 0.40), (300, 0.44), (600, 0.48)], 0.56)
    assert curve["gain_per_doubling"] == 0.04 and curve["texts_needed"] == 2400
    assert "about 2,400 texts (4.0x this pool)" in curve["verdict"]
    assert "2,400" in summary_line(curve) and "+0.040 a doubling" in summary_line(curve)


def test_a_flat_curve_says_more_of_the_same_labels_will_not_help():
    curve = advice([(150, 0.45), (300, 0.46), (600, 0.45)], 0.50)
    assert curve["gain_per_doubling"] < FLAT and curve["texts_needed"] is None
    assert curve["verdict"].startswith("flat") and "--gold" in curve["verdict"]


def test_a_slow_rise_is_not_extrapolated_past_the_reach():
    curve = advice([(150, 0.30), (300, 0.32), (600, 0.34)], 0.60)  # 13 doublings away
    assert curve["texts_needed"] is None and f"more than {REACH}x" in curve["verdict"]


def test_a_student_at_its_teacher_is_told_so():
    assert advice([(150, 0.80), (300, 0.85), (600, 0.90)], 0.88)["verdict"] == "at or above its teacher"


def test_a_curve_subset_is_seeded_keeps_every_gold_sample_and_the_pool_order():
    n = 40
    trusted = np.zeros(n, dtype=bool)
    trusted[[3, 17]] = True
    pool = Pool([f"t{i}" for i in range(n)], np.full((n, 2), 0.5), trusted, np.arange(n, dtype=float))
    part = subset(pool, 0.25, seed=1)
    assert len(part.texts) == 2 + round(0.25 * 38)
    assert {"t3", "t17"} <= set(part.texts) and part.trusted.sum() == 2
    order = [int(t[1:]) for t in part.texts]
    assert order == sorted(order) and list(part.weights) == order
    assert subset(pool, 0.25, seed=1).texts == part.texts and subset(pool, 0.25, seed=2).texts != part.texts


def test_a_gap_within_the_noise_of_few_eval_texts_is_called_level_not_extrapolated():
    curve = advice([(50, 0.47), (100, 0.54), (200, 0.52)], 0.55, n_eval=40)  # 0.03 short; +/-0.08 on 40 texts
    assert curve["texts_needed"] is None and curve["verdict"].startswith("level with its teacher within the noise")
    assert advice([(50, 0.47), (100, 0.54), (200, 0.52)], 0.55, n_eval=2000)["texts_needed"] is not None


def test_a_falling_curve_says_more_of_these_labels_made_it_worse():
    curve = advice([(150, 0.476), (300, 0.423), (600, 0.413)], 0.494, n_eval=200)  # election-tweets, static
    assert curve["gain_per_doubling"] < -FLAT and curve["verdict"].startswith("falling")
