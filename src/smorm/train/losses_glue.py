"""From one forward pass to the configured weighted sum of losses.

Rows of the step's output are ``[chosen (B), rejected (B), rated (M)]``. Each configured loss
reads the head it names (default: ``single`` for pair losses, ``multi`` for rating losses).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from smorm.train.batches import StepIndices
from smorm.train.config import RunConfig
from smorm.train.prepare import TokenizedData
from smorm.types import ListLink, RewardOutput


def head_rewards(output: RewardOutput, head: str) -> torch.Tensor:
    """``[N]`` reward read from a head: single -> its output; multi -> mean of attributes; else extra."""
    if head == "single":
        if output.single is None:
            raise ValueError("loss reads head 'single' but the model has none")
        return output.single
    if head == "multi":
        if output.attributes is None:
            raise ValueError("loss reads head 'multi' but the model has none")
        return output.attributes.mean(dim=-1)
    if head not in output.extra:
        raise ValueError(f"loss reads head {head!r} but the model has no such head")
    return output.extra[head]


LM_CHUNK_TOKENS = 512  # response tokens per LM-head chunk: [512, V] float logits, ~100 MB at V = 49k


def response_logps(model: Any, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   prompt_lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of the response tokens under the kept LM head (GRM).

    Only the hidden states that predict a response token go through the LM head: the
    vocabulary-wide logits of prompt and padding positions (``[N, T, V]`` floats, gigabytes at
    T = 512) are never built. The response tokens go through in chunks under activation
    checkpointing, so at most one chunk's ``[chunk, V]`` logits are alive, in forward and backward.

    Args:
        model: the RewardModel; its backbone must keep the LM head.
        hidden: ``[N, T, d]`` last hidden states.
        input_ids: ``[N, T]`` right-padded token ids.
        attention_mask: ``[N, T]``.
        prompt_lengths: ``N`` index of each row's first response token.

    Returns:
        ``([N] summed log-prob, [N] number of response tokens)``.
    """
    lm_head = model.backbone.get_output_embeddings()
    if lm_head is None:
        raise ValueError("GRM losses need the LM head: set model.with_lm_head: true")
    positions = torch.arange(1, input_ids.shape[1], device=input_ids.device)  # [T-1] predicted positions
    starts = torch.tensor(prompt_lengths, device=input_ids.device).unsqueeze(1)
    mask = (positions.unsqueeze(0) >= starts) & attention_mask[:, 1:].bool()  # [N, T-1]
    rows, cols = mask.nonzero(as_tuple=True)  # hidden state at t predicts token t+1
    states, targets = hidden[rows, cols], input_ids[rows, cols + 1]  # [M, d], [M]: M response tokens
    parts = []
    for start in range(0, len(targets), LM_CHUNK_TOKENS):
        chunk = (lm_head, states[start : start + LM_CHUNK_TOKENS], targets[start : start + LM_CHUNK_TOKENS])
        if torch.is_grad_enabled():
            parts.append(torch.utils.checkpoint.checkpoint(_token_logps, *chunk, use_reentrant=False))
        else:
            parts.append(_token_logps(*chunk))
    token_logps = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    sums = token_logps.new_zeros(input_ids.shape[0]).index_add(0, rows, token_logps)
    return sums, mask.sum(-1)


