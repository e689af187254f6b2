"""Ranked lists through the trainer: whole lists per batch and per process, joined back for plackett_luce."""

from __future__ import annotations

import json
import math

import pytest
import torch

from smorm.losses import plackett_luce_loss
from smorm.train.batches import StepPlan, group_batches, list_groups, step_indices
from smorm.train.config import RunConfig, TrainConfig
from smorm.train.losses_glue import compute_losses, list_items
from smorm.train.trainer import Trainer
from smorm.types import ListLink


def test_list_groups_keep_a_lists_links_together_and_plain_pairs_alone():
    links = [None, ListLink("f:1", 0, 1, 0, 1), None, ListLink("f:1", 1, 2, 1, 2), ListLink("f:9", 0, 1, 0, 1)]
    assert list_groups(links) == [[0], [1, 3], [2], [4]]
    assert list_groups([None, None]) == []


def test_group_batches_cut_exactly_the_asked_number_of_whole_groups():
    sizes = [3, 1, 1, 4, 2, 1, 1, 2, 3, 1]  # 19 pairs
    widths = [10, 5, 7, 30, 12, 3, 8, 9, 4, 6]
    batches = group_batches(sizes, widths, num_batches=5, seed=3)
    assert len(batches) == 5 and sorted(g for b in batches for g in b) == list(range(10))
    assert all(sum(sizes[g] for g in b) < 19 / 5 + max(sizes) for b in batches)  # under a list past the share
    assert batches == group_batches(sizes, widths, num_batches=5, seed=3)  # deterministic per seed
    assert len(group_batches(sizes, widths, num_batches=10, seed=0)) == 10  # one group each
    with pytest.raises(ValueError, match="cannot cut 10 groups into 11 batches"):
        group_batches(sizes, widths, num_batches=11, seed=0)


def test_every_pair_once_per_epoch_and_no_list_split_between_processes():
    groups = [[0, 1, 2], [3], [4, 5], [6], [7, 8, 9, 10], [11]]
    plan = StepPlan.build(TrainConfig(pair_batch_size=4, epochs=2), num_pairs=12, num_ratings=0, world_size=2,
                          pair_groups=groups)
    assert plan.micro_per_epoch == 3 and plan.total_steps == 6
    chosen = [[1] * (i + 1) for i in range(12)]
    owner = {i: tuple(g) for g in groups for i in g}
    for epoch in range(2):
        seen = []
        for micro in range(epoch * 3, epoch * 3 + 3):
            shards = [step_indices(plan, micro, 0, rank, chosen, []).pairs for rank in (0, 1)]
            for shard in shards:
                assert all(set(owner[i]) <= set(shard) for i in shard)  # a list is whole on one process
            seen += shards[0] + shards[1]
            assert step_indices(plan, micro, 0, 0, chosen, []).global_pairs == len(shards[0]) + len(shards[1])
        assert sorted(seen) == list(range(12))
    with pytest.raises(ValueError, match="exactly once"):
        StepPlan.build(TrainConfig(), num_pairs=3, num_ratings=0, world_size=1, pair_groups=[[0, 1], [1, 2]])


def test_list_items_join_links_back_into_lists_and_plain_pairs_into_lists_of_two():
    # rows 0..2 are chosen, 3..5 rejected: pair 0 and 2 are links of list "L" (items a0 > b1 > c2), pair 1 is plain
    links = [ListLink("L", 0, 1, 0, 1), None, ListLink("L", 1, 2, 1, 2)]
    rows, numbers, ranks = list_items(links)
    assert rows == [0, 3, 1, 4, 5]  # a (row 0), b (row 3; its second copy, row 2, is not read again), pair 1, c
    assert numbers == [0, 0, 1, 1, 0] and ranks == [0, 1, 0, 1, 2]


RANKED = [
    {"prompt": "How do I boil an egg?", "responses": ["Boil it 8 minutes.", "Eggs are birds.", "Use water.", "No."],
     "scores": [9, 1, 5, 1]},
    {"prompt": "Name a prime.", "responses": ["7.", "8.", "It is 9."], "scores": [3, 1, 2]},
    {"prompt": "Say hello.", "responses": ["Hello!", "go away"], "scores": [1, 0]},
]


def test_a_ranked_source_trains_with_plackett_luce_on_whole_lists(tiny_llama_dir, tmp_path):
    path = tmp_path / "ranked.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in RANKED))
    raw = {"output_dir": str(tmp_path / "run"), "model": {"backbone": str(tiny_llama_dir), "heads": {"single": {}}},
           "data": {"pairs": [{"path": str(path), "format": "ranked", "ranking": {"into": "list"}}], "max_length": 32},
           "losses": [{"name": "plackett_luce"}],
           "train": {"max_steps": 3, "pair_batch_size": 2, "lr": 1e-2, "warmup_ratio": 0.0, "precision": "fp32"}}
    trainer = Trainer(RunConfig.model_validate(raw), show_progress=False)
    trainer.setup()
    assert trainer.data.num_pairs == 3 + 2 + 1 and trainer.plan.pair_groups == [[0, 1, 2], [3, 4], [5]]
    # one step's loss is the PL loss of the rewards of its whole lists, each response scored once
    trainer._all_sequences = trainer.data.all_sequences()
    indices = step_indices(trainer.plan, 0, trainer.config.train.seed, 0, trainer.data.chosen, trainer.data.rating_ids)
    seq = indices.pairs + [trainer.data.num_pairs + i for i in indices.pairs]
    with torch.no_grad():
        inputs = trainer._inputs(seq)
        output = trainer.model(**inputs)
        loss, metrics = compute_losses(trainer.config, trainer.model_unwrapped, output, trainer.data, indices, inputs)
    sizes = {3: 4, 2: 3, 1: 2}  # links -> responses of that list
    assert metrics["plackett_luce/lists"] == len({trainer.data.pair_links[i].list_id for i in indices.pairs})
    expected_items = sum(sizes[len(g)] for g in trainer.plan.pair_groups if g[0] in indices.pairs)
    assert metrics["plackett_luce/mean_list_size"] * metrics["plackett_luce/lists"] == expected_items
    rewards = output.single  # [chosen (B), rejected (B)]
    rows, numbers, ranks = list_items([trainer.data.pair_links[i] for i in indices.pairs])
    expected = plackett_luce_loss(rewards[rows], torch.tensor(numbers), torch.tensor(ranks))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    params = {n: p for n, p in trainer.model_unwrapped.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    trainer.train()
    assert not [n for n, p in before.items() if torch.equal(p, params[n].detach())]
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(math.isfinite(row["plackett_luce/loss"]) for row in log)
