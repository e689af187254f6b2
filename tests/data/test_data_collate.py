"""Collation (padding on both sides, the [2B, T] pair layout, rating masks) and batch order."""

from __future__ import annotations

import math
import random

import pytest

from smorm.data import (
    collate_pairs,
    collate_ratings,
    collate_sequences,
    length_grouped_batches,
    sorted_batches,
)


def test_right_and_left_padding():
    right = collate_sequences([[5, 6, 7], [8]], pad_id=0)
    assert right.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    left = collate_sequences([[5, 6, 7], [8]], pad_id=9, padding_side="left")
    assert left.input_ids.tolist() == [[5, 6, 7], [9, 9, 8]]
    assert left.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_bad_collation_inputs():
    with pytest.raises(ValueError, match="padding_side"):
        collate_sequences([[1]], 0, padding_side="middle")
    with pytest.raises(ValueError, match="empty sequence"):
        collate_sequences([[1], []], 0)


def test_pairs_share_one_tensor_chosen_first():
    batch = collate_pairs(
        [[1, 2], [3]],
        [[4], [5, 6, 7]],
        margins=[0.5, None],
        source_ids=[1, 0],
        sources=["hh", "uf"],
        pad_id=0,
    )
    assert batch.sequences.input_ids.tolist() == [[1, 2, 0], [3, 0, 0], [4, 0, 0], [5, 6, 7]]
    assert batch.num_pairs == 2
    assert batch.margins[0].item() == 0.5 and math.isnan(batch.margins[1].item())
    assert batch.source_ids.tolist() == [1, 0] and batch.sources == ["hh", "uf"]
    with pytest.raises(ValueError, match="equal lengths"):
        collate_pairs([[1]], [[2], [3]], [None], [0], ["a"], 0)
    with pytest.raises(ValueError, match=r"source ids \[2\] out of range"):
        collate_pairs([[1]], [[2]], [None], [2], ["a"], 0)


def test_rating_batch_masks_missing_attributes():
    batch = collate_ratings(
        [[1], [2, 3]], [{"b": 0.25}, {"a": 1.0, "b": 0.0}], ["a", "b"], pad_id=0, padding_side="left"
    )
    assert batch.ratings.tolist() == [[0.0, 0.25], [1.0, 0.0]]
    assert batch.rating_mask.tolist() == [[False, True], [True, True]]
    assert batch.sequences.input_ids.tolist() == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="attribute 'c' is not one of"):
        collate_ratings([[1]], [{"c": 1.0}], ["a"], 0)
    assert collate_ratings([[1]], [{"c": 1.0}], ["a"], 0, ignore_unknown=True).rating_mask.tolist() == [
        [False]
    ]


def test_length_grouped_batches_sort_within_mega_batches():
    lengths = [3, 9, 1, 7, 5, 8, 2, 6, 4, 10]
    # No shuffle, mega-batch of 1 * 2 = 2 items: each batch is two neighbours, longer first.
    assert length_grouped_batches(lengths, batch_size=2, shuffle=False, seed=0, mega_batch=1) == [
        [1, 0],
        [3, 2],
        [5, 4],
        [7, 6],
        [9, 8],
    ]
    # One mega-batch holding everything: batches are the lengths sorted longest first.
    expected = [[9, 1], [5, 3], [7, 4], [8, 0], [6, 2]]
    assert length_grouped_batches(lengths, batch_size=2, shuffle=False, seed=0, mega_batch=50) == expected
    shuffled = length_grouped_batches(lengths, batch_size=2, shuffle=True, seed=3, mega_batch=50)
    assert sorted(shuffled) == sorted(expected)  # same batches, shuffled order


def test_length_grouped_batches_are_deterministic_and_cover_every_index():
    lengths = [random.Random(1).randint(1, 500) for _ in range(1000)]
    first = length_grouped_batches(lengths, batch_size=8, shuffle=True, seed=7)
    assert first == length_grouped_batches(lengths, batch_size=8, shuffle=True, seed=7)
    assert first != length_grouped_batches(lengths, batch_size=8, shuffle=True, seed=8)
    assert sorted(i for batch in first for i in batch) == list(range(1000))
    assert all(len(batch) == 8 for batch in first)  # 1000 = 125 * 8


def test_sorted_batches_longest_first():
    assert sorted_batches([2, 5, 5, 1, 3], batch_size=2) == [[1, 2], [4, 0], [3]]
