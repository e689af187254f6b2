"""Scoring token sequences with a :class:`~smorm.models.reward_model.RewardModel`.

Unpacked scoring runs length-sorted, right-padded batches through ``RewardModel.forward``; the gate's
prompt feature (004 Sec. 3.2) is the state at the prompt's last token of the same pass for a causal
backbone, and a prompt-only pass for an encoder.

Shared-prompt packing (issue 8): on benchmarks such as RM-Bench one prompt comes with several
responses, and on pairwise data with two. For a causal backbone, the responses whose token ids share
an identical prompt prefix are packed as ``prompt ⊕ response_1 ⊕ response_2 …`` rows
(:func:`smorm.models.packing.pack_rows`: a 4D mask in which no response sees another, positions that
continue from the prompt), so the prompt is encoded once. Every response's last-token state is then
that of its own ``prompt ⊕ response`` sequence up to float rounding, and the gate's prompt feature
(004 Sec. 3.2, the prompt's last token) is read from the same row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch

from smorm.models.devices import autocast, module_device, move_to
from smorm.models.gate_spec import GATE_HEAD
from smorm.models.pooling import pool_last_token
from smorm.types import RewardOutput

if TYPE_CHECKING:  # annotations only: reward_model imports this module to score
    from smorm.models.reward_model import RewardModel

PACKABLE_ATTENTION = ("sdpa", "eager")


@torch.no_grad()
def score_token_ids(model: RewardModel, sequences: Sequence[list[int]], batch_size: int = 16,
                    autocast_bf16: bool = False, response_starts: Sequence[int] | None = None,
                    with_prompt_features: bool = False, pack: bool = False) -> RewardOutput:
    """Score token sequences; rows come back in input order (``RewardModel.score_token_ids`` calls this).

    Args:
        model: the reward model (put in eval mode while scoring, then restored).
        sequences: token ids of prompt + response, as :class:`~smorm.data.formatting.Formatter` gives.
        batch_size: sequences per padded batch; packed batches stay within the same memory.
        autocast_bf16: run the backbone under bf16 autocast (heads stay in their own dtype).
        response_starts: ``EncodedSequence.response_start`` of each sequence; required with a gate
            (it reads the prompt's last token, ``response_start - 1``), with prompt features, and with ``pack``.
        with_prompt_features: also return the prompt features ``[N, d]`` in ``extra["prompt_pooled"]``.
        pack: score sequences with identical prompt tokens in packed rows (causal backbones; others,
            and sequences whose prompt is unique, are scored unpacked).
    """
    need_prompt = with_prompt_features or GATE_HEAD in model.heads
    if need_prompt and response_starts is None:
        raise ValueError(
            "this model has a gate (mode G): pass response_starts (EncodedSequence.response_start of "
            "each sequence) so the gate can read the prompt's last token"
            if GATE_HEAD in model.heads else "with_prompt_features needs response_starts"
        )
    if pack and response_starts is None:
        raise ValueError("pack=True needs response_starts (EncodedSequence.response_start of each sequence)")
    if response_starts is not None and len(response_starts) != len(sequences):
        raise ValueError(f"{len(sequences)} sequences but {len(response_starts)} response_starts")
    was_training = model.training
    model.eval()
    try:
        groups: list[list[int]] = []
        single = list(range(len(sequences)))
        if pack and can_pack(model):
            assert response_starts is not None
            groups, single = shared_prompt_groups(sequences, response_starts)
        if not groups:
            return score_padded(model, sequences, batch_size, autocast_bf16, response_starts, need_prompt)
        assert response_starts is not None
        packed = score_packed(model, sequences, response_starts, groups, batch_size, autocast_bf16, need_prompt)
        padded = score_padded(model, [sequences[i] for i in single], batch_size, autocast_bf16,
                              [response_starts[i] for i in single], need_prompt)
        return in_input_order([packed, (single, padded)])
    finally:
        model.train(was_training)


def padded_batches(sequences: Sequence[list[int]], batch_size: int, pad_id: int,
                   forward: Callable[[Any, list[int]], RewardOutput]) -> RewardOutput | None:
    """The one padded scoring loop: length-sorted, right-padded batches; float32 outputs in input order.

    ``forward(batch, rows)`` scores one :class:`~smorm.data.collate.Batch` (on the host; the caller
    moves it) whose rows are the input indices ``rows``. Sorting all sequences once keeps padding
    minimal. Every scorer's padded path (a :class:`RewardModel`, a Hugging Face classifier) runs
    through here; None when there is nothing to score.
    """
    from smorm.data.collate import collate_sequences

    def score_rows(rows: list[int]) -> RewardOutput:
        return forward(collate_sequences([sequences[i] for i in rows], pad_id, padding_side="right"), rows)

    return length_sorted_batches([len(s) for s in sequences], batch_size, score_rows)


def length_sorted_batches(lengths: Sequence[int], batch_size: int,
                          score_rows: Callable[[list[int]], RewardOutput]) -> RewardOutput | None:
    """Rows longest first in batches of ``batch_size``; ``score_rows(rows)`` scores the input rows ``rows``
    (building its own padded batch), and the float32 host outputs come back in input order.

    The loop under :func:`padded_batches` and under scoring from cached lower-layer states
    (:class:`~smorm.models.cached_scoring.CachedTrunkScorer`); None when there is nothing to score.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    parts = [as_host_float(score_rows(order[start : start + batch_size])) for start in range(0, len(order), batch_size)]
    return in_input_order([(order, concat_outputs(parts))]) if parts else None


def score_padded(model: RewardModel, sequences: Sequence[list[int]], batch_size: int, autocast_bf16: bool,
                 response_starts: Sequence[int] | None, need_prompt: bool) -> RewardOutput:
    """:func:`padded_batches` through ``RewardModel.forward`` (with the gate's prompt inputs when needed)."""
    device = module_device(model)

    def forward(batch: Any, rows: list[int]) -> RewardOutput:
        prompt: dict[str, torch.Tensor] = {}
        if need_prompt:
            assert response_starts is not None
            prompt = prompt_inputs(model, [sequences[i] for i in rows], [response_starts[i] for i in rows])
        with autocast(device, autocast_bf16):
            return model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                         **move_to(prompt, device))

    output = padded_batches(sequences, batch_size, model.tokenizer.pad_token_id, forward)
    if output is None:  # nothing to score: an empty output (its pooled features have no rows either)
        return RewardOutput(single=None, attributes=None, pooled=torch.empty(0, model.hidden_size))
    return output


