"""ODIN (Chen et al. 2024, "ODIN: Disentangled reward mitigates hacking in RLHF"; cited by 000 Sec. 3 / 5.1).

Two heads share the pooled feature: a quality head ``r_Q`` and a length head ``r_L``. They are
trained together so that the length head soaks up the reward's dependence on response length:

* ranking:        BT on the total reward ``r_Q + r_L``;
* length terms:   ``(1 - ρ(r_L, ℓ)) + |ρ(r_Q, ℓ)|``, with ``ρ`` the Pearson correlation over the
  2B responses of the batch and ``ℓ`` the response length in tokens;
* orthogonality:  ``|w_Q · w_L|`` on the two heads' weight vectors (normalised to unit length,
  as the ODIN code does, so the term is a |cosine| in [0, 1]).

``loss = ranking + length_weight · length terms + ortho_weight · orthogonality``. The ODIN
release sets both weights to 1.0 (its reward-model training script: ``LENGTH_CORR=1.0``,
``RM_ORTHO_REG=1.0``). At scoring time ODIN discards the length head: the reward is ``r_Q``
alone (the model reports the quality head as its single reward).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smorm.losses.base import (
    LossInputs,
    LossResult,
    as_float,
    check_vector,
    pair_rewards,
    pairwise_metrics,
    register_loss,
    require,
)
from smorm.losses.pairwise import bt_loss


def pearson_correlation(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of two ``[N]`` vectors, differentiable, finite when one is constant.

    ``eps`` inside the square root keeps a constant vector (ρ = 0) from dividing 0 by 0, in the
    value and in the gradient.

    Args:
        x: ``[N]``.
        y: ``[N]``.
        eps: added to the product of the two sums of squares.
    """
    x_centered = x - x.mean()
    y_centered = y - y.mean()
    covariance = (x_centered * y_centered).sum()
    return covariance / torch.sqrt(x_centered.square().sum() * y_centered.square().sum() + eps)


def length_correlation_terms(
    quality_rewards: Tensor, length_rewards: Tensor, lengths: Tensor, eps: float = 1e-8
) -> tuple[Tensor, Tensor, Tensor]:
    """ODIN's length terms over all responses of a batch.

    Args:
        quality_rewards: ``[N]`` quality-head output (N = 2B: chosen then rejected).
        length_rewards: ``[N]`` length-head output.
        lengths: ``[N]`` response lengths in tokens.
        eps: see `pearson_correlation`.

    Returns:
        ``(loss, rho_quality, rho_length)`` with ``loss = (1 - rho_length) + |rho_quality|``.
    """
    lengths = lengths.to(quality_rewards.dtype)
    rho_quality = pearson_correlation(quality_rewards, lengths, eps)
    rho_length = pearson_correlation(length_rewards, lengths, eps)
    return (1.0 - rho_length) + rho_quality.abs(), rho_quality, rho_length


def orthogonality_penalty(quality_weight: Tensor, length_weight: Tensor, normalize: bool = True) -> Tensor:
    """``|w_Q · w_L|``, on unit-normalised weights when ``normalize`` (ODIN code; then a |cosine|).

    Args:
        quality_weight: ``[d]`` or ``[1, d]``.
        length_weight: ``[d]`` or ``[1, d]``.
        normalize: divide each weight by its norm (floored at 1e-8, as the ODIN code does).
    """
    w_q, w_l = quality_weight.reshape(-1), length_weight.reshape(-1)
    if w_q.numel() != w_l.numel():
        raise ValueError(f"head weights differ in size: {w_q.numel()} vs {w_l.numel()}")
    if normalize:
        w_q = w_q / w_q.norm().clamp_min(1e-8)
        w_l = w_l / w_l.norm().clamp_min(1e-8)
    return (w_q * w_l).sum().abs()


