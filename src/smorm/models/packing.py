"""Packed rows: a prompt encoded once for all its responses, and several sequences per row (issues 8, 15).

A *unit* is a prompt and one or more responses to it (a pair is one unit of two responses; a lone
sequence is a unit of one response). For causal backbones a row holds one or more units
``prompt_1 ⊕ responses_1… ⊕ prompt_2 ⊕ responses_2… ⊕ …`` with a 4D attention mask that is block
diagonal over units, in which every response sees its own unit's prompt and itself but no other
response and nothing of another unit, and with positions that restart at each unit's prompt and
continue from the prompt's end in each response. Each response's hidden states are then exactly
those of its own ``prompt ⊕ response`` sequence (up to float summation order), gradients from every
response flow into the one shared prompt encoding, and a row carries almost no padding
(:func:`fill_rows`).

transformers' own padding-free path (``DataCollatorWithFlattening``, ``position_ids`` restarting at
each sequence) needs ``use_cache=False`` and *no* attention mask, and a packed batch given an
attention mask silently lets sequences attend to each other (measured with transformers 5.24);
the explicit 4D mask here is correct under both ``sdpa`` and ``eager`` attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Unit:
    """A prompt and the responses that follow it (each non-empty); ``prompt`` may be empty."""

    prompt: list[int]
    responses: list[list[int]]

    def __len__(self) -> int:
        return len(self.prompt) + sum(len(response) for response in self.responses)


@dataclass
class PackedRows:
    """Packed rows of units.

    Attributes:
        input_ids: ``[R, L]`` tokens, right-padded.
        attention_mask: ``[R, 1, L, L]`` bool, True where query i may attend to key j.
        position_ids: ``[R, L]``: each unit's prompt counts from 0; each response continues after its prompt.
        last_index: ``[R, S]`` position of each response segment's last token (-1 where a row has
            fewer than S responses); segments are numbered across a row's units.
        real_tokens: ``[R, L]`` bool, False on padding.
        prompt_last: ``[R, S]`` position of the last prompt token of each segment's unit (its first token
            when the prompt is empty; -1 where there is no segment): where a gate reads the prompt feature.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    last_index: torch.Tensor
    real_tokens: torch.Tensor
    prompt_last: torch.Tensor

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens in the packed rows."""
        return int(self.real_tokens.sum())


Slot = tuple[int, int]  # (row, segment) of one response in packed rows


def fill_rows(lengths: Sequence[int], padding_free: bool = True) -> list[list[int]]:
    """Which units share a row: first-fit decreasing into rows as long as the longest unit.

    No row is longer than the longest unit alone would be, so a row's attention costs no more than
    that unit's (and the batch's ``[R, L, L]`` mask no more than padding to it), while short units
    fill the rows up. Deterministic: ties keep input order. ``padding_free=False``: one unit per row.

    Returns:
        unit indices per row, each row's units longest first.
    """
    if not padding_free:
        return [[u] for u in range(len(lengths))]
    if not lengths:
        return []
    capacity = max(lengths)
    rows: list[list[int]] = []
    room: list[int] = []
    for unit in sorted(range(len(lengths)), key=lambda u: -lengths[u]):
        for r, left in enumerate(room):
            if lengths[unit] <= left:
                rows[r].append(unit)
                room[r] -= lengths[unit]
                break
        else:
            rows.append([unit])
            room.append(capacity - lengths[unit])
    return rows


def pack_units(units: Sequence[Unit], pad_id: int, padding_free: bool = True
               ) -> tuple[PackedRows, list[list[Slot]], list[list[int]]]:
    """Pack ``units`` into rows (:func:`fill_rows`).

    Returns:
        ``(packed, slots, rows)``: ``slots[u][k]`` is the (row, segment) of response ``k`` of unit ``u``;
        ``rows`` the units of each row in order (to lay out cached states alike, :func:`pack_states`).
    """
    rows = fill_rows([len(unit) for unit in units], padding_free)
    slots: list[list[Slot]] = [[] for _ in units]
    for r, members in enumerate(rows):
        segment = 0
        for u in members:
            slots[u] = [(r, segment + k) for k in range(len(units[u].responses))]
            segment += len(units[u].responses)
    return pack_layout([[units[u] for u in members] for members in rows], pad_id), slots, rows


def pack_rows(prompts: list[list[int]], responses: list[list[list[int]]], pad_id: int) -> PackedRows:
    """One row per ``prompts[r]`` with its ``responses[r]`` (one or more token lists)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} response lists")
    return pack_layout([[Unit(p, rs)] for p, rs in zip(prompts, responses)], pad_id)


