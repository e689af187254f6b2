"""Stage 1: masked per-attribute ridge regression, checked against an independent closed-form solve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smorm.gating.ridge import (
    DEFAULT_ALPHAS,
    fit_attribute_ridge,
    install_multi_head,
    ratings_matrix,
    ridge_solutions,
    split_rows,
)


def normal_equations(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """(X^T X + α I)^{-1} X^T y, written out independently of the SVD route."""
    return np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ y)


def synthetic(n: int = 300, d: int = 6, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    true = rng.normal(size=(k, d))
    y = x @ true.T + 0.01 * rng.normal(size=(n, k))
    mask = rng.random((n, k)) < 0.6  # each attribute rated on ~60% of rows, different rows
    y_missing = np.where(mask, y, 1e6)  # a missing label holds garbage that must never be read
    return x, y, y_missing, mask, true


def test_svd_route_equals_the_normal_equations():
    x, y, _, _, _ = synthetic()
    for alpha, w in zip((0.1, 10.0), ridge_solutions(x, y[:, 0], (0.1, 10.0))):
        assert np.allclose(w, normal_equations(x, y[:, 0], alpha), atol=1e-10)
    wide = np.random.default_rng(1).normal(size=(4, 9))  # fewer rows than features
    assert np.allclose(ridge_solutions(wide, wide[:, 0], (0.5,))[0], normal_equations(wide, wide[:, 0], 0.5))


def test_masked_ridge_recovers_known_weights_and_ignores_missing_labels():
    x, y, y_missing, mask, true = synthetic()
    fit = fit_attribute_ridge(torch.tensor(x), torch.tensor(y_missing), torch.tensor(mask), seed=3)
    assert fit.weights.shape == (3, 6)
    assert fit.rated_rows == mask.sum(0).tolist()
    for k in range(3):
        rows = mask[:, k]
        expected = normal_equations(x[rows], y[rows, k], fit.alphas[k])  # final fit: all rated rows
        assert np.allclose(fit.weights[k].numpy(), expected, atol=1e-5)
        assert np.allclose(fit.weights[k].numpy(), true[k], atol=0.02)
        assert fit.alphas[k] in DEFAULT_ALPHAS and fit.alphas[k] <= 1.0  # low noise: small penalty wins


def test_penalty_is_chosen_by_validation_mse_on_the_seeded_split():
    x, y, _, _, _ = synthetic(n=60, d=20, k=1, seed=5)
    y = y + np.random.default_rng(9).normal(scale=3.0, size=y.shape)  # noisy: shrinkage should help
    mask = np.ones_like(y, dtype=bool)
    fit = fit_attribute_ridge(torch.tensor(x), torch.tensor(y), torch.tensor(mask), seed=7)
    train, val = split_rows(60, 0.2, 7)
    assert len(val) == 12 and not set(train) & set(val)
    errors = {a: float(((x[val] @ normal_equations(x[train], y[train, 0], a) - y[val, 0]) ** 2).mean())
              for a in DEFAULT_ALPHAS}
    assert fit.alphas[0] == min(errors, key=errors.get)
    assert fit.val_mse[0] == pytest.approx(errors[fit.alphas[0]], rel=1e-6)


def test_attribute_without_ratings_is_an_error_and_ratings_matrix_masks():
    targets, mask = ratings_matrix([{"a": 0.5}, {"b": 1.0, "zzz": 0.2}], ["a", "b"])
    assert targets.tolist() == [[0.5, 0.0], [0.0, 1.0]]
    assert mask.tolist() == [[True, False], [False, True]]
    with pytest.raises(ValueError, match="no rated rows"):
        fit_attribute_ridge(torch.randn(4, 3), torch.zeros(4, 1), torch.zeros(4, 1, dtype=torch.bool))


def test_install_creates_or_replaces_the_multi_head(tiny_llama_dir):
    from tests.models.test_reward_model import make_model

    sorm = make_model(tiny_llama_dir, heads={"single": {"kind": "linear"}}, attributes=[])
    weights = torch.randn(2, sorm.hidden_size)
    install_multi_head(sorm, weights, ["helpfulness", "verbosity"])
    assert sorm.config.attributes == ["helpfulness", "verbosity"]
    assert torch.equal(sorm.heads["multi"].weight, weights)
    pooled = torch.randn(3, sorm.hidden_size)
    assert torch.allclose(sorm(pooled=pooled).attributes, pooled @ weights.T, atol=1e-6)

    smorm = make_model(tiny_llama_dir)  # attributes helpfulness, correctness, verbosity
    replaced = torch.randn(3, smorm.hidden_size)
    head_before = smorm.heads["multi"]
    install_multi_head(smorm, replaced, list(smorm.config.attributes))
    assert smorm.heads["multi"] is head_before and torch.equal(head_before.weight, replaced)
    with pytest.raises(ValueError, match="do not match"):
        install_multi_head(smorm, torch.randn(2, 5), ["a", "b"])
