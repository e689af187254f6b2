"""more: the min-norm solve (closed form for S=2, brute-force grid for S=3) and the weighted loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from smorm.losses import LossInputs, bt_loss, get_loss, min_norm_weights, more_loss


def rows(*vectors: list[float]) -> torch.Tensor:
    return torch.tensor(vectors, dtype=torch.float64)


# ---------------------------------------------------------------- min_norm_weights


def test_one_source_is_one():
    assert min_norm_weights(rows([3.0, -1.0])).tolist() == [1.0]


def test_two_orthogonal_gradients_closed_form():
    # g1 = [2, 0], g2 = [0, 1]: λ1 = ((g2 - g1)·g2) / ||g1 - g2||² = 1 / 5
    assert min_norm_weights(rows([2.0, 0.0], [0.0, 1.0])).tolist() == pytest.approx([0.2, 0.8], rel=1e-12)
    assert min_norm_weights(rows([1.0, 0.0], [0.0, 1.0])).tolist() == pytest.approx([0.5, 0.5], rel=1e-12)


def test_two_gradients_clipped_to_a_vertex():
    # g1 = [1, 0], g2 = [2, 0]: the unconstrained γ is 2, clipped to 1 -> all weight on the shorter g1
    assert min_norm_weights(rows([1.0, 0.0], [2.0, 0.0])).tolist() == pytest.approx([1.0, 0.0])
    assert min_norm_weights(rows([3.0, 0.0], [1.0, 0.0])).tolist() == pytest.approx([0.0, 1.0])


def test_two_equal_gradients_split_evenly():
    assert min_norm_weights(rows([1.0, 2.0], [1.0, 2.0])).tolist() == pytest.approx([0.5, 0.5])


def grid_min_norm(grads: np.ndarray, steps: int = 400) -> tuple[float, np.ndarray]:
    """Brute force over the simplex on a grid with spacing 1/steps."""
    best, best_weights = math.inf, None
    for i in range(steps + 1):
        for j in range(steps + 1 - i):
            weights = np.array([i, j, steps - i - j], dtype=float) / steps
            value = float(np.sum((weights @ grads) ** 2))
            if value < best:
                best, best_weights = value, weights
    return best, best_weights


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_sources_match_brute_force_grid(seed):
    grads = np.random.default_rng(seed).normal(size=(3, 4))
    weights = min_norm_weights(torch.tensor(grads)).numpy()
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0, abs=1e-12)
    value = float(np.sum((weights @ grads) ** 2))
    grid_value, grid_weights = grid_min_norm(grads)
    assert value <= grid_value + 1e-9  # never worse than the grid's best point
    assert np.abs(weights - grid_weights).max() < 0.01


def test_three_sources_zero_in_hull():
    # [1, 0] and [-1, 0] average to 0: the min-norm point is 0 with λ = [0.5, 0.5, 0]
    weights = min_norm_weights(rows([1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]))
    assert weights.tolist() == pytest.approx([0.5, 0.5, 0.0], abs=1e-6)


def test_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\[S, P\]"):
        min_norm_weights(torch.zeros(3))


# ---------------------------------------------------------------- more_loss on a linear head


def linear_head_batch():
    """Two sources (ids 0, 0, 1, 1), a bias-free linear head w on fixed 2-d features."""
    torch.manual_seed(0)
    head = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.5, -0.25]]))
    z_chosen = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    z_rejected = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
    return head, z_chosen, z_rejected, torch.tensor([0, 0, 1, 1])


def expected_by_hand(z_chosen, z_rejected, source_ids, w):
    """Per-source BT means and their gradients in w, λ by the S=2 closed form, all in numpy."""
    zc, zr, w = z_chosen.numpy(), z_rejected.numpy(), w.reshape(-1)
    delta = (zc - zr) @ w
    losses, grads = [], []
    for s in (0, 1):
        sel = source_ids.numpy() == s
        losses.append(np.mean(np.log1p(np.exp(-delta[sel]))))
        # ∇_w -log σ(w·(z_c - z_r)) = -σ(-Δ)(z_c - z_r)
        sig = 1 / (1 + np.exp(delta[sel]))
        grads.append(np.mean(-sig[:, None] * (zc[sel] - zr[sel]), axis=0))
    g1, g2 = grads
    lam1 = np.clip(np.dot(g2 - g1, g2) / np.dot(g1 - g2, g1 - g2), 0, 1)
    lambdas = np.array([lam1, 1 - lam1])
    return losses, grads, lambdas


def test_more_loss_by_hand_and_lambda_is_detached():
    head, z_chosen, z_rejected, source_ids = linear_head_batch()
    losses, grads, lambdas = expected_by_hand(z_chosen, z_rejected, source_ids, head.weight.detach().numpy())
    assert 0.0 < lambdas[0] < 1.0  # the example is an interior case, not a vertex
    chosen, rejected = head(z_chosen).squeeze(-1), head(z_rejected).squeeze(-1)
    loss, got_lambdas, present = more_loss(chosen, rejected, source_ids, list(head.parameters()))
    assert present.tolist() == [0, 1]
    assert got_lambdas.tolist() == pytest.approx(lambdas.tolist(), rel=1e-9)
    assert loss.item() == pytest.approx(float(lambdas @ np.array(losses)), rel=1e-9)
    loss.backward()
    # λ is a constant in the backward pass: ∇w = λ1 ∇L1 + λ2 ∇L2
    expected_grad = lambdas[0] * grads[0] + lambdas[1] * grads[1]
    assert head.weight.grad.reshape(-1).tolist() == pytest.approx(expected_grad.tolist(), rel=1e-9)


def test_more_wrapper_logs_lambda_per_source():
    head, z_chosen, z_rejected, source_ids = linear_head_batch()
    _, _, lambdas = expected_by_hand(z_chosen, z_rejected, source_ids, head.weight.detach().numpy())
    inputs = LossInputs(
        chosen_rewards=head(z_chosen).squeeze(-1),
        rejected_rewards=head(z_rejected).squeeze(-1),
        source_ids=source_ids,
        sources=["hh", "ultrafeedback"],
        head_parameters=list(head.parameters()),
    )
    result = get_loss("more").fn(inputs)
    assert result.metrics["lambda/hh"] == pytest.approx(lambdas[0], rel=1e-9)
    assert result.metrics["lambda/ultrafeedback"] == pytest.approx(lambdas[1], rel=1e-9)
    result.loss.backward()
    assert torch.isfinite(head.weight.grad).all()


def test_one_source_batch_is_plain_bt():
    head, z_chosen, z_rejected, _ = linear_head_batch()
    chosen, rejected = head(z_chosen).squeeze(-1), head(z_rejected).squeeze(-1)
    inputs = LossInputs(
        chosen_rewards=chosen,
        rejected_rewards=rejected,
        source_ids=torch.tensor([1, 1, 1, 1]),
        sources=["hh", "ultrafeedback"],
        head_parameters=list(head.parameters()),
    )
    result = get_loss("more").fn(inputs)
    assert result.metrics["lambda/ultrafeedback"] == 1.0
    assert "lambda/hh" not in result.metrics
    assert result.loss.item() == pytest.approx(bt_loss(chosen, rejected).item(), rel=1e-12)


def test_without_grad_lambda_is_batch_share_and_loss_is_bt():
    head, z_chosen, z_rejected, _ = linear_head_batch()
    source_ids = torch.tensor([0, 1, 1, 1])
    with torch.no_grad():
        chosen, rejected = head(z_chosen).squeeze(-1), head(z_rejected).squeeze(-1)
        loss, lambdas, _ = more_loss(chosen, rejected, source_ids, list(head.parameters()))
    assert lambdas.tolist() == pytest.approx([0.25, 0.75])
    assert loss.item() == pytest.approx(bt_loss(chosen, rejected).item(), rel=1e-12)


def test_huge_rewards_finite():
    head, z_chosen, z_rejected, source_ids = linear_head_batch()
    with torch.no_grad():
        head.weight.mul_(1000.0)
    loss, lambdas, _ = more_loss(
        head(z_chosen).squeeze(-1), head(z_rejected).squeeze(-1), source_ids, list(head.parameters())
    )
    assert math.isfinite(loss.item()) and torch.isfinite(lambdas).all()
    loss.backward()
    assert torch.isfinite(head.weight.grad).all()


def test_more_errors_name_fields():
    head, z_chosen, z_rejected, source_ids = linear_head_batch()
    chosen, rejected = head(z_chosen).squeeze(-1), head(z_rejected).squeeze(-1)
    with pytest.raises(ValueError, match="LossInputs.head_parameters"):
        get_loss("more").fn(
            LossInputs(chosen_rewards=chosen, rejected_rewards=rejected, source_ids=source_ids)
        )
    with pytest.raises(ValueError, match="LossInputs.source_ids"):
        get_loss("more").fn(LossInputs(chosen_rewards=chosen, rejected_rewards=rejected))
    with pytest.raises(ValueError, match="outside 0..0"):
        get_loss("more").fn(
            LossInputs(
                chosen_rewards=chosen,
                rejected_rewards=rejected,
                source_ids=source_ids,
                sources=["only"],
                head_parameters=list(head.parameters()),
            )
        )
