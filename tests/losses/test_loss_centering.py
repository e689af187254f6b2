"""bsr (002 Eq. 24-25) and center (TRL): values by hand."""

from __future__ import annotations

import math

import pytest
import torch

from smorm.losses import LossInputs, bsr_loss, center_loss, get_loss
from smorm.losses.centering import batch_sum_penalty, center_penalty


def vec(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


BT_EXAMPLE = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-3))) / 2  # Δ = [1, 3]


def test_bsr_penalty_is_square_of_mean_of_all_rewards():
    # rewards {1, 2, 0, -1}: mean 0.5 -> 0.25 (the mean of squares would be 1.5)
    assert batch_sum_penalty(vec(1.0, 2.0), vec(0.0, -1.0)).item() == pytest.approx(0.25, rel=1e-12)


def test_bsr_value_by_hand():
    assert bsr_loss(vec(1.0, 2.0), vec(0.0, -1.0), bsr_lambda=1e-3).item() == pytest.approx(
        BT_EXAMPLE + 1e-3 * 0.25, rel=1e-12
    )
    assert bsr_loss(vec(1.0, 2.0), vec(0.0, -1.0), bsr_lambda=1.0).item() == pytest.approx(
        BT_EXAMPLE + 0.25, rel=1e-12
    )


def test_bsr_zero_when_rewards_sum_to_zero():
    assert batch_sum_penalty(vec(3.0, -1.0), vec(-3.0, 1.0)).item() == 0.0


def test_bsr_penalty_gradient_by_hand():
    # d/dr_i (mean)^2 = 2·mean / (2B) = mean / B, the same for every one of the 2B rewards
    chosen, rejected = vec(1.0, 2.0, grad=True), vec(0.0, -1.0, grad=True)
    batch_sum_penalty(chosen, rejected).backward()
    assert chosen.grad.tolist() == pytest.approx([0.25, 0.25], rel=1e-12)
    assert rejected.grad.tolist() == pytest.approx([0.25, 0.25], rel=1e-12)


def test_bsr_wrapper_scales_lambda_by_batch_size_by_default():
    # the authors' trainer: λ·B with B = 2 pairs here -> BT + 2e-3 · 0.25
    inputs = LossInputs(chosen_rewards=vec(1.0, 2.0), rejected_rewards=vec(0.0, -1.0))
    result = get_loss("bsr").fn(inputs)
    assert result.loss.item() == pytest.approx(BT_EXAMPLE + 2e-3 * 0.25, rel=1e-12)
    assert result.metrics["bsr_penalty"] == pytest.approx(0.25)
    assert result.metrics["effective_lambda"] == pytest.approx(2e-3)
    assert get_loss("bsr").defaults == {"bsr_lambda": 1e-3, "scale_by_batch_size": True}
    scaled = get_loss("bsr").fn(inputs, bsr_lambda=0.5)  # λ·B = 1.0
    assert scaled.loss.item() == pytest.approx(BT_EXAMPLE + 0.25, rel=1e-12)


def test_bsr_wrapper_plain_lambda_when_not_scaled():
    # three pairs, rewards {1, 2, 3, 0, -1, 1}: mean 1 -> penalty 1; Δ = [1, 3, 2]; plain λ = 1e-3
    inputs = LossInputs(chosen_rewards=vec(1.0, 2.0, 3.0), rejected_rewards=vec(0.0, -1.0, 1.0))
    bt = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-3)) + math.log(1 + math.exp(-2))) / 3
    plain = get_loss("bsr").fn(inputs, scale_by_batch_size=False)
    assert plain.loss.item() == pytest.approx(bt + 1e-3 * 1.0, rel=1e-12)
    assert get_loss("bsr").fn(inputs).loss.item() == pytest.approx(bt + 3e-3 * 1.0, rel=1e-12)  # λ·3


def test_bsr_huge_rewards_finite():
    chosen = vec(1000.0, -1000.0, grad=True)
    loss = bsr_loss(chosen, vec(1000.0, 1000.0))
    # BT: Δ = [0, -2000] -> (log 2 + 2000)/2; mean of rewards = 500 -> 1e-3·250000 = 250
    assert loss.item() == pytest.approx((math.log(2) + 2000) / 2 + 250.0, rel=1e-12)
    loss.backward()
    assert torch.isfinite(chosen.grad).all()


def test_center_penalty_by_hand():
    # sums [4, -1]: (16 + 1) / 2
    assert center_penalty(vec(3.0, 1.0), vec(1.0, -2.0)).item() == pytest.approx(8.5, rel=1e-12)


def test_center_value_by_hand():
    # Δ = [2, 3]
    bt = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-3))) / 2
    assert center_loss(vec(3.0, 1.0), vec(1.0, -2.0)).item() == pytest.approx(bt + 0.01 * 8.5, rel=1e-12)
    result = get_loss("center").fn(LossInputs(chosen_rewards=vec(3.0, 1.0), rejected_rewards=vec(1.0, -2.0)))
    assert result.loss.item() == pytest.approx(bt + 0.01 * 8.5, rel=1e-12)
    assert result.metrics["center_penalty"] == pytest.approx(8.5)


def test_center_gradient_by_hand():
    # d/dr_c,i c·mean((r_c + r_r)^2) = c · 2 (r_c,i + r_r,i) / B
    chosen, rejected = vec(3.0, 1.0, grad=True), vec(1.0, -2.0, grad=True)
    (1.0 * center_penalty(chosen, rejected)).backward()
    assert chosen.grad.tolist() == pytest.approx([4.0, -1.0], rel=1e-12)
    assert rejected.grad.tolist() == pytest.approx([4.0, -1.0], rel=1e-12)
