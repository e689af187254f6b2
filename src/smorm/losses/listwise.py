"""Listwise loss over ranked lists: ``plackett_luce``.

The pure function reads the responses of the batch's lists flattened into ``[N]`` rewards with a
list id and a rank each. The trainer builds them from a pair batch (``LossDef.needs`` has
``lists``): a list read with ``ranking: {into: list}`` arrives as linked pairs and is joined back
into one list; any other pair is a list of two (chosen rank 0, rejected rank 1), on which the
loss is exactly Bradley-Terry.
"""

from __future__ import annotations

import torch
from torch import Tensor

from smorm.losses.base import LossInputs, LossResult, as_float, register_loss, require


def plackett_luce_loss(rewards: Tensor, list_ids: Tensor, ranks: Tensor) -> Tensor:
    """Negative log Plackett-Luce likelihood of each list's ranking, mean over lists.

    For a list ranked ``π_1 > π_2 > … > π_n`` (Plackett 1975; Luce 1959; as a learning-to-rank loss,
    ListMLE, Xia et al. 2008)::

        -log P(π | r) = -Σ_k [ r_{π_k} - log Σ_{j ≥ k} exp(r_{π_j}) ]

    Ties (equal rank) follow Breslow (1974, the tied-times partial likelihood of survival analysis): every response of a tied group is chosen against the
    same set, all responses of its rank or worse, so the order written inside a tie does not
    matter, and a list without ties gets the exact PL likelihood. A tied group of ``g`` responses at
    the bottom of a list still adds ``-Σ_i [r_i - log Σ_{j ∈ group} exp(r_j)]``, at least
    ``g log g``: the loss of a list with ties does not go to 0. On a list of two it is
    ``-log σ(r_1 - r_2)``, the BT loss.

    Args:
        rewards: ``[N]`` reward of every response of the batch's lists.
        list_ids: ``[N]`` long, the list each response belongs to (any integers; equal = same list).
        ranks: ``[N]`` long, 0 for a list's best response, larger is worse; tied responses share a rank.

    Returns:
        Scalar loss: the summed negative log-likelihood of each list, averaged over lists.
    """
    same_list = list_ids.unsqueeze(1) == list_ids.unsqueeze(0)  # [N, N]
    not_better = ranks.unsqueeze(0) >= ranks.unsqueeze(1)  # [i, j]: j is still unplaced when i is chosen
    candidates = rewards.unsqueeze(0).expand(rewards.numel(), -1).masked_fill(~(same_list & not_better), float("-inf"))
    log_likelihood = rewards - torch.logsumexp(candidates, dim=1)  # [N], each <= 0
    return -log_likelihood.sum() / torch.unique(list_ids).numel()


def list_metrics(rewards: Tensor, list_ids: Tensor, ranks: Tensor) -> dict[str, float]:
    """``accuracy``: share of (better, worse) response pairs of one list that the rewards order right (a
    tie in reward counts wrong); ``lists`` and ``mean_list_size`` of the batch."""
    with torch.no_grad():
        ordered = (list_ids.unsqueeze(1) == list_ids.unsqueeze(0)) & (ranks.unsqueeze(1) < ranks.unsqueeze(0))
        right = ordered & (rewards.unsqueeze(1) > rewards.unsqueeze(0))
        lists = torch.unique(list_ids).numel()
        return {"accuracy": float(right.sum() / ordered.sum().clamp(min=1)), "lists": float(lists),
                "mean_list_size": rewards.numel() / lists}


def _check(inputs: LossInputs) -> tuple[Tensor, Tensor, Tensor]:
    rewards = as_float(require(inputs, "list_rewards", "plackett_luce"))
    list_ids = require(inputs, "list_ids", "plackett_luce")
    ranks = require(inputs, "list_ranks", "plackett_luce")
    if rewards.dim() != 1 or rewards.numel() == 0 or list_ids.shape != rewards.shape or ranks.shape != rewards.shape:
        raise ValueError(
            "loss 'plackett_luce': LossInputs.list_rewards, list_ids and list_ranks must be non-empty [N] tensors of "
            f"one shape, got {list(rewards.shape)}, {list(list_ids.shape)}, {list(ranks.shape)}"
        )
    return rewards, list_ids, ranks


def _plackett_luce(inputs: LossInputs) -> LossResult:
    rewards, list_ids, ranks = _check(inputs)
    return LossResult(plackett_luce_loss(rewards, list_ids, ranks), list_metrics(rewards, list_ids, ranks))


register_loss(
    "plackett_luce",
    _plackett_luce,
    {"pairs", "lists"},
    "listwise -log Plackett-Luce likelihood of each ranked list, ties by Breslow (ListMLE); a plain pair is BT",
    {},
)
