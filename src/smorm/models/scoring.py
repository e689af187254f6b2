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
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import torch

from smorm.models.devices import autocast, module_device, move_to
from smorm.models.gate_spec import GATE_HEAD
from smorm.models.packing import Unit, pack_units, slot_tensor
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
        units: list[Unit] = []
        if pack and can_pack(model) and sequences:
            assert response_starts is not None
            units, members, single = sequence_units(sequences, response_starts, batch_size)
        if not units:  # not packable, nothing to score, or no sequence with response tokens
            return score_padded(model, sequences, batch_size, autocast_bf16, response_starts, need_prompt)
        assert response_starts is not None
        longest = max(map(len, sequences))
        packed = score_packed(model, units, members, batch_size * longest, autocast_bf16, need_prompt, longest)
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


def sequence_units(sequences: Sequence[list[int]], response_starts: Sequence[int], batch_size: int
                   ) -> tuple[list[Unit], list[list[int]], list[int]]:
    """The packed units of scoring: the responses to one prompt share a unit (the prompt encoded once),
    every other sequence is a unit of its own, so padding-free rows take them all.

    A group too long for one unit is spread over several, each with the prompt: a unit holds at most
    ``max(longest sequence, sqrt(batch_size) * longest)`` tokens, the attention scores of a padded batch
    of ``batch_size`` sequences. A sequence without response tokens (``response_start >= len``) is left
    to the padded path, where the gate reads its last token as the prompt's.

    Returns:
        ``(units, members, single)``: each unit's input indices in response order, and the indices left over.
    """
    longest = max(map(len, sequences))
    max_unit = max(longest, math.isqrt(batch_size * longest * longest))
    groups, _ = shared_prompt_groups(sequences, response_starts)
    grouped = {i for members in groups for i in members}
    units: list[Unit] = []
    members: list[list[int]] = []
    for group in groups:
        start = response_starts[group[0]]
        prompt = list(sequences[group[0]][:start])
        unit: list[int] = []
        for index in group:
            if unit and len(prompt) + sum(len(sequences[i]) - start for i in [*unit, index]) > max_unit:
                units.append(Unit(prompt, [list(sequences[i][start:]) for i in unit]))
                members.append(unit)
                unit = []
            unit.append(index)
        units.append(Unit(prompt, [list(sequences[i][start:]) for i in unit]))
        members.append(unit)
    single: list[int] = []
    for index, (sequence, start) in enumerate(zip(sequences, response_starts, strict=True)):
        if index in grouped:
            continue
        if start >= len(sequence):
            single.append(index)
            continue
        units.append(Unit(list(sequence[:start]), [list(sequence[start:])]))
        members.append([index])
    return units, members, single


def unit_batches(lengths: Sequence[int], token_budget: int, longest: int | None = None) -> list[list[int]]:
    """Longest-first batches of unit indices holding at most ``token_budget`` tokens (a unit longer
    than the budget alone), each packed by :func:`smorm.models.packing.fill_rows` into rows as long as
    its longest unit; so a batch computes about the tokens of a padded batch of ``batch_size`` sequences,
    with almost none of them padding, and no row's attention is longer than its longest unit's.

    ``longest`` (the longest sequence, with ``token_budget = batch_size * longest``) also caps the
    attention scores at a padded batch's, ``batch_size * longest**2``: rows of width ``W`` (the batch's
    first unit) holding ``t`` tokens compute about ``t * W`` scores, so such a batch takes at most
    ``token_budget * longest / W`` tokens. Without it, a batch of shared-prompt units up to
    ``sqrt(batch_size) * longest`` long could hold ``sqrt(batch_size)`` times the scores.
    """
    batches: list[list[int]] = []
    tokens = cap = 0
    for u in sorted(range(len(lengths)), key=lambda u: -lengths[u]):
        if batches and tokens + lengths[u] <= cap:
            batches[-1].append(u)
            tokens += lengths[u]
        else:
            batches.append([u])
            tokens = lengths[u]
            cap = token_budget if longest is None else min(token_budget, token_budget * longest // max(1, tokens))
    return batches


def score_packed(model: RewardModel, units: list[Unit], members: list[list[int]], token_budget: int,
                 autocast_bf16: bool, need_prompt: bool, longest: int | None = None) -> tuple[list[int], RewardOutput]:
    """Score ``units`` in padding-free packed rows, ``token_budget`` real tokens per forward (and
    attention scores capped by ``longest``, see :func:`unit_batches`).

    Returns:
        ``(indices, output)``: the input indices scored, and their outputs in that order (float32).
    """
    device = module_device(model)
    indices: list[int] = []
    parts: list[RewardOutput] = []
    for batch in unit_batches([len(unit) for unit in units], token_budget, longest):
        packed, slots, _ = pack_units([units[u] for u in batch], model.tokenizer.pad_token_id)
        packed_slots = slot_tensor([slot for unit_slots in slots for slot in unit_slots])
        packed, packed_slots = move_to((packed, packed_slots), device)
        with autocast(device, autocast_bf16):
            out = model.packed_forward(packed, packed_slots, with_prompt=need_prompt)
        parts.append(as_host_float(out))
        indices.extend(i for u in batch for i in members[u])
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
