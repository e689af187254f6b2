"""Stage 1: one ridge regression per attribute on frozen features (004 Sec. 3.1, App. A).

ArmoRM fits its regression layer by linear probing: for each attribute i, on the rows where that
attribute is rated (a missing label is masked, never read as zero; 004 App. A "Missing Labels"),

    w_i = argmin_w ||y_i - X_i w||^2 + α_i ||w||^2        (no intercept: the head is w^T f, 000 Eq. 5)

with α_i picked from the log grid 1e-4 … 1e4 by validation MSE on a seeded 80/20 split of the rated
rows. This is the objective of scikit-learn's ``Ridge(alpha, fit_intercept=False)``; it is solved
here in closed form through one SVD per attribute, which makes every α of the grid nearly free.
After α is chosen the attribute is refit on all of its rated rows (train + validation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

DEFAULT_ALPHAS = tuple(10.0**e for e in range(-4, 5))
DEFAULT_ALPHA = 1.0  # used when an attribute has too few rated rows to hold any out


@dataclass
class RidgeFit:
    """Per-attribute ridge solutions.

    Attributes:
        weights: ``[K, d]`` float32, row i is w_i.
        alphas: chosen penalty of each attribute.
        val_mse: validation MSE of each attribute at its chosen α (NaN when nothing was held out).
        rated_rows: number of rated rows of each attribute.
        notes: what was unusual (too few rows for a split …).
    """

    weights: torch.Tensor
    alphas: list[float]
    val_mse: list[float]
    rated_rows: list[int]
    notes: list[str] = field(default_factory=list)

    def summary(self, attributes: list[str]) -> list[dict[str, Any]]:
        return [{"attribute": name, "alpha": a, "val_mse": m, "rated_rows": n}
                for name, a, m, n in zip(attributes, self.alphas, self.val_mse, self.rated_rows)]


def ridge_solutions(features: np.ndarray, targets: np.ndarray, alphas: tuple[float, ...]) -> np.ndarray:
    """``[n, d], [n] -> [len(alphas), d]``: ridge without intercept for every α from one thin SVD.

    With ``X = U S V^T``: ``w(α) = V diag(s / (s^2 + α)) U^T y`` (the normal equations
    ``(X^T X + α I) w = X^T y``; directions outside the row space get 0, as the penalty demands).
    """
    u, s, vt = np.linalg.svd(features, full_matrices=False)
    projected = u.T @ targets  # [r]
    shrink = s[None, :] / (s[None, :] ** 2 + np.asarray(alphas)[:, None])  # [A, r]
    return (shrink * projected[None, :]) @ vt


def split_rows(num_rows: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation cut into (train rows, validation rows)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(num_rows)
    num_val = int(round(val_fraction * num_rows))
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def fit_attribute_ridge(
    features: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> RidgeFit:
    """Fit one ridge regression per attribute, each on its own rated rows.

    Args:
        features: ``[N, d]`` cached features of the rated responses.
        targets: ``[N, K]`` ratings in [0, 1] (any value where missing).
        mask: ``[N, K]`` bool, True where the attribute is rated.
        alphas: the penalty grid (004 App. A / public ArmoRM: 1e-4 … 1e4).
        val_fraction: share of the rows held out to choose α (one seeded split shared by all attributes).
        seed: seed of the split.
    """
    if features.ndim != 2 or targets.shape != mask.shape or targets.shape[0] != features.shape[0]:
        raise ValueError(f"shapes: features {tuple(features.shape)}, targets {tuple(targets.shape)}, "
                         f"mask {tuple(mask.shape)}; expected [N, d], [N, K], [N, K]")
    x = features.double().cpu().numpy()
    y = targets.double().cpu().numpy()
    rated = mask.bool().cpu().numpy()
    _, val_rows = split_rows(x.shape[0], val_fraction, seed)
    is_val = np.zeros(x.shape[0], dtype=bool)
    is_val[val_rows] = True
    weights, chosen, val_mse, counts, notes = [], [], [], [], []
    for k in range(y.shape[1]):
        rows = np.flatnonzero(rated[:, k])
        counts.append(int(rows.size))
        if rows.size == 0:
            raise ValueError(f"attribute {k} has no rated rows: nothing to fit")
        fit_rows, hold_rows = rows[~is_val[rows]], rows[is_val[rows]]
        if hold_rows.size == 0 or fit_rows.size == 0:
            notes.append(f"attribute {k}: {rows.size} rated rows, too few to hold any out; α = {DEFAULT_ALPHA}")
            alpha, mse = DEFAULT_ALPHA, float("nan")
        else:
            candidates = ridge_solutions(x[fit_rows], y[fit_rows, k], alphas)  # [A, d]
            errors = ((x[hold_rows] @ candidates.T - y[hold_rows, k][:, None]) ** 2).mean(axis=0)
            best = int(np.argmin(errors))
            alpha, mse = float(alphas[best]), float(errors[best])
        weights.append(ridge_solutions(x[rows], y[rows, k], (alpha,))[0])
        chosen.append(alpha)
        val_mse.append(mse)
    return RidgeFit(torch.tensor(np.stack(weights), dtype=torch.float32), chosen, val_mse, counts, notes)


def ratings_matrix(ratings: list[dict[str, float]], attributes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, K]`` targets (0 where missing) and ``[N, K]`` bool mask, from rating dicts."""
    column = {name: k for k, name in enumerate(attributes)}
    targets = torch.zeros(len(ratings), len(attributes))
    mask = torch.zeros(len(ratings), len(attributes), dtype=torch.bool)
    for row, rated in enumerate(ratings):
        for name, value in rated.items():
            if name in column:
                targets[row, column[name]] = float(value)
                mask[row, column[name]] = True
    return targets, mask


def install_multi_head(model: Any, weights: torch.Tensor, attributes: list[str]) -> None:
    """Write ridge weights ``[K, d]`` into ``model.heads["multi"]`` (created or replaced as a linear head).

    A model without a multi head (a SORM) gets one; a model whose multi head has other attributes or
    is not linear gets a new linear head; otherwise the weights are copied in place. Any gate is
    removed, since it weighed the old head's outputs.
    """
    from smorm.models.devices import module_device
    from smorm.models.heads import LinearHead

    if weights.shape != (len(attributes), model.hidden_size):
        raise ValueError(f"ridge weights {tuple(weights.shape)} do not match {len(attributes)} attributes "
                         f"x hidden size {model.hidden_size}")
    head = model.heads["multi"] if "multi" in model.heads else None
    spec = model.config.heads.get("multi", {})
    if head is None or spec.get("kind", "linear") != "linear" or list(model.config.attributes) != list(attributes):
        head = LinearHead(model.hidden_size, len(attributes)).to(module_device(model), model._head_dtype())
        model.heads["multi"] = head
    with torch.no_grad():
        head.weight.copy_(weights.to(head.weight.dtype))
    model.config.attributes = list(attributes)
    model.config.heads["multi"] = {"kind": "linear", "out": len(attributes)}
    if "gate" in model.heads:
        del model.heads["gate"]
        model.config.heads.pop("gate", None)