def prompt_inputs(model: RewardModel, sequences: list[list[int]], response_starts: list[int]
                  ) -> dict[str, torch.Tensor]:
    """What ``RewardModel.forward`` needs to find the prompt feature of each row.

    Causal backbone: the index of the prompt's last token in the same sequence (its state has seen
    only the prompt, so the feature is free, 004 Sec. 3.2). Encoder: a second, prompt-only pass
    (``[prefix] prompt [suffix]``) pooled at its last token, because there every state sees the response.
    A prompt cut away entirely by truncation falls back to the first token.
    """
    if model.config.is_decoder:
        return {"prompt_last_index": torch.tensor([max(s - 1, 0) for s in response_starts], dtype=torch.long)}
    from smorm.data.collate import collate_sequences
    from smorm.data.formatting import added_special_tokens

    _, suffix = added_special_tokens(model.tokenizer)
    prompts = [ids[: max(s, 1)] + suffix for ids, s in zip(sequences, response_starts)]
    batch = collate_sequences(prompts, model.tokenizer.pad_token_id, padding_side="right")
    hidden = model.encode(batch.input_ids, batch.attention_mask)
    return {"prompt_pooled": pool_last_token(hidden, batch.attention_mask)}


# ---------------------------------------------------------------- shared-prompt packing


