"""regression: masked squared error (000 Eq. 5 sum; 004 mean), missing labels contribute nothing."""

from __future__ import annotations

import math

import pytest
import torch

from smorm.losses import LossInputs, get_loss, regression_loss

NAN = float("nan")


def example():
    predicted = torch.tensor([[0.5, 0.2, 0.9], [0.1, 0.4, 0.0]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[1.0, 0.0, NAN], [0.0, 0.5, NAN]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, True, False]])
    return predicted, target, mask


def test_sum_reduction_by_hand():
    predicted, target, mask = example()
    # example 1: 0.5² + 0.2² = 0.29; example 2: 0.1² + 0.1² = 0.02; mean over 2 examples
    assert regression_loss(predicted, target, mask, "sum").item() == pytest.approx(
        (0.29 + 0.02) / 2, rel=1e-12
    )


def test_mean_reduction_by_hand():
    predicted, target, mask = example()
    # 4 rated labels
    assert regression_loss(predicted, target, mask, "mean").item() == pytest.approx(0.31 / 4, rel=1e-12)


def test_unrated_example_contributes_nothing():
    predicted, target, mask = example()
    predicted = torch.cat([predicted.detach(), torch.tensor([[5.0, 5.0, 5.0]], dtype=torch.float64)])
    target = torch.cat([target, torch.tensor([[NAN, 0.0, 1.0]], dtype=torch.float64)])
    mask = torch.cat([mask, torch.tensor([[False, False, False]])])
    assert regression_loss(predicted, target, mask, "sum").item() == pytest.approx(0.155, rel=1e-12)
    assert regression_loss(predicted, target, mask, "mean").item() == pytest.approx(0.0775, rel=1e-12)


def test_gradient_by_hand_and_zero_on_unrated():
    predicted, target, mask = example()
    regression_loss(predicted, target, mask, "sum").backward()
    # d/dp (p - t)² / (number of rated examples = 2) = (p - t)
    expected = [[0.5 - 1.0, 0.2, 0.0], [0.1, 0.4 - 0.5, 0.0]]
    assert torch.allclose(predicted.grad, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert torch.isfinite(predicted.grad).all()  # the NaN targets never reach the gradient


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_all_missing_gives_zero_with_gradient_path(reduction):
    predicted = torch.randn(3, 4, requires_grad=True)
    target = torch.full((3, 4), NAN)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    loss = regression_loss(predicted, target, mask, reduction)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.equal(predicted.grad, torch.zeros(3, 4))


def test_wrapper_default_is_sum_and_reports_metrics():
    predicted, target, mask = example()
    result = get_loss("regression").fn(
        LossInputs(predicted_ratings=predicted, target_ratings=target, rating_mask=mask)
    )
    assert result.loss.item() == pytest.approx(0.155, rel=1e-12)
    assert result.metrics["mse"] == pytest.approx(0.0775, rel=1e-9)
    assert result.metrics["rated_fraction"] == pytest.approx(4 / 6)


def test_wrapper_derives_mask_from_nan_when_absent():
    predicted, target, _ = example()
    result = get_loss("regression").fn(
        LossInputs(predicted_ratings=predicted, target_ratings=target), reduction="mean"
    )
    assert result.loss.item() == pytest.approx(0.0775, rel=1e-12)


def test_wrapper_rejects_nan_at_rated_position():
    predicted, target, mask = example()
    mask = mask.clone()
    mask[1, 2] = True
    with pytest.raises(ValueError, match=r"target_ratings\[1, 2\]"):
        get_loss("regression").fn(
            LossInputs(predicted_ratings=predicted, target_ratings=target, rating_mask=mask)
        )


def test_wrapper_shape_and_dtype_errors():
    predicted, target, mask = example()
    fn = get_loss("regression").fn
    with pytest.raises(ValueError, match="target_ratings has shape"):
        fn(LossInputs(predicted_ratings=predicted, target_ratings=target[:, :2], rating_mask=mask))
    with pytest.raises(ValueError, match="rating_mask must be a bool"):
        fn(LossInputs(predicted_ratings=predicted, target_ratings=target, rating_mask=mask.long()))
    with pytest.raises(ValueError, match="LossInputs.predicted_ratings"):
        fn(LossInputs(target_ratings=target, rating_mask=mask))


def test_large_errors_stay_finite():
    predicted = torch.tensor([[1000.0, -1000.0]], requires_grad=True)
    loss = regression_loss(predicted, torch.tensor([[0.0, 1.0]]), torch.tensor([[True, True]]))
    assert loss.item() == pytest.approx(1000.0**2 + 1001.0**2, rel=1e-6)
    loss.backward()
    assert torch.isfinite(predicted.grad).all()
    assert math.isfinite(loss.item())
