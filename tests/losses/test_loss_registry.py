"""The loss registry: every name registered once, near-name hints, option validation, a run of each loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from smorm.losses import LossDef, LossInputs, get_loss, validate_options
from smorm.losses.base import NEEDS, register_loss
from smorm.registry import LOSSES

EXPECTED = {
    "bt",
    "margin",
    "label_smoothing",
    "hinge",
    "bt_norm",
    "bt_dr",
    "bsr",
    "center",
    "regression",
    "grm_sft",
    "grm_dpo",
    "odin",
    "more",
    "plackett_luce",
}


def test_every_paper_loss_is_registered_and_smorm_is_not():
    assert set(LOSSES) == EXPECTED
    assert "smorm" not in LOSSES  # SMORM = bt + regression, combined in the config
    for name in EXPECTED:
        loss_def = get_loss(name)
        assert isinstance(loss_def, LossDef)
        assert loss_def.needs <= NEEDS and loss_def.needs
        assert loss_def.description


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_loss("bt", get_loss("bt").fn, {"pairs"}, "again", {})


def test_unknown_loss_suggests_near_names():
    with pytest.raises(KeyError, match="bt_norm"):
        get_loss("bt_nrom")
    with pytest.raises(KeyError, match="label_smoothing"):
        validate_options("label_smooth", {})


def test_unknown_option_is_rejected_with_hint():
    with pytest.raises(ValueError, match=r"no option 'margn'.*did you mean 'margin'"):
        validate_options("hinge", {"margn": 2.0})
    with pytest.raises(ValueError, match=r"loss 'bt' has no option 'scale'"):
        validate_options("bt", {"scale": 1.0})


def test_option_types_and_choices_are_checked():
    with pytest.raises(ValueError, match="must be float"):
        validate_options("hinge", {"margin": "1"})
    with pytest.raises(ValueError, match="must be int"):
        validate_options("more", {"iters": 2.5})
    with pytest.raises(ValueError, match="must be float"):
        validate_options("hinge", {"margin": True})
    with pytest.raises(ValueError, match="must be bool"):
        validate_options("bsr", {"scale_by_batch_size": 1})
    with pytest.raises(ValueError, match=r"one of \['sum', 'mean'\]"):
        validate_options("regression", {"reduction": "median"})
    # an int where a float is expected is fine; the result merges the defaults
    assert validate_options("hinge", {"margin": 2}) == {"margin": 2}
    assert validate_options("grm_dpo", {"beta": 0.2}) == {"alpha": 0.01, "beta": 0.2, "combine": "convex"}


def test_paper_defaults():
    assert get_loss("label_smoothing").defaults == {"epsilon": 0.1}
    assert get_loss("bsr").defaults["bsr_lambda"] == 1e-3
    assert get_loss("center").defaults == {"coefficient": 0.01}
    assert get_loss("grm_sft").defaults["alpha"] == 0.01 and get_loss("grm_sft").defaults["beta"] == 0.1
    assert get_loss("regression").defaults == {"reduction": "sum"}


def full_inputs() -> tuple[LossInputs, list[torch.Tensor]]:
    """Inputs for every loss at once, computed from small trainable heads so gradients can be checked."""
    torch.manual_seed(0)
    features = torch.randn(8, 5)  # 4 chosen then 4 rejected
    quality, length = nn.Linear(5, 1, bias=False), nn.Linear(5, 1, bias=False)
    attributes = nn.Linear(5, 3, bias=False)
    logps = torch.randn(8, requires_grad=True)
    rewards, length_rewards = quality(features).squeeze(-1), length(features).squeeze(-1)
    ratings = attributes(torch.randn(3, 5))
    # Pair 3 is swapped so that one pair is misordered: hinge with its default m = 0 has no
    # gradient on a batch whose pairs are all ordered (this seed orders all four).
    order = torch.tensor([0, 1, 2, 7, 4, 5, 6, 3])
    rewards, length_rewards = rewards[order], length_rewards[order]
    inputs = LossInputs(
        chosen_rewards=rewards[:4],
        rejected_rewards=rewards[4:],
        margins=torch.tensor([0.5, float("nan"), 1.0, 0.0]),
        source_ids=torch.tensor([0, 1, 0, 1]),
        sources=["a", "b"],
        predicted_ratings=ratings,
        target_ratings=torch.tensor([[0.5, float("nan"), 1.0], [0.0, 0.25, float("nan")], [1.0, 1.0, 1.0]]),
        rating_mask=torch.tensor([[True, False, True], [True, True, False], [True, True, True]]),
        chosen_logps=logps[:4] * 10,
        rejected_logps=logps[4:] * 10,
        chosen_response_tokens=torch.tensor([3, 5, 7, 9]),
        chosen_lengths=torch.tensor([10, 200, 35, 60]),
        rejected_lengths=torch.tensor([80, 15, 40, 5]),
        chosen_length_rewards=length_rewards[:4],
        rejected_length_rewards=length_rewards[4:],
        quality_head_weight=quality.weight,
        length_head_weight=length.weight,
        head_parameters=list(quality.parameters()),
        list_rewards=rewards,  # the 4 pairs as 4 lists of two
        list_ids=torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]),
        list_ranks=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
    )
    leaves = [quality.weight, length.weight, attributes.weight, logps]
    return inputs, leaves


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_loss_runs_with_its_defaults_and_backprops(name):
    inputs, leaves = full_inputs()
    loss_def = get_loss(name)
    result = loss_def.fn(inputs, **validate_options(name, {}))
    assert result.loss.dim() == 0 and math.isfinite(result.loss.item())
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.metrics.values())
    result.loss.backward()
    touched = [leaf for leaf in leaves if leaf.grad is not None]
    assert touched, f"{name} produced no gradient"
    assert all(torch.isfinite(leaf.grad).all() for leaf in touched)
    assert any(leaf.grad.abs().sum() > 0 for leaf in touched)


def test_missing_field_error_names_it():
    with pytest.raises(ValueError, match=r"loss 'bt' needs LossInputs.chosen_rewards"):
        get_loss("bt").fn(LossInputs(rejected_rewards=torch.zeros(2)))
    with pytest.raises(ValueError, match=r"loss 'regression' needs LossInputs.target_ratings"):
        get_loss("regression").fn(LossInputs(predicted_ratings=torch.zeros(2, 3)))