def _token_logps(lm_head: torch.nn.Module, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[m, d], [m] -> [m]`` log-probability of each target token under the LM head."""
    return -F.cross_entropy(lm_head(states).float(), targets, reduction="none")


def list_items(links: list[ListLink | None]) -> tuple[list[int], list[int], list[int]]:
    """The distinct responses of a pair batch's ranked lists, as rows of its ``[chosen (B), rejected (B)]`` rewards.

    The links of one list (same ``list_id``) name each of its responses at least once; a response
    is read from its first row. A pair that is no list's link is a list of two of its own.

    Args:
        links: ``B`` entries, the batch's pairs in row order.

    Returns:
        ``(rows, list numbers, ranks)``, one entry per response: row in ``[0, 2B)``, list number from 0
        in order of appearance, rank (0 best).
    """
    b = len(links)
    rows: list[int] = []
    numbers: list[int] = []
    ranks: list[int] = []
    lists: dict[str, int] = {}  # list id -> number
    seen: set[tuple[int, int]] = set()
    count = 0
    for row, link in enumerate(links):
        if link is None:
            rows += [row, b + row]
            numbers += [count, count]
            ranks += [0, 1]
            count += 1
            continue
        if link.list_id not in lists:
            lists[link.list_id] = count
            count += 1
        number = lists[link.list_id]
        for item, rank, where in ((link.chosen_item, link.chosen_rank, row),
                                  (link.rejected_item, link.rejected_rank, b + row)):
            if (number, item) not in seen:
                seen.add((number, item))
                rows.append(where)
                numbers.append(number)
                ranks.append(rank)
    return rows, numbers, ranks


def compute_losses(config: RunConfig, model: Any, output: RewardOutput, data: TokenizedData,
                   indices: StepIndices, inputs: dict[str, torch.Tensor], world_size: int = 1
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the configured losses on this process's shard of the step's batch.

    Each loss is a mean over its shard; it is rescaled by ``shard size x world size / global
    batch size`` so that DDP's average over processes equals the mean over the global batch even
    when the last batch of an epoch splits unevenly (the factor is 1 on one process).
    """
    from smorm.losses import LossInputs, get_loss

    pair_idx, rating_idx = indices.pairs, indices.ratings
    n_pairs, n_rated = len(pair_idx), len(rating_idx)
    pair_share = n_pairs * world_size / indices.global_pairs if indices.global_pairs else 0.0
    rating_share = n_rated * world_size / indices.global_ratings if indices.global_ratings else 0.0
    b = n_pairs
    device = output.pooled.device
    # A zero-weighted term on every head keeps each head in the graph even when a step has no
    # loss for it (e.g. no D_M rows), which DDP needs to reduce gradients in lockstep.
    head_outputs = [output.single, output.attributes] + [v for k, v in output.extra.items() if k != "hidden"]
    total = sum((0.0 * t.float().sum() for t in head_outputs if t is not None), output.pooled.new_zeros(()))
    metrics: dict[str, float] = {}
    for spec in config.losses:
        definition = get_loss(spec.name)
        needs = definition.needs
        if "pairs" in needs and b == 0:
            continue
        if "ratings" in needs and n_rated == 0:
            continue
        kwargs: dict[str, Any] = {}
        if "pairs" in needs:
            head = spec.head or "single"
            rewards = head_rewards(output, head).float()
            kwargs.update(
                chosen_rewards=rewards[:b], rejected_rewards=rewards[b : 2 * b],
                margins=torch.tensor([data.margins[i] for i in pair_idx], dtype=torch.float32, device=device),
                source_ids=torch.tensor([data.pair_source_ids[i] for i in pair_idx], dtype=torch.long, device=device),
                sources=data.sources,
                head_parameters=[p for p in model.heads[head].parameters() if p.requires_grad]
                if head in model.heads else None,
            )
        if "lists" in needs:
            links = [data.pair_links[i] if data.pair_links else None for i in pair_idx]
            rows, numbers, ranks = list_items(links)
            kwargs.update(list_rewards=rewards[: 2 * b][torch.tensor(rows, dtype=torch.long, device=device)],
                          list_ids=torch.tensor(numbers, dtype=torch.long, device=device),
                          list_ranks=torch.tensor(ranks, dtype=torch.long, device=device))
        if "ratings" in needs:
            head = spec.head or "multi"
            if output.attributes is None:
                raise ValueError(f"loss {spec.name!r} needs the multi head")
            names = data.attributes
            targets = torch.zeros(n_rated, len(names), device=device)
            mask = torch.zeros(n_rated, len(names), dtype=torch.bool, device=device)
            for row, j in enumerate(rating_idx):
                for col, name in enumerate(names):
                    value = data.ratings[j].get(name)
                    if value is not None and not math.isnan(value):
                        targets[row, col] = value
                        mask[row, col] = True
            kwargs.update(predicted_ratings=output.attributes[2 * b :].float(), target_ratings=targets,
                          rating_mask=mask)
        if "length_head" in needs:
            lengths_c = [len(data.chosen[i]) - data.chosen_prompt_lengths[i] for i in pair_idx]
            lengths_r = [len(data.rejected[i]) - data.rejected_prompt_lengths[i] for i in pair_idx]
            length_rewards = head_rewards(output, "length").float()
            kwargs.update(
                chosen_lengths=torch.tensor(lengths_c, dtype=torch.float32, device=device),
                rejected_lengths=torch.tensor(lengths_r, dtype=torch.float32, device=device),
                chosen_length_rewards=length_rewards[:b], rejected_length_rewards=length_rewards[b : 2 * b],
                quality_head_weight=model.heads[spec.head or "single"].weight,
                length_head_weight=model.heads["length"].weight,
            )
        if "lm" in needs:
            if "input_ids" not in inputs or "hidden" not in output.extra:
                raise ValueError("GRM losses need token ids and the last hidden states (trunk full, lora or top_k; "
                                 "not frozen, which keeps only pooled features)")
            prompt_lengths = ([data.chosen_prompt_lengths[i] for i in pair_idx]
                              + [data.rejected_prompt_lengths[i] for i in pair_idx])
            logps, counts = response_logps(model, output.extra["hidden"][: 2 * b], inputs["input_ids"][: 2 * b],
                                           inputs["attention_mask"][: 2 * b], prompt_lengths)
            kwargs.update(chosen_logps=logps[:b], rejected_logps=logps[b:],
                          chosen_response_tokens=counts[:b].float())
        result = definition.fn(LossInputs(**kwargs), **spec.options)
        share = pair_share if "pairs" in needs else rating_share
        total = total + spec.weight * share * result.loss
        metrics[f"{spec.name}/loss"] = float(result.loss.detach())
        for key, value in result.metrics.items():
            metrics[f"{spec.name}/{key}"] = float(value)
    metrics["loss"] = float(total.detach())
    return total, metrics
