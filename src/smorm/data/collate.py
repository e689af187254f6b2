"""Collation of token ids into batches, and length-aware batch order.

Chosen and rejected sequences go into ONE ``[2B, T]`` tensor so that a reward model scores a pair
batch in one forward pass (as TRL's reward trainer does).
"""

from __future__ import annotations

import math
import random

import torch

from smorm.types import PairBatch, RatingBatch, SequenceBatch

PADDING_SIDES = ("right", "left")


def collate_sequences(sequences: list[list[int]], pad_id: int, padding_side: str = "right") -> SequenceBatch:
    """Pad token id lists to one ``[batch, seq]`` tensor.

    Args:
        sequences: B non-empty token id lists.
        pad_id: id written into padding positions (masked out by ``attention_mask``).
        padding_side: ``"right"`` (pad after the tokens) or ``"left"`` (before; for generation).

    Returns:
        ``input_ids`` ``[B, T]`` (long) and ``attention_mask`` ``[B, T]`` (long, 1 = real token),
        where T is the longest sequence.
    """
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if not sequences:
        raise ValueError("cannot collate an empty batch")
    if any(len(ids) == 0 for ids in sequences):
        raise ValueError("cannot collate an empty sequence")
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        start = 0 if padding_side == "right" else width - len(ids)
        input_ids[row, start : start + len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, start : start + len(ids)] = 1
    return SequenceBatch(input_ids=input_ids, attention_mask=attention_mask)


def collate_pairs(
    chosen_ids: list[list[int]],
    rejected_ids: list[list[int]],
    margins: list[float | None],
    source_ids: list[int],
    sources: list[str],
    pad_id: int,
    padding_side: str = "right",
) -> PairBatch:
    """B pairs as one ``[2B, T]`` batch: rows ``0..B-1`` chosen, rows ``B..2B-1`` rejected.

    Args:
        chosen_ids / rejected_ids: B token id lists each; pair i is (chosen_ids[i], rejected_ids[i]).
        margins: B preference margins, None where the data has none (becomes NaN).
        source_ids: B indices into ``sources``.
        sources: source names.
    """
    count = len(chosen_ids)
    if not (len(rejected_ids) == len(margins) == len(source_ids) == count):
        raise ValueError(
            f"collate_pairs needs equal lengths: {count} chosen, {len(rejected_ids)} rejected, "
            f"{len(margins)} margins, {len(source_ids)} source ids"
        )
    bad = [i for i in source_ids if not 0 <= i < len(sources)]
    if bad:
        raise ValueError(f"source ids {sorted(set(bad))} out of range for {len(sources)} sources")
    return PairBatch(
        sequences=collate_sequences([*chosen_ids, *rejected_ids], pad_id, padding_side),
        margins=torch.tensor([math.nan if m is None else float(m) for m in margins], dtype=torch.float32),
        source_ids=torch.tensor(source_ids, dtype=torch.long),
        sources=list(sources),
    )


def collate_ratings(
    ids: list[list[int]],
    ratings: list[dict[str, float]],
    attribute_names: list[str],
    pad_id: int,
    padding_side: str = "right",
    ignore_unknown: bool = False,
) -> RatingBatch:
    """B rated responses; a missing attribute is masked (``rating_mask`` False, target 0), never zero-rated.

    Args:
        ids: B token id lists.
        ratings: B dicts attribute -> rating in [0, 1].
        attribute_names: the K attributes, in the order of the model's attribute head.
        ignore_unknown: drop attributes not in ``attribute_names`` instead of raising.

    Returns:
        ``ratings`` ``[B, K]`` float32 and ``rating_mask`` ``[B, K]`` bool.
    """
    if len(ids) != len(ratings):
        raise ValueError(f"collate_ratings got {len(ids)} sequences and {len(ratings)} rating dicts")
    column = {name: k for k, name in enumerate(attribute_names)}
    targets = torch.zeros((len(ids), len(attribute_names)), dtype=torch.float32)
    mask = torch.zeros((len(ids), len(attribute_names)), dtype=torch.bool)
    for row, rated in enumerate(ratings):
        for name, value in rated.items():
            if name not in column:
                if ignore_unknown:
                    continue
                raise ValueError(f"attribute {name!r} is not one of the model's attributes {attribute_names}")
            targets[row, column[name]] = float(value)
            mask[row, column[name]] = True
    return RatingBatch(
        sequences=collate_sequences(ids, pad_id, padding_side), ratings=targets, rating_mask=mask
    )


def length_grouped_batches(
    lengths: list[int], batch_size: int, shuffle: bool, seed: int, mega_batch: int = 50
) -> list[list[int]]:
    """Index batches in which sequences of similar length share a batch (less padding).

    Indices are (optionally) shuffled, cut into mega-batches of ``mega_batch * batch_size``, sorted
    longest first within each mega-batch and cut into batches; with ``shuffle`` the batch order is
    shuffled too. The same ``seed`` gives the same batches. The last batch may be smaller.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    span = mega_batch * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        group = sorted(order[start : start + span], key=lambda i: -lengths[i])
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    if shuffle:
        rng.shuffle(batches)
    return batches


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Deterministic evaluation batches: longest first (ties keep index order), cut into ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
