"""MORE: per-source BT losses weighted by a min-norm point of their reward-head gradients (003 Eq. 7-9, App. B).

For a batch mixing S preference sources, ``L_MORE = Σ_s λ_s L_s`` (003 Eq. 7) with ``L_s`` the
mean BT loss over the pairs of source s and ``λ`` on the simplex. ``λ`` is the point of the
convex hull of the per-source gradients with the smallest norm,
``λ = argmin_λ ||Σ_s λ_s ∇_{θ_rm} L_s||²`` (003 Eq. 9), taken on the reward-head parameters
only (003 App. B) and solved by Frank-Wolfe (Sener & Koltun 2018). ``λ`` is a constant in the
backward pass: it re-weights the loss, nothing flows through it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from smorm.losses.base import (
    LossInputs,
    LossResult,
    check_vector,
    pair_rewards,
    pairwise_metrics,
    register_loss,
    require,
)


def min_norm_weights(grads: Tensor, iters: int = 250, tol: float = 1e-5) -> Tensor:
    """The simplex weights ``λ`` of the min-norm point of the convex hull of the rows of ``grads``.

    S = 1 gives ``[1]``. S = 2 is solved exactly: ``λ_1 = clip(((g_2 - g_1)·g_2) / ||g_1 - g_2||², 0, 1)``
    (equal gradients give ``[0.5, 0.5]``). S >= 3 runs Frank-Wolfe on the Gram matrix, started
    from the best two-row solution as in Sener & Koltun (2018), with exact line search.

    Args:
        grads: ``[S, P]`` one flattened gradient per source.
        iters: maximum Frank-Wolfe iterations.
        tol: stop when the L1 change of ``λ`` falls below this.

    Returns:
        ``[S]`` non-negative weights summing to 1 (float64, on the input's device).
    """
    if grads.dim() != 2 or grads.shape[0] == 0:
        raise ValueError(f"grads must be [S, P] with S >= 1, got shape {list(grads.shape)}")
    num_sources = grads.shape[0]
    gram = grads.detach().double() @ grads.detach().double().T  # [S, S]
    weights = torch.zeros(num_sources, dtype=torch.float64, device=grads.device)
    if num_sources == 1:
        return weights + 1.0

    best_cost, best_pair, best_gamma = None, (0, 1), 0.5
    for i in range(num_sources):
        for j in range(i + 1, num_sources):
            gamma, cost = _segment_min(gram[i, i], gram[i, j], gram[j, j])
            if best_cost is None or cost < best_cost:
                best_cost, best_pair, best_gamma = cost, (i, j), gamma
    weights[best_pair[0]] = best_gamma
    weights[best_pair[1]] = 1.0 - best_gamma
    if num_sources == 2:
        return weights

    for _ in range(iters):
        # Linear minimisation oracle on the simplex: the vertex with the smallest <g_t, Σ λ g>.
        vertex = int(torch.argmin(gram @ weights))
        current_sq = weights @ gram @ weights
        cross = weights @ gram[:, vertex]
        gamma, _ = _segment_min(current_sq, cross, gram[vertex, vertex])
        new_weights = gamma * weights
        new_weights[vertex] += 1.0 - gamma
        change = float((new_weights - weights).abs().sum())
        weights = new_weights
        if change < tol:
            break
    return weights


def _segment_min(aa: Tensor | float, ab: Tensor | float, bb: Tensor | float) -> tuple[float, float]:
    """``argmin_{γ∈[0,1]} ||γ a + (1-γ) b||²`` from the inner products; returns ``(γ, min value)``."""
    aa, ab, bb = float(aa), float(ab), float(bb)
    denominator = aa - 2.0 * ab + bb  # ||a - b||²
    if denominator <= 1e-12 * (aa + bb) or denominator <= 0.0:
        return 0.5, bb  # a == b (to rounding): every point of the segment is the same vector
    gamma = min(max((bb - ab) / denominator, 0.0), 1.0)
    cost = gamma * gamma * aa + 2.0 * gamma * (1.0 - gamma) * ab + (1.0 - gamma) ** 2 * bb
    return gamma, cost


def per_source_bt_losses(
    chosen_rewards: Tensor, rejected_rewards: Tensor, source_ids: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean BT loss of each source present in the batch.

    Args:
        chosen_rewards: ``[B]``.
        rejected_rewards: ``[B]``.
        source_ids: ``[B]`` integer source of each pair.

    Returns:
        ``(losses [S'], present_ids [S'], counts [S'])`` for the S' sources present, in id order.
    """
    per_pair = -F.logsigmoid(chosen_rewards - rejected_rewards)
    present_ids, inverse, counts = torch.unique(
        source_ids, sorted=True, return_inverse=True, return_counts=True
    )
    sums = torch.zeros(len(present_ids), dtype=per_pair.dtype, device=per_pair.device).index_add(
        0, inverse, per_pair
    )
    return sums / counts.to(per_pair.dtype), present_ids, counts


def more_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    source_ids: Tensor,
    head_parameters: list[Tensor] | None,
    iters: int = 250,
) -> tuple[Tensor, Tensor, Tensor]:
    """``Σ_s λ_s L_s`` with ``λ`` from `min_norm_weights` on the reward-head gradients (003 Eq. 7, 9).

    Without a gradient (``torch.no_grad()``, e.g. evaluation) the solve is impossible; ``λ`` then
    is each source's share of the batch, which makes the loss the plain BT mean (003 Sec. 4.3:
    mixing datasets "implicitly induces λ_i = |D_i|/|D|").

    Args:
        chosen_rewards: ``[B]``.
        rejected_rewards: ``[B]``.
        source_ids: ``[B]`` integer source of each pair.
        head_parameters: reward-head parameters (e.g. ``list(head.parameters())``).
        iters: Frank-Wolfe iterations.

    Returns:
        ``(loss, lambdas [S'], present_ids [S'])``; ``lambdas`` are detached.
    """
    losses, present_ids, counts = per_source_bt_losses(chosen_rewards, rejected_rewards, source_ids)
    if len(present_ids) == 1:
        lambdas = torch.ones(1, dtype=losses.dtype, device=losses.device)
    elif torch.is_grad_enabled() and losses.requires_grad:
        if not head_parameters:
            raise ValueError(
                "loss 'more' needs LossInputs.head_parameters (the reward-head parameters) to solve for λ"
            )
        trainable = [p for p in head_parameters if p.requires_grad]
        if not trainable:
            raise ValueError(
                "loss 'more': no tensor in LossInputs.head_parameters requires grad; λ needs a trainable head"
            )
        rows = []
        for source_loss in losses:
            grads = torch.autograd.grad(source_loss, trainable, retain_graph=True, allow_unused=True)
            # A parameter the loss does not reach (allow_unused) contributes a zero block.
            flat = [
                (g if g is not None else torch.zeros_like(p)).reshape(-1)
                for g, p in zip(grads, trainable, strict=True)
            ]
            rows.append(torch.cat(flat))
        lambdas = min_norm_weights(torch.stack(rows), iters).to(losses.dtype)
    else:
        lambdas = counts.to(losses.dtype) / counts.sum()
    return (lambdas.detach() * losses).sum(), lambdas.detach(), present_ids


