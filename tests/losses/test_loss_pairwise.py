"""bt, margin, label_smoothing, hinge, bt_norm, bt_dr: expected values written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from smorm.losses import (
    LossInputs,
    bt_dr_loss,
    bt_loss,
    bt_norm_loss,
    get_loss,
    hinge_loss,
    label_smoothing_loss,
    margin_loss,
)

LOG2 = math.log(2.0)


def softplus(x: float) -> float:
    """-log σ(-x) = log(1 + e^x), written out (stable for the moderate x used here)."""
    return math.log1p(math.exp(x))


def vec(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


# ---------------------------------------------------------------- bt


def test_bt_value_by_hand():
    # Δ = [1, -2, 0]: -log σ(Δ) = log(1 + e^{-Δ})
    loss = bt_loss(vec(1.0, 0.0, 3.0), vec(0.0, 2.0, 3.0))
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(2)) + math.log(2)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_bt_equal_rewards_is_log2():
    assert bt_loss(vec(0.3, -7.0), vec(0.3, -7.0)).item() == pytest.approx(LOG2, rel=1e-12)


def test_bt_gradient_by_hand():
    chosen, rejected = vec(1.0, -1.0, grad=True), vec(0.0, 0.0, grad=True)
    bt_loss(chosen, rejected).backward()
    # d/dr_c [-log σ(Δ)] = -σ(-Δ), averaged over B = 2 pairs.
    sig = [1 / (1 + math.exp(1.0)), 1 / (1 + math.exp(-1.0))]
    assert chosen.grad.tolist() == pytest.approx([-sig[0] / 2, -sig[1] / 2], rel=1e-12)
    assert rejected.grad.tolist() == pytest.approx([sig[0] / 2, sig[1] / 2], rel=1e-12)


def test_bt_huge_margins_no_overflow():
    chosen, rejected = vec(1000.0, -1000.0, grad=True), vec(-0.0, 0.0, grad=True)
    loss = bt_loss(chosen, rejected)
    # Δ = +1000 costs ~0; Δ = -1000 costs 1000.
    assert loss.item() == pytest.approx(500.0, rel=1e-12)
    loss.backward()
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    assert chosen.grad.tolist() == pytest.approx([0.0, -0.5], abs=1e-12)


def test_bt_wrapper_metrics_count_ties_wrong():
    result = get_loss("bt").fn(
        LossInputs(chosen_rewards=vec(1.0, 0.0, 3.0), rejected_rewards=vec(0.0, 2.0, 3.0))
    )
    assert result.loss.item() == pytest.approx(bt_loss(vec(1.0, 0.0, 3.0), vec(0.0, 2.0, 3.0)).item())
    assert result.metrics["accuracy"] == pytest.approx(1 / 3)
    assert result.metrics["reward_margin"] == pytest.approx((1 - 2 + 0) / 3)
    assert result.metrics["chosen_reward"] == pytest.approx(4 / 3)


# ---------------------------------------------------------------- margin


def test_margin_value_by_hand():
    # Δ = [1.5, 0], m = [1, 0], scale 2: arguments [-0.5, 0]
    loss = margin_loss(vec(2.0, 1.0), vec(0.5, 1.0), vec(1.0, 0.0), scale=2.0)
    expected = (math.log(1 + math.exp(0.5)) + LOG2) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_margin_zero_margin_is_bt():
    c, r = vec(0.2, -1.0, 4.0), vec(1.0, 0.5, -2.0)
    assert margin_loss(c, r, vec(0.0, 0.0, 0.0)).item() == pytest.approx(bt_loss(c, r).item(), rel=1e-12)


def test_margin_wrapper_missing_margin_falls_back_to_zero():
    inputs = LossInputs(
        chosen_rewards=vec(2.0, 1.0), rejected_rewards=vec(0.5, 1.0), margins=vec(1.0, float("nan"))
    )
    result = get_loss("margin").fn(inputs, scale=2.0)
    assert result.loss.item() == pytest.approx((math.log(1 + math.exp(0.5)) + LOG2) / 2, rel=1e-12)
    assert result.metrics["margin_present_fraction"] == pytest.approx(0.5)
    assert math.isfinite(result.loss.item())


def test_margin_wrapper_missing_error_names_field():
    inputs = LossInputs(
        chosen_rewards=vec(2.0, 1.0), rejected_rewards=vec(0.5, 1.0), margins=vec(1.0, float("nan"))
    )
    with pytest.raises(ValueError, match=r"margins.*\[1\]"):
        get_loss("margin").fn(inputs, missing="error")


def test_margin_wrapper_needs_margins():
    with pytest.raises(ValueError, match="LossInputs.margins"):
        get_loss("margin").fn(LossInputs(chosen_rewards=vec(1.0), rejected_rewards=vec(0.0)))


def test_margin_huge_values_finite_gradients():
    chosen = vec(1000.0, -1000.0, grad=True)
    loss = margin_loss(chosen, vec(0.0, 0.0), vec(1000.0, -1000.0))
    assert loss.item() == pytest.approx(LOG2, rel=1e-12)  # Δ - m = 0 for both pairs
    loss.backward()
    assert torch.isfinite(chosen.grad).all()


# ---------------------------------------------------------------- label smoothing


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_label_smoothing_at_zero_is_log2(epsilon):
    assert label_smoothing_loss(vec(1.5), vec(1.5), epsilon).item() == pytest.approx(LOG2, rel=1e-12)


def test_label_smoothing_value_by_hand():
    # Δ = 2, ε = 0.1: 0.9·log(1 + e^-2) + 0.1·log(1 + e^2)
    expected = 0.9 * math.log(1 + math.exp(-2)) + 0.1 * math.log(1 + math.exp(2))
    assert label_smoothing_loss(vec(3.0), vec(1.0), 0.1).item() == pytest.approx(expected, rel=1e-12)


def test_label_smoothing_is_not_the_printed_formula():
    # As printed in 000 App. G the loss would be -(1 - 2ε) log σ(Δ); the standard one differs.
    printed = (1 - 2 * 0.1) * math.log(1 + math.exp(-2))
    assert label_smoothing_loss(vec(3.0), vec(1.0), 0.1).item() != pytest.approx(printed, rel=1e-3)


def test_label_smoothing_epsilon_zero_is_bt():
    c, r = vec(0.2, -1.0), vec(1.0, 0.5)
    assert label_smoothing_loss(c, r, 0.0).item() == pytest.approx(bt_loss(c, r).item(), rel=1e-12)


def test_label_smoothing_huge_margins():
    chosen = vec(1000.0, -1000.0, grad=True)
    loss = label_smoothing_loss(chosen, vec(0.0, 0.0), 0.1)
    # Δ = 1000: ε·1000 = 100; Δ = -1000: (1-ε)·1000 = 900; mean 500
    assert loss.item() == pytest.approx(500.0, rel=1e-9)
    loss.backward()
    # d/dΔ = -(1-ε)σ(-Δ) + εσ(Δ): +0.1 at Δ=+1000, -0.9 at Δ=-1000, halved by the mean
    assert chosen.grad.tolist() == pytest.approx([0.05, -0.45], rel=1e-9)


def test_label_smoothing_wrapper_rejects_bad_epsilon():
    with pytest.raises(ValueError, match="epsilon"):
        get_loss("label_smoothing").fn(
            LossInputs(chosen_rewards=vec(1.0), rejected_rewards=vec(0.0)), epsilon=1.0
        )


# ---------------------------------------------------------------- hinge


def test_hinge_value_by_hand():
    # Δ = [3, 0.5, -2], m = 1: max(0, 1 - Δ) = [0, 0.5, 3]
    assert hinge_loss(vec(3.0, 0.5, 0.0), vec(0.0, 0.0, 2.0), margin=1.0).item() == pytest.approx(3.5 / 3, rel=1e-12)
    # default m = 0 (the authors' RewardConfig.margin): [0, 0, 2]
    assert hinge_loss(vec(3.0, 0.5, 0.0), vec(0.0, 0.0, 2.0)).item() == pytest.approx(2 / 3, rel=1e-12)


def test_hinge_gradient_only_on_active_pairs():
    chosen = vec(3.0, 0.5, 0.0, grad=True)
    hinge_loss(chosen, vec(0.0, 0.0, 2.0), margin=1.0).backward()
    assert chosen.grad.tolist() == pytest.approx([0.0, -1 / 3, -1 / 3], rel=1e-12)
    # m = 0: only the misordered pair (Δ = -2) is active
    chosen.grad = None
    hinge_loss(chosen, vec(0.0, 0.0, 2.0)).backward()
    assert chosen.grad.tolist() == pytest.approx([0.0, 0.0, -1 / 3], rel=1e-12)


def test_hinge_wrapper_default_and_option():
    assert get_loss("hinge").defaults == {"margin": 0.0}
    inputs = LossInputs(chosen_rewards=vec(0.0, 1.0), rejected_rewards=vec(0.5, 0.0))
    # Δ = [-0.5, 1]: m = 0 -> [0.5, 0]; m = 2.5 -> [3, 1.5]
    assert get_loss("hinge").fn(inputs).loss.item() == pytest.approx(0.25, rel=1e-12)
    assert get_loss("hinge").fn(inputs, margin=2.5).loss.item() == pytest.approx(2.25, rel=1e-12)


# ---------------------------------------------------------------- bt_norm


def test_bt_norm_value_by_hand():
    # r_c = 3, r_r = 4: Δ / ||r|| = -1/5
    assert bt_norm_loss(vec(3.0), vec(4.0)).item() == pytest.approx(softplus(0.2), rel=1e-9)


def test_bt_norm_is_scale_invariant():
    assert bt_norm_loss(vec(30.0), vec(40.0)).item() == pytest.approx(softplus(0.2), rel=1e-9)


def test_bt_norm_zero_rewards_give_log2_and_finite_grad():
    chosen, rejected = vec(0.0, grad=True), vec(0.0, grad=True)
    loss = bt_norm_loss(chosen, rejected)
    assert loss.item() == pytest.approx(LOG2, rel=1e-12)
    loss.backward()
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()


def test_bt_norm_huge_rewards():
    # (1000, -1000): Δ/||r|| = 2000 / (1000·√2) = √2
    chosen = vec(1000.0, grad=True)
    loss = bt_norm_loss(chosen, vec(-1000.0))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-math.sqrt(2))), rel=1e-9)
    loss.backward()
    assert torch.isfinite(chosen.grad).all()


# ---------------------------------------------------------------- bt_dr


def test_bt_dr_value_by_hand():
    # r_c = 1, r_r = -1: -log σ(2) - log σ(1) - log σ(1)
    expected = math.log(1 + math.exp(-2)) + 2 * math.log(1 + math.exp(-1))
    assert bt_dr_loss(vec(1.0), vec(-1.0)).item() == pytest.approx(expected, rel=1e-12)


def test_bt_dr_equal_zero_rewards_is_three_log2():
    assert bt_dr_loss(vec(0.0), vec(0.0)).item() == pytest.approx(3 * LOG2, rel=1e-12)


def test_bt_dr_huge_rewards():
    chosen = vec(1000.0, -1000.0, grad=True)
    loss = bt_dr_loss(chosen, vec(-1000.0, 1000.0))
    # pair 1 costs ~0; pair 2: 2000 + 1000 + 1000
    assert loss.item() == pytest.approx(2000.0, rel=1e-12)
    loss.backward()
    assert torch.isfinite(chosen.grad).all()


@pytest.mark.parametrize("name", ["bt", "margin", "label_smoothing", "hinge", "bt_norm", "bt_dr"])
def test_wrapper_matches_pure_function_and_backprops(name):
    chosen = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    rejected = torch.tensor([0.0, 1.0, 2.5], requires_grad=True)
    inputs = LossInputs(
        chosen_rewards=chosen, rejected_rewards=rejected, margins=torch.tensor([0.1, 0.2, 0.3])
    )
    result = get_loss(name).fn(inputs)
    pure = {
        "bt": lambda: bt_loss(chosen, rejected),
        "margin": lambda: margin_loss(chosen, rejected, inputs.margins),
        "label_smoothing": lambda: label_smoothing_loss(chosen, rejected, 0.1),
        "hinge": lambda: hinge_loss(chosen, rejected, 0.0),
        "bt_norm": lambda: bt_norm_loss(chosen, rejected),
        "bt_dr": lambda: bt_dr_loss(chosen, rejected),
    }[name]()
    assert result.loss.item() == pytest.approx(pure.item(), rel=1e-6)
    result.loss.backward()
    assert torch.isfinite(chosen.grad).all() and chosen.grad.abs().sum() > 0


def test_wrapper_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="rejected_rewards has 2 entries, expected 3"):
        get_loss("bt").fn(LossInputs(chosen_rewards=vec(1.0, 2.0, 3.0), rejected_rewards=vec(1.0, 2.0)))
    with pytest.raises(ValueError, match=r"chosen_rewards must be 1-D"):
        get_loss("bt").fn(LossInputs(chosen_rewards=torch.zeros(2, 1), rejected_rewards=torch.zeros(2, 1)))


def test_wrapper_upcasts_bfloat16():
    inputs = LossInputs(
        chosen_rewards=torch.tensor([300.0], dtype=torch.bfloat16),
        rejected_rewards=torch.tensor([0.0], dtype=torch.bfloat16),
    )
    result = get_loss("bt").fn(inputs)
    assert result.loss.dtype == torch.float32
    assert math.isfinite(result.loss.item())