@dataclass
class PackedRow:
    """One packed row: a prompt and the input indices of the responses that follow it, in row order."""

    prompt: list[int]
    members: list[int]


def can_pack(model: RewardModel) -> bool:
    """True when the backbone is causal, takes position ids and runs an attention that accepts a 4D mask."""
    base = model.base_model
    implementation = getattr(base.config, "_attn_implementation", None) or "eager"
    return bool(model.config.is_decoder and model._accepts_position_ids and implementation in PACKABLE_ATTENTION)


def shared_prompt_groups(sequences: Sequence[list[int]], response_starts: Sequence[int]
                         ) -> tuple[list[list[int]], list[int]]:
    """Split input indices into groups that share identical prompt tokens and the rest.

    Returns:
        ``(groups, single)``: each group lists (in input order) two or more indices whose
        ``sequence[:response_start]`` is the same non-empty token list; ``single`` holds every other
        index (a unique prompt, no prompt left after truncation, or no response tokens).
    """
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    single: list[int] = []
    for index, (sequence, start) in enumerate(zip(sequences, response_starts, strict=True)):
        if 0 < start < len(sequence):
            by_prompt.setdefault(tuple(sequence[:start]), []).append(index)
        else:
            single.append(index)
    groups = [members for members in by_prompt.values() if len(members) > 1]
    single.extend(members[0] for members in by_prompt.values() if len(members) == 1)
    return groups, sorted(single)


def plan_rows(groups: list[list[int]], sequences: Sequence[list[int]], response_starts: Sequence[int],
              max_row_tokens: int) -> list[PackedRow]:
    """Rows of ``prompt ⊕ responses`` no longer than ``max_row_tokens`` (a group too long for one row
    is spread over several, each with the prompt); a row always holds at least one response."""
    rows: list[PackedRow] = []
    for members in groups:
        start = response_starts[members[0]]
        prompt = list(sequences[members[0]][:start])
        row: list[int] = []
        length = len(prompt)
        for index in members:
            response_length = len(sequences[index]) - start
            if row and length + response_length > max_row_tokens:
                rows.append(PackedRow(prompt, row))
                row, length = [], len(prompt)
            row.append(index)
            length += response_length
        rows.append(PackedRow(prompt, row))
    return rows


def row_batches(rows: list[PackedRow], lengths: list[int], token_budget: int, score_budget: int
                ) -> list[list[int]]:
    """Longest-first batches of row indices whose padded size stays within both budgets.

    A batch of ``R`` rows padded to ``L`` holds ``R * L`` token slots and ``R * L**2`` attention
    scores per head; both stay at most what a padded batch of ``batch_size`` sequences of the longest
    length would use (``token_budget``, ``score_budget``), so packing never needs more memory.
    """
    order = sorted(range(len(rows)), key=lambda r: -lengths[r])
    batches: list[list[int]] = []
    for r in order:
        if batches:
            width = lengths[batches[-1][0]]  # longest first: the batch's first row sets its width
            count = len(batches[-1]) + 1
            if count * width <= token_budget and count * width * width <= score_budget:
                batches[-1].append(r)
                continue
        batches.append([r])
    return batches


