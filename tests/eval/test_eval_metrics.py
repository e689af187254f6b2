"""Metrics on small tables whose answers are worked out by hand in each test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smorm.eval.metrics import (
    best_of_accuracy,
    bootstrap_ci,
    effective_rank,
    expected_calibration_error,
    hidden_state_norms,
    kendall_tau_b,
    pairwise_accuracy,
    reward_difference_outliers,
)
from smorm.eval.plots import plot_reliability


def test_pairwise_accuracy_counts_ties_as_wrong():
    # pairs: 3>1 right, 1=1 tie (wrong), 2<3 wrong, 0>-1 right -> 2/4
    assert pairwise_accuracy([3.0, 1.0, 2.0, 0.0], [1.0, 1.0, 3.0, -1.0]) == 0.5
    assert pairwise_accuracy(torch.tensor([3.0, 1.0]), torch.tensor([1.0, 2.0])) == 0.5


def test_pairwise_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match=r"chosen rewards: value at index \(1,\) is nan"):
        pairwise_accuracy([1.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ValueError, match="differ in length"):
        pairwise_accuracy([1.0, 2.0], [0.0])
    with pytest.raises(ValueError, match="empty"):
        pairwise_accuracy([], [])


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    correct = np.array([1.0] * 30 + [0.0] * 10)
    low, high = bootstrap_ci(correct, seed=3)
    assert low < 0.75 < high
    assert bootstrap_ci(correct, seed=3) == (low, high)
    # continuous values: a different seed gives different resamples, hence a different interval
    continuous = np.random.default_rng(0).normal(size=40)
    assert bootstrap_ci(continuous, seed=3) != bootstrap_ci(continuous, seed=4)
    assert bootstrap_ci(np.ones(7)) == (1.0, 1.0)


def test_bootstrap_ci_matches_normal_approximation():
    # for the mean of n=400 Bernoulli(0.7) values the 95% interval is about p +- 1.96 sqrt(p(1-p)/n)
    correct = np.array([1.0] * 280 + [0.0] * 120)
    half_width = 1.96 * math.sqrt(0.7 * 0.3 / 400)
    low, high = bootstrap_ci(correct, n_resamples=4000, seed=0)
    assert low == pytest.approx(0.7 - half_width, abs=0.01)
    assert high == pytest.approx(0.7 + half_width, abs=0.01)


def test_bootstrap_ci_of_a_statistic_with_strata_keeps_stratum_sizes():
    strata = ["a", "a", "a", "b", "b"]
    values = np.array([1.0, 2.0, 3.0, 10.0, 20.0])
    # resampling within strata never moves an index across strata: the count of 'a' items is fixed
    count_a = bootstrap_ci(lambda idx: float(np.sum(idx < 3)), n_items=5, strata=strata)
    assert count_a == (3.0, 3.0)
    # the mean of stratum b's resampled values stays within b's values
    low, high = bootstrap_ci(lambda idx: float(values[idx[3:]].mean()), n_items=5, strata=strata)
    assert 10.0 <= low <= high <= 20.0
    with pytest.raises(ValueError, match="n_items"):
        bootstrap_ci(lambda idx: 0.0)


def test_ece_four_pairs_by_hand():
    # margins chosen so sigma(margin) = 0.95, 0.75, 0.25, 0.65 (no value on a bin edge)
    margins = np.log([19.0, 3.0, 1.0 / 3.0, 13.0 / 7.0])
    result = expected_calibration_error(margins, np.zeros(4))
    # confidence of the predicted winner: 0.95, 0.75, 0.75, 0.65; correct: 1, 1, 0, 1
    # bins (0.9,1]: n=1 |1-0.95|; (0.7,0.8]: n=2 |0.5-0.75|; (0.6,0.7]: n=1 |1-0.65|
    expected = (1 * 0.05 + 2 * 0.25 + 1 * 0.35) / 4
    assert result.ece == pytest.approx(expected)  # 0.225
    assert result.bin_counts == (0, 0, 0, 0, 0, 0, 1, 2, 0, 1)
    assert result.bin_accuracy[7] == 0.5 and result.bin_confidence[7] == pytest.approx(0.75)
    assert math.isnan(result.bin_accuracy[0])
    assert result.to_dict()["bin_accuracy"][0] is None


def test_ece_tie_is_wrong_with_confidence_half():
    result = expected_calibration_error([1.0], [1.0])
    assert result.bin_counts[4] == 1  # 0.5 lies in (0.4, 0.5]
    assert result.ece == pytest.approx(0.5)


def test_ece_equals_binning_both_orientations():
    # independent formula: put (sigma(m), label 1) and (sigma(-m), label 0) for every pair into
    # 10 right-closed bins over [0, 1] and sum |sum p - sum label| / (2N)
    rng = np.random.default_rng(0)
    margins = rng.normal(0.5, 2.0, size=300)
    probs = np.concatenate([1 / (1 + np.exp(-margins)), 1 / (1 + np.exp(margins))])
    labels = np.concatenate([np.ones(300), np.zeros(300)])
    bins = np.clip(np.ceil(probs * 10).astype(int) - 1, 0, 9)
    both_orientations = sum(abs(probs[bins == b].sum() - labels[bins == b].sum()) for b in range(10)) / 600
    assert expected_calibration_error(margins, np.zeros(300)).ece == pytest.approx(both_orientations)


def test_plot_reliability_writes_png(tmp_path):
    result = expected_calibration_error([2.0, 1.0, -1.0], [0.0, 0.0, 0.0])
    path = plot_reliability(result, tmp_path / "plots" / "reliability.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reward_difference_outliers_by_hand():
    margins = [0.1, 0.2, 0.3, 0.4, 5.0, -0.1, -0.2, -0.3, -0.4, -3.0, 0.0]
    out = reward_difference_outliers(margins, np.zeros(len(margins)))
    # positives: Q1 = 0.2, Q3 = 0.4, IQR 0.2 -> fences (-0.1, 0.7): only 5.0 is out
    assert (out.positive_count, out.positive_mean) == (1, 5.0)
    assert out.positive_fences == pytest.approx((-0.1, 0.7))
    # negatives: Q1 = -0.4, Q3 = -0.2 -> fences (-0.7, 0.1): only -3.0 is out; 0.0 is in no group
    assert (out.negative_count, out.negative_mean) == (1, -3.0)
    assert (out.num_positive, out.num_negative) == (5, 5)
    none = reward_difference_outliers([1.0, 2.0], [0.0, 0.0])
    assert none.positive_count == 0 and none.positive_mean is None and none.negative_fences is None


def test_hidden_state_norms_by_hand():
    # norms 5 and 10: mean 7.5, population variance 6.25
    assert hidden_state_norms(torch.tensor([[3.0, 4.0], [6.0, 8.0]])) == (7.5, 6.25)


def test_effective_rank_of_known_singular_values():
    # singular values 3, 1, 0 -> p = (3/4, 1/4); erank = exp(-(3/4 ln 3/4 + 1/4 ln 1/4))
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    hidden = np.zeros((3, 4))
    hidden[0, 0], hidden[1, 1] = 3.0, 1.0
    assert effective_rank(hidden) == pytest.approx(expected)
    # rotating the rows does not change singular values
    rotation, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    assert effective_rank(rotation @ hidden) == pytest.approx(expected)
    assert effective_rank(np.eye(5)) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="all-zero"):
        effective_rank(np.zeros((2, 2)))


def test_kendall_tau_b_with_ties_by_hand():
    # 6 pairs: 4 concordant, 0 discordant, 1 tied in predicted only, 1 tied in reference only
    # tau_b = (4 - 0) / sqrt((6 - 1) * (6 - 1)) = 0.8
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    assert kendall_tau_b([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))


def test_best_of_accuracy_by_hand():
    # prompt 1: index 1 strictly highest (hit); prompt 2: tie at the top (miss); prompt 3: miss
    scores = [[1.0, 3.0, 2.0], [5.0, 5.0, 1.0], [0.0, 1.0]]
    assert best_of_accuracy(scores, [1, 0, 0]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="best index 3"):
        best_of_accuracy([[1.0, 2.0]], [3])
