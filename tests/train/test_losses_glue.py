"""compute_losses hands each loss this process's shard: BSR's B is the per-device batch size."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from smorm.train.batches import StepIndices, StepPlan, step_indices
from smorm.train.config import RunConfig, TrainConfig
from smorm.train.losses_glue import compute_losses
from smorm.train.prepare import TokenizedData
from smorm.types import RewardOutput


def bsr_config() -> RunConfig:
    return RunConfig.model_validate({
        "model": {"heads": {"single": {"kind": "linear"}}},
        "data": {"pairs": [{"path": "pairs.jsonl"}]},
        "losses": [{"name": "bsr"}],
    })


def four_pairs() -> TokenizedData:
    return TokenizedData(chosen=[[1]] * 4, rejected=[[2]] * 4, chosen_prompt_lengths=[0] * 4,
                         rejected_prompt_lengths=[0] * 4, margins=[math.nan] * 4, pair_source_ids=[0] * 4,
                         sources=["s"], rating_ids=[], rating_prompt_lengths=[], ratings=[], attributes=[])


def step(single: list[float], indices: StepIndices, world_size: int) -> dict[str, float]:
    # rows: chosen of the shard, then rejected of the shard
    output = RewardOutput(single=torch.tensor(single), attributes=None, pooled=torch.zeros(len(single), 3))
    _, metrics = compute_losses(bsr_config(), SimpleNamespace(heads={}), output, four_pairs(), indices, {},
                                world_size=world_size)
    return metrics


def test_two_processes_each_scale_lambda_by_their_shard_of_the_global_batch():
    # train.pair_batch_size 4 on 2 processes: each rank's shard of the step's batch has B = 2 pairs.
    # chosen [1, 2], rejected [0, -1]: BT = (log(1+e^-1) + log(1+e^-3)) / 2, penalty (2/4)² = 0.25
    plan = StepPlan.build(TrainConfig(pair_batch_size=4), num_pairs=4, num_ratings=0, world_size=2)
    indices = step_indices(plan, micro=0, seed=0, rank=0, chosen=four_pairs().chosen, ratings=[])
    assert len(indices.pairs) == 2 and indices.global_pairs == 4
    bt = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-3))) / 2
    metrics = step([1.0, 2.0, 0.0, -1.0], indices, world_size=2)
    assert metrics["bsr/effective_lambda"] == pytest.approx(1e-3 * 2)
    assert metrics["bsr/bsr_penalty"] == pytest.approx(0.25)
    # share = 2 pairs x 2 processes / 4 global pairs = 1
    assert metrics["loss"] == pytest.approx(bt + 2e-3 * 0.25, rel=1e-6)


def test_one_process_scales_lambda_by_the_whole_batch():
    # the same 4 pairs on one process: B = 4, chosen [1, 2, 1, 2], rejected [0, -1, 0, -1]
    bt = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-3))) / 2
    metrics = step([1.0, 2.0, 1.0, 2.0, 0.0, -1.0, 0.0, -1.0],
                   StepIndices(pairs=[0, 1, 2, 3], ratings=[], global_pairs=4), world_size=1)
    assert metrics["bsr/effective_lambda"] == pytest.approx(1e-3 * 4)
    assert metrics["loss"] == pytest.approx(bt + 4e-3 * 0.25, rel=1e-6)