def score_packed(model: RewardModel, sequences: Sequence[list[int]], response_starts: Sequence[int],
                 groups: list[list[int]], batch_size: int, autocast_bf16: bool, need_prompt: bool
                 ) -> tuple[list[int], RewardOutput]:
    """Score the sequences of shared-prompt ``groups`` in packed rows.

    Returns:
        ``(indices, output)``: the input indices scored, and their outputs in that order (float32).
    """
    from smorm.models.packing import pack_rows, packed_hidden_states

    longest = max(len(sequences[i]) for members in groups for i in members)
    token_budget = batch_size * longest
    score_budget = batch_size * longest * longest
    max_row_tokens = max(longest, math.isqrt(score_budget))  # a lone row of L tokens has L**2 scores
    rows = plan_rows(groups, sequences, response_starts, max_row_tokens)
    device = module_device(model)
    lengths = [len(row.prompt) + sum(len(sequences[i]) - len(row.prompt) for i in row.members) for row in rows]
    indices: list[int] = []
    parts: list[RewardOutput] = []
    for batch in row_batches(rows, lengths, token_budget, score_budget):
        chosen_rows = [rows[r] for r in batch]
        packed = pack_rows([row.prompt for row in chosen_rows],
                           [[sequences[i][len(row.prompt):] for i in row.members] for row in chosen_rows],
                           model.tokenizer.pad_token_id)
        slot_rows = torch.tensor([r for r, row in enumerate(chosen_rows) for _ in row.members], dtype=torch.long)
        slot_segments = torch.tensor([k for row in chosen_rows for k in range(len(row.members))], dtype=torch.long)
        prompt_last = torch.tensor([len(row.prompt) - 1 for row in chosen_rows], dtype=torch.long)[slot_rows]
        packed, slot_rows, slot_segments, prompt_last = move_to((packed, slot_rows, slot_segments, prompt_last), device)
        with autocast(device, autocast_bf16):
            hidden = packed_hidden_states(model.base_model, packed)  # [R, L, d]
            pooled = hidden[slot_rows, packed.last_index[slot_rows, slot_segments]]  # [n, d]
            prompt_pooled = hidden[slot_rows, prompt_last] if need_prompt else None
            out = model.heads_forward(pooled, prompt_pooled)
        parts.append(as_host_float(out))
        indices.extend(i for row in chosen_rows for i in row.members)
    return indices, concat_outputs(parts)


def as_host_float(output: RewardOutput) -> RewardOutput:
    """Every tensor of ``output`` in float32 on the host: bf16 scoring returns float32 results, and a
    large pool's outputs gather in host memory, not on the accelerator, batch after batch."""

    def host(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().float().cpu()

    return RewardOutput(
        single=None if output.single is None else host(output.single),
        attributes=None if output.attributes is None else host(output.attributes),
        pooled=host(output.pooled),
        gate_weights=None if output.gate_weights is None else host(output.gate_weights),
        extra={k: host(v) for k, v in output.extra.items()},
    )


def concat_outputs(parts: list[RewardOutput]) -> RewardOutput:
    """Concatenate :class:`RewardOutput` parts row-wise, field by field (tensors and dicts of tensors)."""
    merged: dict[str, object] = {}
    for spec in fields(RewardOutput):
        values = [getattr(part, spec.name) for part in parts]
        if isinstance(values[0], dict):
            merged[spec.name] = {key: torch.cat([v[key] for v in values]) for key in values[0]}
        else:
            merged[spec.name] = None if values[0] is None else torch.cat(values)
    return RewardOutput(**merged)  # type: ignore[arg-type]


def select_rows(output: RewardOutput, index: torch.Tensor) -> RewardOutput:
    """The rows ``index`` of every tensor in a :class:`RewardOutput`."""
    picked: dict[str, object] = {}
    for spec in fields(RewardOutput):
        value = getattr(output, spec.name)
        if isinstance(value, dict):
            picked[spec.name] = {key: tensor[index] for key, tensor in value.items()}
        else:
            picked[spec.name] = None if value is None else value[index]
    return RewardOutput(**picked)  # type: ignore[arg-type]


def in_input_order(parts: list[tuple[list[int], RewardOutput]]) -> RewardOutput:
    """Merge outputs scored for disjoint index lists back into input order (``0 .. N-1``)."""
    parts = [(indices, output) for indices, output in parts if indices]
    order = torch.tensor([i for indices, _ in parts for i in indices], dtype=torch.long)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    return select_rows(concat_outputs([output for _, output in parts]), inverse)
