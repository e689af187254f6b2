"""grm_sft and grm_dpo: values by hand for the GRM reference forms and the plain variants."""

from __future__ import annotations

import math

import pytest
import torch

from smorm.losses import LossInputs, get_loss, grm_dpo_loss, grm_sft_loss

BT_1 = math.log(1 + math.exp(-1))  # Δ = 1


def vec(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def test_grm_sft_default_is_convex_logsigmoid():
    # reg = -log σ(0.1 · -20) = log(1 + e^2); loss = 0.99·BT + 0.01·reg
    loss = grm_sft_loss(vec(1.0), vec(0.0), vec(-20.0))
    assert loss.item() == pytest.approx(0.99 * BT_1 + 0.01 * math.log(1 + math.exp(2)), rel=1e-12)


def test_grm_sft_token_mean_nll_additive():
    # per-token NLL = 20 / 10 = 2; loss = BT + 0.01 · 2
    loss = grm_sft_loss(
        vec(1.0), vec(0.0), vec(-20.0), vec(10.0), sft_form="token_mean_nll", combine="additive"
    )
    assert loss.item() == pytest.approx(BT_1 + 0.02, rel=1e-12)


def test_grm_dpo_by_hand():
    # β(log π_c - log π_r) = 0.1 · 20 = 2
    loss = grm_dpo_loss(vec(1.0), vec(0.0), vec(-10.0), vec(-30.0))
    assert loss.item() == pytest.approx(0.99 * BT_1 + 0.01 * math.log(1 + math.exp(-2)), rel=1e-12)
    additive = grm_dpo_loss(vec(1.0), vec(0.0), vec(-10.0), vec(-30.0), combine="additive")
    assert additive.item() == pytest.approx(BT_1 + 0.01 * math.log(1 + math.exp(-2)), rel=1e-12)


def test_alpha_zero_is_bt():
    assert grm_sft_loss(vec(1.0), vec(0.0), vec(-500.0), alpha=0.0).item() == pytest.approx(BT_1, rel=1e-12)
    assert grm_dpo_loss(vec(1.0), vec(0.0), vec(-5.0), vec(-1.0), alpha=0.0).item() == pytest.approx(BT_1)


def test_gradient_reaches_logps_by_hand():
    logps = vec(-20.0, grad=True)
    grm_sft_loss(vec(1.0), vec(0.0), logps).backward()
    # d/dl [α·(-log σ(β l))] = -α β σ(-β l) = -0.01 · 0.1 · σ(2)
    assert logps.grad.item() == pytest.approx(-0.001 / (1 + math.exp(-2)), rel=1e-12)


def test_huge_logps_finite():
    logps_c, logps_r = vec(-1e5, grad=True), vec(-1.0, grad=True)
    loss = grm_dpo_loss(vec(1000.0), vec(-1000.0), logps_c, logps_r)
    assert math.isfinite(loss.item())
    loss.backward()
    assert torch.isfinite(logps_c.grad).all() and torch.isfinite(logps_r.grad).all()


def test_wrappers_match_and_report():
    inputs = LossInputs(
        chosen_rewards=vec(1.0),
        rejected_rewards=vec(0.0),
        chosen_logps=vec(-10.0),
        rejected_logps=vec(-30.0),
        chosen_response_tokens=torch.tensor([10]),
    )
    sft = get_loss("grm_sft").fn(inputs)
    assert sft.loss.item() == pytest.approx(0.99 * BT_1 + 0.01 * math.log(1 + math.exp(1)), rel=1e-12)
    nll = get_loss("grm_sft").fn(inputs, sft_form="token_mean_nll", combine="additive")
    assert nll.loss.item() == pytest.approx(BT_1 + 0.01 * 1.0, rel=1e-12)
    dpo = get_loss("grm_dpo").fn(inputs)
    assert dpo.loss.item() == pytest.approx(0.99 * BT_1 + 0.01 * math.log(1 + math.exp(-2)), rel=1e-12)
    assert dpo.metrics["lm_accuracy"] == 1.0
    assert get_loss("grm_sft").needs == frozenset({"pairs", "lm"})


def test_wrappers_name_missing_fields():
    base = LossInputs(chosen_rewards=vec(1.0), rejected_rewards=vec(0.0))
    with pytest.raises(ValueError, match="LossInputs.chosen_logps"):
        get_loss("grm_sft").fn(base)
    with pytest.raises(ValueError, match="LossInputs.rejected_logps"):
        get_loss("grm_dpo").fn(
            LossInputs(chosen_rewards=vec(1.0), rejected_rewards=vec(0.0), chosen_logps=vec(-1.0))
        )
    with pytest.raises(ValueError, match="LossInputs.chosen_response_tokens"):
        get_loss("grm_sft").fn(
            LossInputs(chosen_rewards=vec(1.0), rejected_rewards=vec(0.0), chosen_logps=vec(-1.0)),
            sft_form="token_mean_nll",
        )
