"""The step schedule: D_S defines the epoch, D_M cycles, everything deterministic per seed."""

from __future__ import annotations

import torch

from smorm.models.cached_scoring import pad_hidden
from smorm.train.batches import StepPlan, step_indices
from smorm.train.config import TrainConfig


def test_epoch_over_pairs_and_ratings_cycle():
    train = TrainConfig(pair_batch_size=4, rating_batch_size=3, epochs=2)
    plan = StepPlan.build(train, num_pairs=10, num_ratings=5, world_size=1)
    assert plan.micro_per_epoch == 3 and plan.total_steps == 6
    chosen = [[1] * (i + 1) for i in range(10)]
    ratings = [[1] * (i + 1) for i in range(5)]
    seen_pairs = [step_indices(plan, m, 0, 0, chosen, ratings).pairs for m in range(3)]
    assert sorted(i for batch in seen_pairs for i in batch) == list(range(10))  # each pair once per epoch
    seen_ratings = [step_indices(plan, m, 0, 0, chosen, ratings).ratings for m in range(2)]
    assert sorted(i for batch in seen_ratings for i in batch) == list(range(5))  # D_M cycles every 2 steps
    again = [step_indices(plan, m, 0, 0, chosen, ratings).pairs for m in range(3)]
    assert again == seen_pairs  # deterministic: a resumed run sees the same batches


def test_ranks_take_disjoint_strided_shards():
    train = TrainConfig(pair_batch_size=4, rating_batch_size=2)
    plan = StepPlan.build(train, num_pairs=8, num_ratings=4, world_size=2)
    chosen, ratings = [[1]] * 8, [[1]] * 4
    a, b = (step_indices(plan, 0, 0, r, chosen, ratings) for r in (0, 1))
    assert len(a.pairs) == len(b.pairs) == 2 and not set(a.pairs) & set(b.pairs)
    assert len(a.ratings) == len(b.ratings) == 1 and a.ratings != b.ratings


def test_max_steps_overrides_epochs_and_ratings_only_runs():
    plan = StepPlan.build(TrainConfig(max_steps=7), num_pairs=3, num_ratings=0, world_size=1)
    assert plan.total_steps == 7
    plan = StepPlan.build(TrainConfig(rating_batch_size=2), num_pairs=0, num_ratings=5, world_size=1)
    assert plan.micro_per_epoch == 3


def test_collate_hidden_pads_right_with_mask():
    hidden, mask = pad_hidden([torch.ones(2, 3), torch.full((4, 3), 2.0)])
    assert hidden.shape == (2, 4, 3) and mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert hidden[0, 2:].abs().sum() == 0 and hidden[1].eq(2).all()


def test_pair_widths_are_the_rows_a_pair_takes():
    from smorm.train.batches import pair_widths

    chosen, rejected = [[1] * 10, [1] * 4], [[2] * 7, [2] * 9]
    # unpacked: the wider of the two rows; packed: prompt once + both responses (10 + 7 - 5, 4 + 9 - 3)
    assert pair_widths(chosen, rejected, [5, 3], [5, 3], shared_prompt=False) == [10, 9]
    assert pair_widths(chosen, rejected, [5, 3], [5, 3], shared_prompt=True) == [12, 10]


def test_pairs_are_grouped_by_the_wider_row():
    """Batches are grouped by max(chosen, rejected): grouping by the chosen length alone puts a pair with a
    short chosen and a long rejected beside short pairs and pads the whole batch to the long row."""
    train = TrainConfig(pair_batch_size=2)
    plan = StepPlan.build(train, num_pairs=4, num_ratings=0, world_size=1)
    from smorm.train.batches import pair_widths

    chosen = [[1] * 2, [1] * 5, [1] * 6, [1] * 3]  # by chosen alone: {0, 3} and {1, 2}
    rejected = [[1] * 20, [1] * 5, [1] * 21, [1] * 3]
    plan.pair_lengths = pair_widths(chosen, rejected, [1] * 4, [1] * 4, shared_prompt=False)
    batches = [sorted(step_indices(plan, m, 0, 0, chosen, []).pairs) for m in range(2)]
    assert sorted(batches) == [[0, 2], [1, 3]]  # the two long-rejected pairs share a batch


def test_token_budget_batches_hold_about_the_budget_and_resume():
    """train.token_budget: pair batches cut by tokens (each pair's width), not by count."""
    import random

    import pytest

    widths = [random.Random(i).randint(20, 300) for i in range(40)]
    train = TrainConfig(token_budget=1000, epochs=2)
    plan = StepPlan.build(train, num_pairs=40, num_ratings=0, world_size=1, pair_lengths=widths)
    assert plan.micro_per_epoch == -(-sum(widths) // 1000)  # ceil(total tokens / budget)
    chosen = [[1]] * 40
    for epoch in range(2):
        batches = [step_indices(plan, epoch * plan.micro_per_epoch + m, 3, 0, chosen, []).pairs
                   for m in range(plan.micro_per_epoch)]
        assert sorted(i for b in batches for i in b) == list(range(40))  # each pair once per epoch
        share = sum(widths) / plan.micro_per_epoch
        # a batch exceeds its even share of the tokens by less than one pair
        assert all(sum(widths[i] for i in b) < share + max(widths) for b in batches)
        assert len({len(b) for b in batches}) > 1  # the pair count varies with the widths
    again = [step_indices(plan, m, 3, 0, chosen, []).pairs for m in range(plan.micro_per_epoch)]
    assert again == [step_indices(plan, m, 3, 0, chosen, []).pairs for m in range(plan.micro_per_epoch)]
    with pytest.raises(ValueError, match="needs the width of every pair"):
        StepPlan.build(train, num_pairs=40, num_ratings=0, world_size=1)


def test_token_budget_refuses_balanced_sources():
    import pytest
    from pydantic import ValidationError

    from smorm.train.config import RunConfig

    with pytest.raises(ValidationError, match="token_budget"):
        RunConfig.model_validate({"data": {"pairs": [{"path": "a.jsonl"}]}, "losses": [{"name": "bt"}],
                                  "model": {"heads": {"single": {"kind": "linear"}}},
                                  "train": {"token_budget": 512, "balance_sources": True}})