def _more(inputs: LossInputs, iters: int = 250) -> LossResult:
    name = "more"
    if iters < 1:
        raise ValueError(f"loss 'more': option iters must be >= 1, got {iters}")
    chosen, rejected = pair_rewards(inputs, name)
    source_ids = check_vector(require(inputs, "source_ids", name), "source_ids", name, chosen.numel())
    if source_ids.dtype.is_floating_point or source_ids.dtype == torch.bool:
        raise ValueError(
            f"loss 'more': LossInputs.source_ids must be an integer tensor, got {source_ids.dtype}"
        )
    sources = inputs.sources
    if sources is not None and (int(source_ids.min()) < 0 or int(source_ids.max()) >= len(sources)):
        raise ValueError(
            f"loss 'more': LossInputs.source_ids has values outside 0..{len(sources) - 1} (len(sources) = {len(sources)})"
        )
    loss, lambdas, present = more_loss(chosen, rejected, source_ids, inputs.head_parameters, iters)
    metrics = pairwise_metrics(chosen, rejected)
    for source_id, weight in zip(present.tolist(), lambdas.tolist(), strict=True):
        label = sources[source_id] if sources is not None else f"source_{source_id}"
        metrics[f"lambda/{label}"] = float(weight)
    return LossResult(loss, metrics)


register_loss(
    "more",
    _more,
    {"pairs"},
    "MORE: Σ_s λ_s·BT_s, λ = Frank-Wolfe min-norm point of per-source reward-head gradients (003 Eq. 7-9)",
    {"iters": 250},
)
