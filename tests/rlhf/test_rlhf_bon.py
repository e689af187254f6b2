"""Best-of-N estimator: exact against brute-force enumeration of every n-subset."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from smorm.rlhf.bon import (
    best_of_n_weights,
    bon_curve,
    bon_grid,
    expected_best_of_n,
    kl_bon,
    n_for_kl,
)


def brute_force_best_of_n(proxy: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Average over all C(N, n) subsets of the value of the proxy's pick, ties split uniformly."""
    totals = np.zeros(values.shape[1:])
    subsets = list(itertools.combinations(range(len(proxy)), n))
    for subset in subsets:
        best = max(proxy[i] for i in subset)
        tied = [i for i in subset if proxy[i] == best]
        totals = totals + np.mean([values[i] for i in tied], axis=0)
    return totals / len(subsets)


def test_kl_bon_formula_and_paper_anchor():
    assert kl_bon(1) == 0.0
    assert kl_bon(2) == pytest.approx(math.log(2) - 0.5)
    # 000 Sec. 3: KL from 0 to 5 by n from 1 to 405.
    # (the paper rounds: KL_BoN(405) = 5.006 and the smallest n reaching 5 nats is 403).
    assert kl_bon(405) == pytest.approx(math.log(405) - 404 / 405) == pytest.approx(5.0064, abs=1e-4)
    assert n_for_kl(5.0) == 403
    assert kl_bon(n_for_kl(2.0)) >= 2.0 > kl_bon(n_for_kl(2.0) - 1)


def test_grid_small_pool_is_every_n_and_large_pool_is_spaced_by_kl():
    assert bon_grid(7) == [1, 2, 3, 4, 5, 6, 7]
    grid = bon_grid(405, points=20)
    assert grid[0] == 1 and grid[-1] == 405 and grid == sorted(set(grid))
    gaps = np.diff([kl_bon(n) for n in grid])
    assert gaps.max() < 0.5  # roughly even steps of 5 / 19 ≈ 0.26 nats


def test_weights_by_hand_for_n_2_of_4():
    # C(i-1, 1) / C(4, 2) = (0, 1, 2, 3) / 6.
    np.testing.assert_allclose(best_of_n_weights(4, 2), [0, 1 / 6, 2 / 6, 3 / 6])
    np.testing.assert_allclose(best_of_n_weights(4, 4), [0, 0, 0, 1])
    np.testing.assert_allclose(best_of_n_weights(4, 1), [0.25] * 4)


def test_weights_sum_to_one_for_a_large_pool_in_log_space():
    weights = best_of_n_weights(2000, 405)
    assert np.all(np.isfinite(weights))
    assert weights.sum() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("with_ties", [False, True])
def test_exact_against_enumeration_of_every_subset(with_ties: bool):
    rng = np.random.default_rng(3)
    proxy = rng.normal(size=7)
    if with_ties:
        proxy[[1, 4]] = proxy[2]  # three-way tie
        proxy[6] = proxy[0]
    values = rng.normal(size=(7, 3))  # e.g. gold score, an attribute, a length
    for n in range(1, 8):
        np.testing.assert_allclose(
            expected_best_of_n(proxy, values, n), brute_force_best_of_n(proxy, values, n), rtol=0, atol=1e-12
        )


def test_curve_normalised_to_zero_and_averaged_over_prompts():
    rng = np.random.default_rng(0)
    proxy = rng.normal(size=(3, 6))
    gold = proxy + rng.normal(size=(3, 6))
    length = rng.integers(5, 50, size=(3, 6)).astype(float)
    curve = bon_curve("p", proxy, gold, [1, 2, 6], extra={"length": length})
    assert curve.proxy_score[0] == pytest.approx(0.0, abs=1e-12)
    assert curve.gold_score[0] == pytest.approx(0.0, abs=1e-12)
    # n = N picks each prompt's proxy argmax for sure.
    picks = proxy.argmax(axis=1)
    expected_gold = np.mean([gold[p, picks[p]] - gold[p].mean() for p in range(3)])
    assert curve.gold_score[2] == pytest.approx(expected_gold)
    assert curve.extra["length"][2] == pytest.approx(np.mean([length[p, picks[p]] for p in range(3)]))
    assert curve.extra["length"][0] == pytest.approx(length.mean())
    n2 = np.mean([brute_force_best_of_n(proxy[p], gold[p], 2) - gold[p].mean() for p in range(3)])
    assert curve.gold_score[1] == pytest.approx(n2)
    assert curve.kl == pytest.approx([0.0, math.log(2) - 0.5, math.log(6) - 5 / 6])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="pool size"):
        bon_curve("p", np.zeros((2, 3)), np.zeros((2, 3)), [1, 4])
    with pytest.raises(ValueError, match=r"\[P, N\]"):
        bon_curve("p", np.zeros((2, 3)), np.zeros((2, 4)), [1])
    with pytest.raises(ValueError):
        best_of_n_weights(3, 0)


