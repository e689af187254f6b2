"""Multi-attribute regression with missing labels (000 Eq. 5, second term; 004 Eq. 1 and App. A)."""

from __future__ import annotations

import torch
from torch import Tensor

from smorm.losses.base import LossInputs, LossResult, as_float, register_loss, require

REDUCTIONS = ("sum", "mean")


def regression_loss(
    predicted_ratings: Tensor, target_ratings: Tensor, rating_mask: Tensor, reduction: str = "sum"
) -> Tensor:
    """Masked squared error over the attributes that were rated.

    ``reduction="sum"`` is SMORM Eq. 5 (000 Sec. 3): ``E_{D_M} ||w_M^T f - r||²``, i.e. per
    example the sum over its rated attributes, then the mean over examples that have at least
    one rating. ``reduction="mean"`` is the mean over all rated labels (an MSE, as ArmoRM's
    linear-regression stage fits). A missing label contributes nothing (004 App. A: "we simply
    ignore the missing rating dimensions"); an example with no rating at all is left out of
    the mean. With no rating in the batch the loss is 0 and still has a gradient path.

    Args:
        predicted_ratings: ``[M, K]`` multi-attribute head output.
        target_ratings: ``[M, K]`` targets (in [0, 1] by default, see ``data.rating_scale``); values where
            ``rating_mask`` is False are ignored (may be NaN).
        rating_mask: ``[M, K]`` bool, True where rated.
        reduction: ``"sum"`` or ``"mean"``.

    Returns:
        Scalar loss.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"regression reduction must be one of {REDUCTIONS}, got {reduction!r}")
    # where() before the subtraction keeps NaN targets at unrated positions out of values and gradients.
    safe_target = torch.where(rating_mask, target_ratings, torch.zeros_like(target_ratings))
    residual = torch.where(rating_mask, predicted_ratings - safe_target, torch.zeros_like(predicted_ratings))
    squared = residual.square()  # [M, K], exactly 0 where unrated
    if reduction == "mean":
        return squared.sum() / rating_mask.sum().clamp_min(1)
    rated_examples = rating_mask.any(dim=-1)  # [M]
    return squared.sum() / rated_examples.sum().clamp_min(1)


def _regression(inputs: LossInputs, reduction: str = "sum") -> LossResult:
    name = "regression"
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"loss 'regression': option reduction must be one of {REDUCTIONS}, got {reduction!r}"
        )
    predicted = require(inputs, "predicted_ratings", name)
    target = require(inputs, "target_ratings", name)
    if predicted.dim() != 2:
        raise ValueError(
            f"loss 'regression': LossInputs.predicted_ratings must be [M, K], got shape {list(predicted.shape)}"
        )
    if target.shape != predicted.shape:
        raise ValueError(
            f"loss 'regression': LossInputs.target_ratings has shape {list(target.shape)}, "
            f"predicted_ratings has {list(predicted.shape)}; they must match"
        )
    mask = inputs.rating_mask
    if mask is None:
        # Without an explicit mask, a NaN target is the only way the data can say "not rated".
        mask = ~torch.isnan(target)
    elif mask.dtype != torch.bool:
        raise ValueError(f"loss 'regression': LossInputs.rating_mask must be a bool tensor, got {mask.dtype}")
    elif mask.shape != predicted.shape:
        raise ValueError(
            f"loss 'regression': LossInputs.rating_mask has shape {list(mask.shape)}, "
            f"predicted_ratings has {list(predicted.shape)}; they must match"
        )
    bad = mask & ~torch.isfinite(target)
    if bool(bad.any()):
        row, col = bad.nonzero()[0].tolist()
        raise ValueError(
            f"loss 'regression': LossInputs.target_ratings[{row}, {col}] is not finite but rating_mask marks it rated"
        )
    predicted, target = as_float(predicted), as_float(target)
    loss = regression_loss(predicted, target, mask, reduction)
    with torch.no_grad():
        rated = int(mask.sum())
        residual = torch.where(mask, predicted - torch.where(mask, target, 0.0), 0.0)
        metrics = {
            "mse": float(residual.square().sum() / max(rated, 1)),
            "rated_fraction": rated / max(mask.numel(), 1),
        }
    return LossResult(loss, metrics)


register_loss(
    "regression",
    _regression,
    {"ratings"},
    "masked squared error on rated attributes; sum over attributes (000 Eq. 5) or mean (004)",
    {"reduction": "sum"},
    {"reduction": REDUCTIONS},
)
