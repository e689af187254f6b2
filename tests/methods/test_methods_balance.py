"""train.balance_sources (MORE, 003 App. C): every pair batch takes an equal share of each source."""

from __future__ import annotations

from collections import Counter

import pytest

from smorm.train.batches import StepPlan, source_shares, step_indices
from smorm.train.config import TrainConfig

# Three sources of unequal size: ids 0..9 are source 0, 10..12 source 1, 13..17 source 2.
SOURCE_IDS = [0] * 10 + [1] * 3 + [2] * 5
SOURCE_OF = dict(enumerate(SOURCE_IDS))


def plan_for(batch_size: int, world_size: int = 1, **train) -> StepPlan:
    config = TrainConfig(pair_batch_size=batch_size, balance_sources=True, **train)
    return StepPlan.build(config, num_pairs=len(SOURCE_IDS), num_ratings=0, world_size=world_size,
                          pair_source_ids=SOURCE_IDS)


def batch(plan: StepPlan, micro: int, seed: int = 0, rank: int = 0) -> list[int]:
    chosen = [[1]] * len(SOURCE_IDS)
    return step_indices(plan, micro, seed, rank, chosen, []).pairs


def test_every_batch_has_the_same_share_of_each_source():
    plan = plan_for(6)
    for micro in range(12):  # source 1 (3 pairs) is cycled many times; source 0 (10) less
        counts = Counter(SOURCE_OF[i] for i in batch(plan, micro))
        assert counts == {0: 2, 1: 2, 2: 2}, (micro, counts)


def test_left_over_slots_go_round_robin():
    # 7 = 3 sources x 2 + 1: the extra slot goes to source 0, then 1, then 2 (worked by hand)
    assert source_shares(3, 7, 0) == ([3, 2, 2], [0, 0, 0])
    assert source_shares(3, 7, 1) == ([2, 3, 2], [3, 2, 2])
    assert source_shares(3, 7, 2) == ([2, 2, 3], [5, 5, 4])
    assert source_shares(3, 7, 3) == ([3, 2, 2], [7, 7, 7])
    plan = plan_for(7)
    totals = Counter(SOURCE_OF[i] for micro in range(3) for i in batch(plan, micro))
    assert totals == {0: 7, 1: 7, 2: 7} and all(len(batch(plan, m)) == 7 for m in range(3))


@pytest.mark.parametrize(("sources", "size"), [(3, 7), (4, 10), (5, 5), (2, 9)])
def test_consumed_counts_are_the_running_sum_of_shares(sources, size):
    running = [0] * sources
    for micro in range(25):
        shares, consumed = source_shares(sources, size, micro)
        assert consumed == running and sum(shares) == size
        running = [a + b for a, b in zip(running, shares)]


def test_each_source_is_a_reshuffled_stream_without_repeats_within_a_pass():
    plan = plan_for(6)
    stream = [i for micro in range(6) for i in batch(plan, micro) if SOURCE_OF[i] == 1]  # 12 = 4 passes of 3
    passes = [stream[k : k + 3] for k in range(0, 12, 3)]
    assert all(sorted(p) == [10, 11, 12] for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # a new order each pass
    big = [i for micro in range(5) for i in batch(plan, micro) if SOURCE_OF[i] == 0]  # 10 = one pass
    assert sorted(big) == list(range(10))


def test_schedule_is_a_pure_function_of_seed_and_step():
    first = [batch(plan_for(6), m, seed=3) for m in range(8)]
    resumed = [batch(plan_for(6), m, seed=3) for m in range(4, 8)]  # a fresh plan, as after a restart
    assert resumed == first[4:]
    assert [batch(plan_for(6), m, seed=4) for m in range(8)] != first


def test_ranks_split_the_balanced_batch():
    plan = plan_for(6, world_size=2)
    a, b = batch(plan, 0, rank=0), batch(plan, 0, rank=1)
    assert not set(a) & set(b) and sorted(a + b) == sorted(batch(plan_for(6), 0))
    assert len(step_indices(plan, 0, 0, 0, [[1]] * 18, []).pairs) == 3
    assert step_indices(plan, 0, 0, 0, [[1]] * 18, []).global_pairs == 6


def test_epoch_length_is_unchanged_by_balancing():
    balanced = plan_for(6, epochs=2)
    plain = StepPlan.build(TrainConfig(pair_batch_size=6, epochs=2), len(SOURCE_IDS), 0, 1)
    assert balanced.total_steps == plain.total_steps == 6


def test_clear_errors():
    with pytest.raises(ValueError, match=r"pair_batch_size \(2\) is smaller than the number of pair sources \(3\)"):
        plan_for(2)
    with pytest.raises(ValueError, match="needs the source of every pair"):
        StepPlan.build(TrainConfig(balance_sources=True), num_pairs=4, num_ratings=0, world_size=1)


def test_off_by_default_and_a_ratings_only_run_ignores_it():
    assert TrainConfig().balance_sources is False
    plan = StepPlan.build(TrainConfig(balance_sources=True, rating_batch_size=2), 0, 5, 1)
    assert plan.source_members == [] and len(step_indices(plan, 0, 0, 0, [], [[1]] * 5).ratings) == 2
