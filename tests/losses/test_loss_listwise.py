"""Plackett-Luce over ranked lists, against the likelihood written out by hand and over permutations."""

from __future__ import annotations

import math
from itertools import permutations

import pytest
import torch

from smorm.losses import LossInputs, bt_loss, get_loss, plackett_luce_loss


def pl_probability(rewards: list[float], order: tuple[int, ...]) -> float:
    """P(order) = prod_k exp(r_{o_k}) / sum_{j >= k} exp(r_{o_j}), written independently of the code."""
    probability = 1.0
    for k, item in enumerate(order):
        probability *= math.exp(rewards[item]) / sum(math.exp(rewards[j]) for j in order[k:])
    return probability


def test_three_item_list_is_minus_log_of_its_permutation_probability():
    rewards = [0.3, 1.2, -0.5]
    ranks = [1, 0, 2]  # best is item 1, then item 0, then item 2
    total = sum(pl_probability(rewards, order) for order in permutations(range(3)))
    assert total == pytest.approx(1.0)  # the hand formula is a distribution over the 6 rankings
    expected = -math.log(pl_probability(rewards, (1, 0, 2)))
    loss = plackett_luce_loss(torch.tensor(rewards), torch.tensor([7, 7, 7]), torch.tensor(ranks))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    # by hand: -[1.2 - log(e^.3 + e^1.2 + e^-.5)] - [0.3 - log(e^.3 + e^-.5)] - 0
    by_hand = -(1.2 - math.log(math.exp(0.3) + math.exp(1.2) + math.exp(-0.5))) - (
        0.3 - math.log(math.exp(0.3) + math.exp(-0.5)))
    assert float(loss) == pytest.approx(by_hand, rel=1e-6)


def test_the_loss_is_the_mean_over_lists_and_a_list_of_two_is_bt():
    rewards = torch.tensor([2.0, 0.5, 0.1, 0.9, -1.0])
    list_ids = torch.tensor([0, 0, 3, 3, 3])
    ranks = torch.tensor([0, 1, 2, 0, 1])  # list 3 ranks item 3 > item 4 > item 2
    first = -math.log(pl_probability([2.0, 0.5], (0, 1)))
    second = -math.log(pl_probability([0.1, 0.9, -1.0], (1, 2, 0)))
    assert float(plackett_luce_loss(rewards, list_ids, ranks)) == pytest.approx((first + second) / 2, rel=1e-6)
    chosen, rejected = torch.tensor([1.5, -0.2]), torch.tensor([0.5, 0.4])
    as_lists = plackett_luce_loss(torch.cat([chosen, rejected]), torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]))
    assert float(as_lists) == pytest.approx(float(bt_loss(chosen, rejected)), rel=1e-6)


def test_ties_share_one_choice_set_breslow():
    # items a=1.0 (rank 0), b=0.0 and c=0.5 tied at rank 1: both tied items are chosen from {b, c}.
    rewards, ranks = [1.0, 0.0, 0.5], [0, 1, 1]
    loss = plackett_luce_loss(torch.tensor(rewards), torch.zeros(3, dtype=torch.long), torch.tensor(ranks))
    everything = math.log(math.exp(1.0) + math.exp(0.0) + math.exp(0.5))
    tied = math.log(math.exp(0.0) + math.exp(0.5))
    by_hand = -(1.0 - everything) - (0.0 - tied) - (0.5 - tied)
    assert float(loss) == pytest.approx(by_hand, rel=1e-6)
    # the order written inside a tie does not matter, and a tie of two equal rewards keeps 2 log 2
    swapped = plackett_luce_loss(torch.tensor([1.0, 0.5, 0.0]), torch.zeros(3, dtype=torch.long), torch.tensor(ranks))
    assert float(swapped) == pytest.approx(float(loss), rel=1e-6)
    equal = plackett_luce_loss(torch.tensor([9.0, 9.0]), torch.zeros(2, dtype=torch.long), torch.tensor([0, 0]))
    assert float(equal) == pytest.approx(2 * math.log(2), rel=1e-6)


def test_large_rewards_stay_finite_and_gradients_flow():
    rewards = torch.tensor([300.0, -300.0, 0.0], requires_grad=True)
    loss = plackett_luce_loss(rewards, torch.zeros(3, dtype=torch.long), torch.tensor([2, 0, 1]))
    loss.backward()
    value = float(loss.detach())  # -(-300 - 300) - (0 - 300) - 0: b is best of all, c of {a, c}
    assert math.isfinite(value) and value == pytest.approx(900.0, rel=1e-4)
    assert torch.isfinite(rewards.grad).all() and rewards.grad[1] < 0 < rewards.grad[0]


def test_registered_loss_reads_the_list_fields_and_reports_accuracy():
    definition = get_loss("plackett_luce")
    assert definition.needs == {"pairs", "lists"}
    inputs = LossInputs(list_rewards=torch.tensor([0.2, 1.0, 0.5, 0.0, 3.0]), list_ids=torch.tensor([0, 0, 0, 1, 1]),
                        list_ranks=torch.tensor([0, 1, 2, 0, 1]))
    result = definition.fn(inputs)
    # list 0: (0 over 1) wrong, (0 over 2) wrong, (1 over 2) right; list 1: (3 over 4) wrong -> 1 of 4
    assert result.metrics == {"accuracy": 0.25, "lists": 2.0, "mean_list_size": 2.5}
    with pytest.raises(ValueError, match="needs LossInputs.list_rewards"):
        definition.fn(LossInputs())
    with pytest.raises(ValueError, match="one shape"):
        definition.fn(LossInputs(list_rewards=torch.zeros(3), list_ids=torch.zeros(2, dtype=torch.long),
                                 list_ranks=torch.zeros(3, dtype=torch.long)))
