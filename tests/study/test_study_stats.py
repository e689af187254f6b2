"""The study's numbers, checked against sums worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from smorm.study.stats import Resampler, item_outcomes


def test_pair_outcomes_count_a_tie_as_wrong_and_pick_the_length_neutral_subsets():
    rows = [{"chosen": 0, "rejected": 1, "subset": "mt-bench-easy"},
            {"chosen": 2, "rejected": 3, "subset": "alpacaeval-easy"},
            {"chosen": 4, "rejected": 5, "subset": "llmbar-natural"}]
    rewards = np.array([1.0, 0.0, 0.5, 0.5, -1.0, 2.0])
    out = item_outcomes("reward-bench", rows, rewards)
    assert out["acc"].tolist() == [1.0, 0.0, 0.0]
    assert out["length-neutral"].tolist() == [1.0, 0.0]
    assert list(item_outcomes("pairs", rows, rewards)) == ["acc"]


def test_rm_bench_item_levels_by_hand():
    # chosen styles (concise, detailed, markdown) score 1, 2, 3; rejected 2.5, 0, 0
    rows = [{"chosen": [0, 1, 2], "rejected": [3, 4, 5]}]
    rewards = np.array([1.0, 2.0, 3.0, 2.5, 0.0, 0.0])
    out = item_outcomes("rm-bench", rows, rewards)
    # hard: c0>r1, c0>r2, c1>r2 = 1, 1, 1 -> 1; normal: c0>r0 0, c1>r1 1, c2>r2 1 -> 2/3
    # easy: c1>r0 0, c2>r0 1, c2>r1 1 -> 2/3
    assert out["hard"].tolist() == [1.0]
    assert out["normal"][0] == pytest.approx(2 / 3) and out["easy"][0] == pytest.approx(2 / 3)
    assert out["avg"][0] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_estimate_is_the_seed_mean_of_item_means_with_an_interval_around_it():
    outcomes = np.array([[1, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 0]], dtype=float)
    estimate = Resampler(2000, 3, seed=0).estimate(outcomes)
    assert estimate["mean"] == pytest.approx((0.75 + 0.5 + 0.75) / 3)
    assert estimate["per_seed"] == [0.75, 0.5, 0.75]
    assert estimate["seed_sd"] == pytest.approx(np.std([0.75, 0.5, 0.75], ddof=1))
    low, high = estimate["ci"]
    assert 0.0 <= low < estimate["mean"] < high <= 1.0


def test_paired_difference_of_equal_rows_is_exactly_zero_and_a_constant_gain_is_found():
    resampler = Resampler(500, 2, seed=1)
    rng = np.random.default_rng(0)
    b = (rng.random((2, 200)) < 0.5).astype(float)
    same = resampler.difference(b, b)
    assert same["mean"] == 0.0 and same["ci"] == [0.0, 0.0] and not same["excludes_zero"]
    a = b.copy()
    a[:, :40] = 1.0  # a wins 40 items b may have lost: a gain only on those
    gain = resampler.difference(a, b)
    expected = (a - b).mean()
    assert gain["mean"] == pytest.approx(expected)
    assert gain["excludes_zero"] and gain["ci"][0] > 0


def test_the_interval_widens_with_seed_variation():
    resampler = Resampler(2000, 3, seed=0)
    items = np.tile((np.arange(100) % 2).astype(float), (3, 1))  # every seed 50%
    steady = resampler.estimate(items)
    varied = items.copy()
    varied[0, :30] = 1.0
    varied[2, 1::2][:30] = 0.0  # seeds at 65%, 50%, 20%... spread across seeds
    shaky = resampler.estimate(varied)
    assert (shaky["ci"][1] - shaky["ci"][0]) > (steady["ci"][1] - steady["ci"][0])


def test_a_seed_free_floor_is_paired_with_every_seed():
    resampler = Resampler(200, 2, seed=0)
    floor = np.array([[1.0, 0.0, 1.0, 0.0]])
    runs = np.array([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0]])
    diff = resampler.difference(runs, floor)
    assert diff["mean"] == pytest.approx(0.25)
