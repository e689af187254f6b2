"""Gate training on a synthetic set where the right attribute depends on the prompt."""

from __future__ import annotations

import pytest
import torch

from smorm.gating.head import GatingHead
from smorm.gating.train_gate import (
    GatePairs,
    GateTrainOptions,
    batch_rows,
    pairwise_accuracy,
    train_gate,
    validation_report,
)

ATTRS = ["math", "safety", "style"]


def prompt_dependent_pairs(num_pairs: int = 1500, dim: int = 8, seed: int = 0) -> tuple[GatePairs, torch.Tensor]:
    """Each prompt has a type t; only attribute t tells chosen from rejected, the others are noise.

    Any fixed single attribute is right on ~1/3 + 2/3 · 1/2 of the pairs; a gate that reads t off the
    prompt feature can be right on all of them. Rewards are on the [0, 1]-rating scale of real heads.
    """
    generator = torch.Generator().manual_seed(seed)
    kind = torch.randint(0, 3, (num_pairs,), generator=generator)
    prompt = torch.randn(num_pairs, dim, generator=generator) * 0.3
    prompt[torch.arange(num_pairs), kind] += 2.0
    rejected = torch.rand(num_pairs, 3, generator=generator)
    chosen = torch.rand(num_pairs, 3, generator=generator)
    gap = 0.05 + 0.2 * torch.rand(num_pairs, generator=generator)
    chosen[torch.arange(num_pairs), kind] = rejected[torch.arange(num_pairs), kind] + gap
    return GatePairs(prompt, prompt.clone(), chosen, rejected), kind


def test_gate_beats_every_fixed_attribute_when_the_right_one_depends_on_the_prompt():
    pairs, _ = prompt_dependent_pairs()
    torch.manual_seed(0)
    gate = GatingHead(8, 3, hidden_sizes=[32, 32], dropout=0.1, beta_init=100.0)
    options = GateTrainOptions(steps=80, batch_size=256, lr=5e-3, val_fraction=0.2, seed=0, log_every=20)
    result = train_gate(gate, pairs, ATTRS, options, show_progress=False)
    single_best = max(result.val[f"attribute:{name}"] for name in ATTRS)
    assert 0.55 < single_best < 0.8  # a fixed attribute is right on about 2/3 of the pairs
    assert result.val["G"] > 0.95
    assert result.val["G"] > single_best + 0.15
    assert result.val["G"] > result.val["mean_of_attributes"] + 0.1
    assert result.beta_initial == 100.0 and result.beta_final != pytest.approx(100.0, abs=1e-3)
    assert result.losses[-1][1] < result.losses[0][1]
    assert result.train_pairs == 1200 and result.val_pairs == 300
    assert not gate.training


def test_weights_sum_to_one_over_attributes_for_every_prompt():
    pairs, kind = prompt_dependent_pairs(num_pairs=64)
    torch.manual_seed(1)
    gate = GatingHead(8, 3, hidden_sizes=[16], dropout=0.0)
    train_gate(gate, pairs, ATTRS, GateTrainOptions(steps=100, batch_size=64, lr=1e-2, val_fraction=0.0),
               show_progress=False)
    weights = gate.gate_weights(pairs.chosen_prompt)
    assert weights.shape == (64, 3)
    assert torch.all(weights >= 0)
    assert torch.allclose(weights.sum(-1), torch.ones(64), atol=1e-6)
    # the softmax runs over attributes, not over the chosen/rejected axis of a [B, 2, d] batch
    stacked = gate.gate_weights(torch.stack([pairs.chosen_prompt, pairs.rejected_prompt], dim=1))
    assert torch.allclose(stacked.sum(-1), torch.ones(64, 2), atol=1e-6)
    assert (weights.argmax(-1) == kind).float().mean() > 0.9  # it learned which attribute to trust


def test_an_inactive_attribute_gets_weight_zero_and_the_rest_still_sum_to_one():
    gate = GatingHead(8, 3, hidden_sizes=[4], dropout=0.0)
    gate.set_active([True, True, False])
    weights = gate.gate_weights(torch.randn(5, 8))
    assert torch.all(weights[:, 2] == 0) and torch.allclose(weights.sum(-1), torch.ones(5), atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        gate.set_active([False, False, False])


def test_training_is_deterministic_for_a_seed():
    pairs, _ = prompt_dependent_pairs(num_pairs=200)
    finals = []
    for _ in range(2):
        torch.manual_seed(3)
        gate = GatingHead(8, 3, hidden_sizes=[16], dropout=0.2)
        result = train_gate(gate, pairs, ATTRS, GateTrainOptions(steps=30, batch_size=50, seed=4), show_progress=False)
        finals.append((result.beta_final, result.val["G_loss"]))
    assert finals[0] == finals[1]


def test_batches_cover_every_pair_each_epoch_and_accuracy_counts_ties_half():
    batches = batch_rows(10, 4, steps=5, seed=0)
    assert [len(b) for b in batches] == [4] * 5
    assert sorted(torch.cat(batches[:2]).tolist()) != list(range(10))  # 8 of 10: an epoch is 2 full batches
    assert len(set(torch.cat(batches[:2]).tolist())) == 8
    assert pairwise_accuracy(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])) == pytest.approx(0.5)


def test_validation_report_uses_debiased_attributes():
    pairs, _ = prompt_dependent_pairs(num_pairs=50)
    gate = GatingHead(8, 3, hidden_sizes=[4], dropout=0.0)
    with torch.no_grad():
        gate.debias.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 1.0]]))  # math' = math - style
    report = validation_report(gate, pairs, ATTRS)
    debiased_c = pairs.chosen_rewards[:, 0] - pairs.chosen_rewards[:, 2]
    debiased_r = pairs.rejected_rewards[:, 0] - pairs.rejected_rewards[:, 2]
    assert report["attribute:math"] == pytest.approx(pairwise_accuracy(debiased_c, debiased_r))


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="val_fraction"):
        GateTrainOptions(val_fraction=1.0)
    with pytest.raises(ValueError, match=r"steps\s+Input should be greater than or equal to 1"):
        GateTrainOptions(steps=0)
    with pytest.raises(ValueError, match=r"lr\s+Input should be greater than 0"):
        GateTrainOptions(lr=0.0)
