"""odin: Pearson terms checked against numpy, orthogonality and ranking by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smorm.losses import LossInputs, get_loss, odin_loss, pearson_correlation
from smorm.losses.odin import orthogonality_penalty


def vec(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def test_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=7), rng.normal(size=7)
    got = pearson_correlation(torch.tensor(x), torch.tensor(y)).item()
    assert got == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-9)


def test_pearson_constant_vector_is_zero_with_finite_grad():
    rewards = vec(0.3, 0.3, 0.3, grad=True)
    rho = pearson_correlation(rewards, vec(10.0, 20.0, 35.0))
    assert rho.item() == 0.0
    rho.backward()
    assert torch.isfinite(rewards.grad).all()


def test_orthogonality_by_hand():
    # w_Q = [1, 0, 1], w_L = [1, 1, 0]: dot 1, norms √2 · √2 -> |cos| = 0.5
    assert orthogonality_penalty(vec(1.0, 0.0, 1.0), vec(1.0, 1.0, 0.0)).item() == pytest.approx(0.5)
    assert orthogonality_penalty(vec(1.0, 0.0, 1.0), vec(1.0, 1.0, 0.0), normalize=False).item() == 1.0
    assert orthogonality_penalty(vec(1.0, 0.0), vec(0.0, -3.0)).item() == 0.0
    # [1, d] head weights are accepted
    assert orthogonality_penalty(torch.tensor([[2.0, 0.0]]), torch.tensor([[-1.0, 0.0]])).item() == 1.0


QUALITY_C, QUALITY_R = (1.0, 0.0), (0.0, 0.5)
LENGTH_C, LENGTH_R = (0.2, 0.4), (0.1, 0.3)
TOKENS_C, TOKENS_R = (10.0, 30.0), (20.0, 40.0)


def expected_odin(length_weight: float = 1.0, ortho: float = 0.5) -> float:
    # ranking on the sum: chosen [1.2, 0.4], rejected [0.1, 0.8] -> Δ = [1.1, -0.4]
    ranking = (math.log(1 + math.exp(-1.1)) + math.log(1 + math.exp(0.4))) / 2
    lengths = np.array(TOKENS_C + TOKENS_R)
    rho_q = np.corrcoef(np.array(QUALITY_C + QUALITY_R), lengths)[0, 1]
    rho_l = np.corrcoef(np.array(LENGTH_C + LENGTH_R), lengths)[0, 1]
    return ranking + length_weight * ((1 - rho_l) + abs(rho_q)) + ortho


def test_odin_total_by_hand():
    loss = odin_loss(
        vec(*QUALITY_C),
        vec(*QUALITY_R),
        vec(*LENGTH_C),
        vec(*LENGTH_R),
        vec(*TOKENS_C),
        vec(*TOKENS_R),
        vec(1.0, 0.0, 1.0),
        vec(1.0, 1.0, 0.0),
    )
    assert loss.item() == pytest.approx(expected_odin(), rel=1e-9)


def test_odin_wrapper_matches_and_backprops():
    quality_c, length_c = vec(*QUALITY_C, grad=True), vec(*LENGTH_C, grad=True)
    w_q, w_l = vec(1.0, 0.0, 1.0, grad=True), vec(1.0, 1.0, 0.0, grad=True)
    inputs = LossInputs(
        chosen_rewards=quality_c,
        rejected_rewards=vec(*QUALITY_R),
        chosen_length_rewards=length_c,
        rejected_length_rewards=vec(*LENGTH_R),
        chosen_lengths=torch.tensor([10, 30]),
        rejected_lengths=torch.tensor([20, 40]),
        quality_head_weight=w_q,
        length_head_weight=w_l,
    )
    result = get_loss("odin").fn(inputs)
    assert result.loss.item() == pytest.approx(expected_odin(), rel=1e-9)
    assert result.metrics["orthogonality"] == pytest.approx(0.5)
    assert result.metrics["accuracy"] == 0.5  # by the total reward: Δ = [1.1, -0.4]
    assert result.metrics["quality_accuracy"] == 0.5  # by the quality head: [1 > 0, 0 > 0.5]
    result.loss.backward()
    for tensor in (quality_c, length_c, w_q, w_l):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_odin_options_and_no_ortho_without_weights():
    inputs = LossInputs(
        chosen_rewards=vec(*QUALITY_C),
        rejected_rewards=vec(*QUALITY_R),
        chosen_length_rewards=vec(*LENGTH_C),
        rejected_length_rewards=vec(*LENGTH_R),
        chosen_lengths=vec(*TOKENS_C),
        rejected_lengths=vec(*TOKENS_R),
    )
    result = get_loss("odin").fn(inputs, length_weight=0.5, ortho_weight=0.0)
    assert result.loss.item() == pytest.approx(expected_odin(length_weight=0.5, ortho=0.0), rel=1e-9)
    with pytest.raises(ValueError, match="LossInputs.quality_head_weight"):
        get_loss("odin").fn(inputs)


def test_odin_perfectly_disentangled_length_terms_vanish():
    # length head exactly linear in length (ρ_L = 1), quality head uncorrelated with length (ρ_Q = 0)
    lengths_c, lengths_r = vec(10.0, 40.0), vec(20.0, 30.0)
    # ρ(q, ℓ) over [1, 1, -1, -1] vs [10, 40, 20, 30] = 0
    quality_c, quality_r = vec(1.0, 1.0), vec(-1.0, -1.0)
    loss = odin_loss(
        quality_c, quality_r, lengths_c / 100, lengths_r / 100, lengths_c, lengths_r, ortho_weight=0.0
    )
    ranking = (math.log(1 + math.exp(-1.9)) + math.log(1 + math.exp(-2.1))) / 2
    assert loss.item() == pytest.approx(ranking, rel=1e-8)


def test_odin_needs_length_head():
    inputs = LossInputs(chosen_rewards=vec(1.0), rejected_rewards=vec(0.0))
    with pytest.raises(ValueError, match="LossInputs.chosen_length_rewards"):
        get_loss("odin").fn(inputs)
    assert get_loss("odin").needs == frozenset({"pairs", "length_head"})


def test_odin_huge_rewards_finite():
    quality_c = vec(1000.0, -1000.0, grad=True)
    loss = odin_loss(
        quality_c,
        vec(0.0, 0.0),
        vec(0.0, 0.0),
        vec(0.0, 0.0),
        vec(5.0, 500.0),
        vec(50.0, 5000.0),
        ortho_weight=0.0,
    )
    assert math.isfinite(loss.item())
    loss.backward()
    assert torch.isfinite(quality_c.grad).all()
