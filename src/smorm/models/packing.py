"""Shared-prompt packing: encode a pair's prompt once (issue 8; DESIGN "the shared prompt").

Chosen and rejected responses share their prompt, and on conversational data the prompt is most
of the tokens. For causal backbones a row can hold ``prompt ⊕ response_1 ⊕ response_2 ⊕ …`` with a
4D attention mask in which every response sees the prompt and itself but no other response, and
every response's positions continue from the end of the prompt. Each response's last-token hidden
state is then exactly what a separate ``prompt ⊕ response`` sequence would give (up to float
summation order), and gradients from every response flow into the one shared prompt encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackedRows:
    """Packed rows, each ``prompt ⊕ responses…``.

    Attributes:
        input_ids: ``[R, L]`` tokens, right-padded.
        attention_mask: ``[R, 1, L, L]`` bool, True where query i may attend to key j.
        position_ids: ``[R, L]``: the prompt counts from 0; each response restarts after the prompt.
        last_index: ``[R, S]`` position of each response segment's last token (-1 where a row has
            fewer than S responses).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    last_index: torch.Tensor
    real_tokens: torch.Tensor  # [R, L] bool, False on padding

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens in the packed rows."""
        return int(self.real_tokens.sum())


def pack_rows(prompts: list[list[int]], responses: list[list[list[int]]], pad_id: int) -> PackedRows:
    """Pack each ``prompts[r]`` with its ``responses[r]`` (one or more token lists) into one row."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} response lists")
    lengths = [len(p) + sum(len(x) for x in rs) for p, rs in zip(prompts, responses)]
    rows, longest = len(prompts), max(lengths)
    slots = max(len(rs) for rs in responses)
    input_ids = torch.full((rows, longest), pad_id, dtype=torch.long)
    position_ids = torch.full((rows, longest), -1, dtype=torch.long)
    segment = torch.full((rows, longest), -2, dtype=torch.long)  # -1 prompt, k response k, -2 padding
    last_index = torch.full((rows, slots), -1, dtype=torch.long)
    for r, (prompt, row_responses) in enumerate(zip(prompts, responses)):
        if not row_responses or any(len(x) == 0 for x in row_responses):
            raise ValueError(f"row {r}: every packed row needs non-empty responses")
        p = len(prompt)
        input_ids[r, :p] = torch.tensor(prompt, dtype=torch.long)
        position_ids[r, :p] = torch.arange(p)
        segment[r, :p] = -1
        start = p
        for k, response in enumerate(row_responses):
            end = start + len(response)
            input_ids[r, start:end] = torch.tensor(response, dtype=torch.long)
            position_ids[r, start:end] = torch.arange(p, p + len(response))
            segment[r, start:end] = k
            last_index[r, k] = end - 1
            start = end
    positions = torch.arange(longest)
    causal = positions.unsqueeze(0) <= positions.unsqueeze(1)  # [L(query), L(key)]
    q_seg, k_seg = segment.unsqueeze(2), segment.unsqueeze(1)  # [R, L, 1], [R, 1, L]
    same_or_prompt = (k_seg == -1) | (q_seg == k_seg)
    mask = causal.unsqueeze(0) & same_or_prompt & (q_seg != -2) & (k_seg != -2)
    # padding queries attend to themselves only, so no softmax row is empty (which gives NaN)
    pad_rows = segment == -2
    eye = torch.eye(longest, dtype=torch.bool).unsqueeze(0)
    mask = mask | (eye & pad_rows.unsqueeze(2))
    return PackedRows(input_ids, mask.unsqueeze(1), position_ids.clamp(min=0), last_index, ~pad_rows)


def packed_hidden_states(base_model: torch.nn.Module, packed: PackedRows) -> torch.Tensor:
    """``[R, L, d]`` last hidden states of a causal backbone run over packed rows."""
    attention_mask: torch.Tensor = packed.attention_mask
    implementation = getattr(base_model.config, "_attn_implementation", "sdpa")
    if implementation != "sdpa":  # eager attention adds the mask: 0 to keep, a large negative to drop
        dtype = next(base_model.parameters()).dtype
        attention_mask = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device).masked_fill(
            ~packed.attention_mask, torch.finfo(dtype).min)
    return base_model(input_ids=packed.input_ids, attention_mask=attention_mask,
                      position_ids=packed.position_ids).last_hidden_state


def gather_segments(hidden: torch.Tensor, packed: PackedRows) -> torch.Tensor:
    """``[R, L, d] -> [R, S, d]``: each response segment's last-token hidden state (zeros where absent)."""
    index = packed.last_index.clamp(min=0)
    rows = torch.arange(hidden.shape[0], device=index.device).unsqueeze(1).expand_as(index)
    gathered = hidden[rows, index]
    return gathered * (packed.last_index >= 0).unsqueeze(-1).to(gathered.dtype)