def test_paired_difference_and_drop_from_peak_by_hand():
    from smorm.rlhf.bon import drop_from_peak, paired_gold_difference

    gold = np.array([[0.0, 2.0], [1.0, 3.0]])  # two prompts, N = 2; pool means 1 and 2
    first = bon_curve("first", np.array([[0.0, 1.0], [0.0, 1.0]]), gold, [1, 2])  # picks gold 2, 3 at n = 2
    second = bon_curve("second", np.array([[1.0, 0.0], [0.0, 1.0]]), gold, [1, 2])  # picks gold 0, 3
    assert np.asarray(first.gold_by_prompt) == pytest.approx(np.array([[0.0, 1.0], [0.0, 1.0]]), abs=1e-12)
    assert np.asarray(second.gold_by_prompt) == pytest.approx(np.array([[0.0, -1.0], [0.0, 1.0]]), abs=1e-12)
    mean, sem = paired_gold_difference(second, first)
    # n = 2: per-prompt differences -2 and 0 -> mean -1, s.e.m. = std([-2, 0], ddof=1) / sqrt(2) = 1
    assert mean == pytest.approx([0.0, -1.0], abs=1e-12) and sem == pytest.approx([0.0, 1.0], abs=1e-12)
    # second's mean curve is 0, 0: the peak is n = 1, per-prompt falls 1 and -1 -> 0 ± 1
    assert drop_from_peak(second) == pytest.approx(
        {"peak_n": 1, "peak_kl": 0.0, "peak_gold": 0.0, "last_n": 2, "drop": 0.0, "drop_sem": 1.0}, abs=1e-12)
    assert drop_from_peak(first)["peak_n"] == 2 and drop_from_peak(first)["drop"] == pytest.approx(0.0, abs=1e-12)
    other_grid = bon_curve("third", np.array([[0.0, 1.0], [0.0, 1.0]]), gold, [1])
    with pytest.raises(ValueError, match="same pool and grid"):
        paired_gold_difference(other_grid, first)


def test_the_cross_fitted_fall_takes_each_half_peak_from_the_other_half_by_hand():
    from smorm.rlhf.bon import BoNCurve, crossfit_drop, drop_from_peak

    by_prompt = [[0.0, 2.0, 1.0], [0.0, 1.0, 3.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]]  # [P = 4, G = 3]
    curve = BoNCurve("p", [1, 2, 4], [0.0, 0.19, 0.64], [0.0] * 3, [0.0] * 3, [0.0] * 3, [0.0] * 3,
                     num_prompts=4, gold_by_prompt=by_prompt)
    # even prompts 0, 2: mean [0, 2.5, 0.5] -> peak n = 2; odd prompts 1, 3: mean [0, 0.5, 2] -> peak n = 4.
    # even prompts fall at the odd half's peak (the last n): 0, 0; odd prompts at n = 2: 1 - 3, 0 - 1.
    falls = np.array([0.0, -2.0, 0.0, -1.0])
    result = crossfit_drop(curve)
    assert result["crossfit_peak_n"] == [4, 2]
    assert result["crossfit_drop"] == pytest.approx(-0.75)
    assert result["crossfit_drop_sem"] == pytest.approx(falls.std(ddof=1) / 2)
    # the in-sample fall at the pooled peak (n = 2: mean [0, 1.5, 1.25]) is positive on the same data
    assert drop_from_peak(curve)["drop"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        crossfit_drop(BoNCurve("q", [1], [0.0], [0.0], [0.0], [0.0], [0.0], gold_by_prompt=[[0.0]]))
