"""Theorem 1 constants (000 App. C.2) on a 2-d example small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smorm.eval.theory import theorem1_constants

# D_S: differences f_c - f_r = (2, 0) and (0, 2)
#   Sigma_S = mean(d d^T) = diag(2, 2), mu_S = (1, 1), mu_S^T Sigma_S^-1 mu_S = 1
# D_M: f_m = (1, 0), (0, 1) with ratings r = (1, 0), (1, 1)
#   Sigma_M = diag(1/2, 1/2), C_M = mean(f r^T) = [[1/2, 0], [1/2, 1/2]]
#   w_M* = Sigma_M^-1 C_M = [[1, 0], [1, 1]], alpha = mu_S^T w_M* = (2, 1)
#   c = 1^T alpha / (K * 1) = 3/2, beta = alpha / 1 = (2, 1)
#   C~_M = sqrt(2) w_M*, mu~_S = (1, 1)/sqrt(2), E = C~_M - mu~_S beta^T = [[0, -1], [0, 1]]/sqrt(2)
#   ||E||_op = 1, lambda_min(Sigma_S) = 2, B = max ||f|| = 2
#   epsilon = B ||E||_op / sqrt(2) = sqrt(2); epsilon_tight = B ||E 1|| / (K sqrt(2)) = 1/sqrt(2)
CHOSEN = np.array([[2.0, 0.0], [0.0, 2.0]])
REJECTED = np.zeros((2, 2))
RATED = np.array([[1.0, 0.0], [0.0, 1.0]])
RATINGS = np.array([[1.0, 0.0], [1.0, 1.0]])


def test_constants_by_hand_with_population_heads():
    result = theorem1_constants(CHOSEN, REJECTED, RATED, RATINGS)
    assert result.alpha == pytest.approx((2.0, 1.0))
    assert result.beta == pytest.approx((2.0, 1.0))
    assert result.c == pytest.approx(1.5)
    assert result.whitened_mean_sq_norm == pytest.approx(1.0)
    assert result.lambda_min_sigma_S == pytest.approx(2.0)
    assert result.lambda_min_sigma_M == pytest.approx(0.5)
    assert result.E_operator_norm == pytest.approx(1.0)
    assert result.feature_bound == pytest.approx(2.0)
    assert result.epsilon == pytest.approx(math.sqrt(2.0))
    assert result.epsilon_tight == pytest.approx(1.0 / math.sqrt(2.0))
    assert result.coupling_holds and result.heads == "population"
    # r_m - c r_s = (f2 - f1)/4 on the six rows: -0.5, 0.5, 0, 0, -0.25, 0.25 -> min slack -0.5 + sqrt(2)
    assert result.bound_holds and result.bound_holds_fraction == 1.0
    assert result.min_slack == pytest.approx(-0.5 + math.sqrt(2.0))


def test_bound_check_with_given_heads_can_fail():
    # w_S = (1/2, 1/2) (the population head) and w_M = -w_M*: r_m = -(f1 + 2 f2)/2
    # rows: r_m = -1, -2, 0, 0, -0.5, -1 ; c r_s - eps = 1.5 r_s - sqrt(2) with r_s = 1, 1, 0, 0, 0.5, 0.5
    # holds on rows 3, 4, 5 only -> fraction 1/2
    w_M = -np.array([[1.0, 0.0], [1.0, 1.0]])
    result = theorem1_constants(CHOSEN, REJECTED, RATED, RATINGS, np.array([0.5, 0.5]), w_M)
    assert result.heads == "given"
    assert not result.bound_holds
    assert result.bound_holds_fraction == pytest.approx(0.5)
    assert result.min_slack == pytest.approx(-2.0 - (1.5 - math.sqrt(2.0)))


def test_negative_coupling_is_reported():
    result = theorem1_constants(CHOSEN, REJECTED, RATED, -RATINGS)
    assert result.alpha == pytest.approx((-2.0, -1.0))
    assert result.c == pytest.approx(-1.5)
    assert not result.coupling_holds
    assert result.bound_holds  # the identity behind the bound holds for either sign of c


def test_population_bound_holds_on_random_features():
    rng = np.random.default_rng(0)
    chosen, rejected = rng.normal(size=(50, 4)) + 0.3, rng.normal(size=(50, 4))
    rated, ratings = rng.normal(size=(40, 4)), rng.uniform(size=(40, 3))
    result = theorem1_constants(chosen, rejected, rated, ratings, eval_features=rng.normal(size=(30, 4)))
    assert result.bound_holds
    assert result.epsilon_tight <= result.epsilon / math.sqrt(3) + 1e-12


def test_singular_second_moment_asks_for_ridge():
    with pytest.raises(ValueError, match="ridge"):
        theorem1_constants(CHOSEN[:1], REJECTED[:1], RATED, RATINGS)
    ridged = theorem1_constants(CHOSEN[:1], REJECTED[:1], RATED, RATINGS, ridge=0.1)
    assert ridged.lambda_min_sigma_S == pytest.approx(0.1)


def test_moved_names_stay_importable_from_metrics():
    from smorm.eval import metrics, plots, theory

    assert metrics.theorem1_constants is theory.theorem1_constants
    assert metrics.Theorem1Constants is theory.Theorem1Constants
    assert metrics.plot_reliability is plots.plot_reliability
    with pytest.raises(AttributeError):
        metrics.no_such_name  # noqa: B018 - the attribute access is the test
