"""Verbosity debiasing (004 Eq. 2-3): λ_i makes Spearman(r_i - λ_i r_v, r_v) ≈ 0, checked with scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from smorm.gating.debias import (
    debias_linear_weights,
    debias_matrix,
    solve_penalty,
    spearman,
    verbosity_penalties,
)

ATTRS = ["helpfulness", "correctness", "harmlessness", "verbosity"]


def reference_rewards(n: int = 800, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    verbose = rng.normal(size=n)
    return torch.tensor(np.stack([
        0.8 * verbose + rng.normal(size=n),    # strongly length-biased
        0.2 * verbose + rng.normal(size=n),    # mildly
        -0.5 * verbose + rng.normal(size=n),   # anti-correlated: needs a negative λ
        verbose,
    ], axis=1))


def test_our_spearman_matches_scipy_with_ties():
    a = np.array([1.0, 2.0, 2.0, 5.0, 3.0, 3.0, 0.0])
    b = np.array([0.1, 0.3, 0.2, 0.9, 0.5, 0.4, 0.0])
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_lambda_makes_spearman_with_verbosity_about_zero():
    rewards = reference_rewards()
    result = verbosity_penalties(rewards, ATTRS, "verbosity")
    values, verbose = rewards.numpy(), rewards[:, 3].numpy()
    for k, name in enumerate(ATTRS[:3]):
        before = spearmanr(values[:, k], verbose).statistic
        after = spearmanr(values[:, k] - result.lambdas[k] * verbose, verbose).statistic
        assert abs(before) > 0.15, name
        assert abs(after) < 2e-3, name  # a step function of λ: zero up to one rank swap of 800
        assert result.corr_before[k] == pytest.approx(before, abs=1e-12)
        assert result.corr_after[k] == pytest.approx(after, abs=1e-12)
    assert result.lambdas[0] > result.lambdas[1] > 0 > result.lambdas[2]
    assert result.lambdas[3] == 1.0 and result.corr_after[3] == 0.0  # Eq. 3 for verbosity itself
    assert result.reference_size == 800
    assert [row["attribute"] for row in result.rows()] == ATTRS


def test_solve_penalty_leaves_uncorrelated_and_constant_rewards_alone():
    verbose = np.arange(10, dtype=float)
    assert solve_penalty(np.full(10, 3.0), verbose) == 0.0
    independent = np.array([3.0, 9.0, 1.0, 7.0, 5.0, 0.0, 8.0, 2.0, 6.0, 4.0])
    lam = solve_penalty(independent, verbose)
    assert abs(spearmanr(independent - lam * verbose, verbose).statistic) <= abs(
        spearmanr(independent, verbose).statistic) + 1e-12


def test_debias_matrix_and_folded_weights_apply_eq_2():
    lambdas = [0.5, -0.25, 1.0]
    transform = debias_matrix(lambdas, verbosity_index=2)
    r = torch.tensor([[1.0, 2.0, 4.0], [0.0, -1.0, 2.0]])
    expected = torch.stack([r[:, 0] - 0.5 * r[:, 2], r[:, 1] + 0.25 * r[:, 2], torch.zeros(2)], dim=1)
    assert torch.allclose(r @ transform, expected)
    weights = torch.randn(3, 5)
    pooled = torch.randn(4, 5)
    folded = debias_linear_weights(weights, lambdas, 2)
    assert torch.allclose(pooled @ folded.T, (pooled @ weights.T) @ transform, atol=1e-6)


def test_bad_reference_sets_are_clear_errors():
    rewards = reference_rewards(20)
    with pytest.raises(ValueError, match="not one of the model's attributes"):
        verbosity_penalties(rewards, ATTRS, "length")
    constant = rewards.clone()
    constant[:, 3] = 1.0
    with pytest.raises(ValueError, match="constant"):
        verbosity_penalties(constant, ATTRS)
    with pytest.raises(ValueError, match="at least 3"):
        verbosity_penalties(rewards[:2], ATTRS)