def pack_layout(rows: Sequence[Sequence[Unit]], pad_id: int) -> PackedRows:
    """Rows whose units are given in order (the tensors of :class:`PackedRows`)."""
    lengths = [sum(len(unit) for unit in row) for row in rows]
    count, longest = len(rows), max(lengths)
    slots = max(sum(len(unit.responses) for unit in row) for row in rows)
    input_ids = torch.full((count, longest), pad_id, dtype=torch.long)
    position_ids = torch.zeros((count, longest), dtype=torch.long)
    segment = torch.full((count, longest), -2, dtype=torch.long)  # -1 prompt, k response k, -2 padding
    block = torch.full((count, longest), -1, dtype=torch.long)  # the unit a token belongs to
    last_index = torch.full((count, slots), -1, dtype=torch.long)
    prompt_last = torch.full((count, slots), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        start = segment_id = 0
        for u, unit in enumerate(row):
            if not unit.responses or any(len(x) == 0 for x in unit.responses):
                raise ValueError(f"row {r}, unit {u}: every packed unit needs non-empty responses")
            p = len(unit.prompt)
            unit_start = start
            input_ids[r, start : start + p] = torch.tensor(unit.prompt, dtype=torch.long)
            position_ids[r, start : start + p] = torch.arange(p)
            segment[r, start : start + p] = -1
            start += p
            for response in unit.responses:
                end = start + len(response)
                input_ids[r, start:end] = torch.tensor(response, dtype=torch.long)
                position_ids[r, start:end] = torch.arange(p, p + len(response))
                segment[r, start:end] = segment_id
                last_index[r, segment_id] = end - 1
                prompt_last[r, segment_id] = unit_start + max(p - 1, 0)
                segment_id += 1
                start = end
            block[r, unit_start:start] = u
    positions = torch.arange(longest)
    causal = positions.unsqueeze(0) <= positions.unsqueeze(1)  # [L(query), L(key)]
    q_seg, k_seg = segment.unsqueeze(2), segment.unsqueeze(1)  # [R, L, 1], [R, 1, L]
    same_unit = block.unsqueeze(2) == block.unsqueeze(1)
    pad_rows = segment == -2
    mask = causal.unsqueeze(0) & same_unit & ((k_seg == -1) | (q_seg == k_seg)) & ~pad_rows.unsqueeze(2)
    mask &= ~pad_rows.unsqueeze(1)
    # padding queries attend to themselves only, so no softmax row is empty (which gives NaN)
    eye = torch.eye(longest, dtype=torch.bool).unsqueeze(0)
    mask = mask | (eye & pad_rows.unsqueeze(2))
    return PackedRows(input_ids, mask.unsqueeze(1), position_ids, last_index, ~pad_rows, prompt_last)


def attention_bias(base_model: torch.nn.Module, packed: PackedRows) -> torch.Tensor:
    """The packed mask in the form the backbone's attention takes: boolean for ``sdpa``; for eager
    attention, which adds the mask, 0 to keep and the dtype's minimum to drop."""
    implementation = getattr(base_model.config, "_attn_implementation", "sdpa")
    if implementation == "sdpa":
        return packed.attention_mask
    dtype = next(base_model.parameters()).dtype
    return torch.zeros(packed.attention_mask.shape, dtype=dtype, device=packed.attention_mask.device).masked_fill(
        ~packed.attention_mask, torch.finfo(dtype).min)


def packed_hidden_states(base_model: torch.nn.Module, packed: PackedRows) -> torch.Tensor:
    """``[R, L, d]`` last hidden states of a causal backbone run over packed rows."""
    return base_model(input_ids=packed.input_ids, attention_mask=attention_bias(base_model, packed),
                      position_ids=packed.position_ids).last_hidden_state


def gather_segments(hidden: torch.Tensor, packed: PackedRows) -> torch.Tensor:
    """``[R, L, d] -> [R, S, d]``: each response segment's last-token hidden state (zeros where absent)."""
    index = packed.last_index.clamp(min=0)
    rows = torch.arange(hidden.shape[0], device=index.device).unsqueeze(1).expand_as(index)
    gathered = hidden[rows, index]
    return gathered * (packed.last_index >= 0).unsqueeze(-1).to(gathered.dtype)


def slot_tensor(slots: Sequence[Slot]) -> torch.Tensor:
    """``[N, 2]`` (row, segment) of N outputs."""
    return torch.tensor(list(slots), dtype=torch.long).reshape(-1, 2)


def pack_states(unit_states: Sequence[tuple[torch.Tensor, Sequence[torch.Tensor]]], rows: Sequence[Sequence[int]]
                ) -> torch.Tensor:
    """``[R, L, d]`` states laid out as :func:`pack_units` lays out tokens: ``unit_states[u]`` is the
    prompt's states ``[p, d]`` and each response's ``[r_k, d]``; padding is zeros."""
    width = max(sum(s[0].shape[0] + sum(x.shape[0] for x in s[1]) for s in (unit_states[u] for u in row))
                for row in rows)
    first = unit_states[rows[0][0]][0] if unit_states[rows[0][0]][0].numel() else unit_states[rows[0][0]][1][0]
    hidden = first.new_zeros(len(rows), width, first.shape[-1])
    for r, row in enumerate(rows):
        parts = [part for u in row for part in (unit_states[u][0], *unit_states[u][1])]
        row_states = torch.cat(parts)
        hidden[r, : row_states.shape[0]] = row_states
    return hidden