def odin_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    chosen_length_rewards: Tensor,
    rejected_length_rewards: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    quality_head_weight: Tensor | None = None,
    length_head_weight: Tensor | None = None,
    length_weight: float = 1.0,
    ortho_weight: float = 1.0,
    normalize_weights: bool = True,
) -> Tensor:
    """The full ODIN loss (see the module docstring).

    Args:
        chosen_rewards: ``[B]`` quality-head output, chosen responses.
        rejected_rewards: ``[B]`` quality-head output, rejected responses.
        chosen_length_rewards: ``[B]`` length-head output, chosen.
        rejected_length_rewards: ``[B]`` length-head output, rejected.
        chosen_lengths: ``[B]`` chosen response lengths (tokens).
        rejected_lengths: ``[B]`` rejected response lengths.
        quality_head_weight: ``[d]``; needed when ``ortho_weight > 0``.
        length_head_weight: ``[d]``; needed when ``ortho_weight > 0``.
        length_weight: weight of the length-correlation terms.
        ortho_weight: weight of the orthogonality term.
        normalize_weights: unit-normalise the head weights in the orthogonality term.
    """
    ranking = bt_loss(chosen_rewards + chosen_length_rewards, rejected_rewards + rejected_length_rewards)
    length_terms, _, _ = length_correlation_terms(
        torch.cat([chosen_rewards, rejected_rewards]),
        torch.cat([chosen_length_rewards, rejected_length_rewards]),
        torch.cat([chosen_lengths, rejected_lengths]),
    )
    total = ranking + length_weight * length_terms
    if ortho_weight != 0.0:
        if quality_head_weight is None or length_head_weight is None:
            raise ValueError("ortho_weight != 0 needs quality_head_weight and length_head_weight")
        total = total + ortho_weight * orthogonality_penalty(
            quality_head_weight, length_head_weight, normalize_weights
        )
    return total


def _odin(
    inputs: LossInputs, length_weight: float = 1.0, ortho_weight: float = 1.0, normalize_weights: bool = True
) -> LossResult:
    name = "odin"
    quality_c, quality_r = pair_rewards(inputs, name)
    size = quality_c.numel()

    def vector(field_name: str) -> Tensor:
        return as_float(check_vector(require(inputs, field_name, name), field_name, name, size))

    length_c, length_r = vector("chosen_length_rewards"), vector("rejected_length_rewards")
    lengths = torch.cat([vector("chosen_lengths"), vector("rejected_lengths")])
    ranking = bt_loss(quality_c + length_c, quality_r + length_r)
    length_terms, rho_quality, rho_length = length_correlation_terms(
        torch.cat([quality_c, quality_r]), torch.cat([length_c, length_r]), lengths
    )
    total = ranking + length_weight * length_terms
    metrics = pairwise_metrics(quality_c + length_c, quality_r + length_r)
    if ortho_weight != 0.0:
        w_q = require(inputs, "quality_head_weight", name)
        w_l = require(inputs, "length_head_weight", name)
        if w_q.reshape(-1).numel() != w_l.reshape(-1).numel():
            raise ValueError(
                f"loss 'odin': LossInputs.quality_head_weight has {w_q.numel()} entries and "
                f"length_head_weight {w_l.numel()}; they must be the same [d]"
            )
        ortho = orthogonality_penalty(as_float(w_q), as_float(w_l), normalize_weights)
        total = total + ortho_weight * ortho
        metrics["orthogonality"] = float(ortho.detach())
    with torch.no_grad():
        metrics.update(
            {
                "quality_accuracy": float((quality_c > quality_r).float().mean()),
                "bt_loss": float(ranking),
                "rho_quality_length": float(rho_quality),
                "rho_length_head_length": float(rho_length),
            }
        )
    return LossResult(total, metrics)


register_loss(
    "odin",
    _odin,
    {"pairs", "length_head"},
    "ODIN: BT on quality+length heads, length head correlated / quality head decorrelated with length, "
    "orthogonal head weights; score with the quality head (000 Sec. 3)",
    {"length_weight": 1.0, "ortho_weight": 1.0, "normalize_weights": True},
)
