"""Bradley-Terry and its pairwise variants: bt, margin, label_smoothing, hinge, bt_norm, bt_dr.

Each loss is a pure function of ``[B]`` chosen and rejected rewards (mean over pairs), wrapped
by a registered ``fn(inputs, **options)`` that reads `LossInputs` and adds batch metrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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

# ---------------------------------------------------------------- pure functions


def bt_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """Bradley-Terry loss ``-log σ(r_c - r_r)``, mean over pairs (000 Eq. 1; 002 Sec. 2).

    Args:
        chosen_rewards: ``[B]``.
        rejected_rewards: ``[B]``.

    Returns:
        Scalar loss. ``F.logsigmoid`` keeps it finite for margins of any size.
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def margin_loss(
    chosen_rewards: Tensor, rejected_rewards: Tensor, margins: Tensor, scale: float = 1.0
) -> Tensor:
    """BT with a data margin: ``-log σ(r_c - r_r - scale·m)``, mean over pairs (000 App. G.1).

    The paper (following Touvron et al., Llama 2) takes ``m(r)`` from the difference of the
    two responses' scores in the data; the data layer stores that difference in ``margins``.

    Args:
        chosen_rewards: ``[B]``.
        rejected_rewards: ``[B]``.
        margins: ``[B]`` finite margins (the wrapper resolves missing ones).
        scale: multiplier applied to the margin.
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards - scale * margins).mean()


def label_smoothing_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, epsilon: float = 0.1) -> Tensor:
    """Label-smoothed BT: ``(1-ε)·(-log σ(Δ)) + ε·(-log σ(-Δ))``, ``Δ = r_c - r_r``, mean over pairs.

    The reading: BT's cross-entropy against a soft label that says "chosen wins" with
    probability 1-ε and "rejected wins" with probability ε. 000 App. G.1 prints
    ``-E[(1-ε) log σ(Δ) - ε log σ(Δ)]``: both terms take the same ``Δ``, so as printed the loss
    is ``-(1-2ε) log σ(Δ)``, a rescaled BT that smooths nothing. 000 cites [55] for the loss and
    follows the GRM code [19] for GRM; that code's baselines are the ones 000 lists (margin,
    label smoothing, ensemble), and its label smoothing (YangRui2015/Generalizable-Reward-Model,
    ``reward_models/reward_trainer.py``, ``SimpleRewardTrainer.compute_loss``,
    ``loss_type='labelsmooth'``) is exactly this reading, ``-(1-ε)·mean log σ(Δ) - ε·mean log σ(-Δ)``,
    with ε = ``weight_ratio``, default 0.1 (``reward_models/run_reward_models_train.py``), the
    ε = 0.1 that 000 App. G.1 states.

    Args:
        chosen_rewards: ``[B]``.
        rejected_rewards: ``[B]``.
        epsilon: smoothing, in [0, 1).
    """
    delta = chosen_rewards - rejected_rewards
    return (-(1.0 - epsilon) * F.logsigmoid(delta) - epsilon * F.logsigmoid(-delta)).mean()


def hinge_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, margin: float = 0.0) -> Tensor:
    """BT-Hinge ``max(0, m - (r_c - r_r))``, mean over pairs (002 Sec. 4.3, Eq. 30); default m = 0.

    002 gives no value for the hard bound ``m``. The authors' released trainer
    (LinkedIn-XFACT/RM-Robustness, ``modules/trainers/reward_trainer.py``, ``use_hinge``) computes
    ``relu(margin - Δ).mean()`` with ``RewardConfig.margin`` defaulting to 0.0
    (``modules/modules.py``), and no released recipe sets it, so m = 0 is how their code runs
    (smorm defaulted to the classic 1.0 before). With m = 0 only misordered pairs (Δ < 0) give a
    gradient; a correctly ordered pair is never pushed further apart. ``margin: 1.0`` is the
    classic hinge.

    Args:
        chosen_rewards: ``[B]``.
        rejected_rewards: ``[B]``.
        margin: the hard bound ``m``.
    """
    return torch.relu(margin - (chosen_rewards - rejected_rewards)).mean()


def bt_norm_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, eps: float = 1e-8) -> Tensor:
    """BT-Norm (logit normalisation): ``-log σ((r_c - r_r) / sqrt(r_c² + r_r²))`` (002 Eq. 29).

    ``eps`` sits inside the square root so that ``r_c = r_r = 0`` (e.g. a zero-initialised
    head) gives ``log 2`` with finite gradients instead of 0/0.

    Args:
        chosen_rewards: ``[B]``.
        rejected_rewards: ``[B]``.
        eps: added to ``r_c² + r_r²`` before the square root.
    """
    norm = torch.sqrt(chosen_rewards.square() + rejected_rewards.square() + eps)
    return -F.logsigmoid((chosen_rewards - rejected_rewards) / norm).mean()


def bt_dr_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """BT-DR: ``L_BT - log σ(r_c) - log σ(-r_r)``, mean over pairs (002 Eq. 31, from Yuan et al. 2024).

    The two extra logistic terms push the chosen reward up and the rejected reward down
    separately; 002 uses it as the margin-boosting extreme.

    Args:
        chosen_rewards: ``[B]``.
        rejected_rewards: ``[B]``.
    """
    per_pair = (
        -F.logsigmoid(chosen_rewards - rejected_rewards)
        - F.logsigmoid(chosen_rewards)
        - F.logsigmoid(-rejected_rewards)
    )
    return per_pair.mean()


# ---------------------------------------------------------------- registered wrappers


def _bt(inputs: LossInputs) -> LossResult:
    chosen, rejected = pair_rewards(inputs, "bt")
    return LossResult(bt_loss(chosen, rejected), pairwise_metrics(chosen, rejected))


def _margin(inputs: LossInputs, scale: float = 1.0, missing: str = "zero") -> LossResult:
    if missing not in ("zero", "error"):
        raise ValueError(f"loss 'margin': option missing must be 'zero' or 'error', got {missing!r}")
    chosen, rejected = pair_rewards(inputs, "margin")
    margins = as_float(
        check_vector(require(inputs, "margins", "margin"), "margins", "margin", chosen.numel())
    )
    absent = torch.isnan(margins)
    if bool(absent.any()):
        if missing == "error":
            rows = absent.nonzero().flatten().tolist()
            raise ValueError(
                f"loss 'margin': LossInputs.margins is NaN (no margin in the data) for pair rows {rows[:10]}"
                f"{' …' if len(rows) > 10 else ''}; give every pair a margin or set option missing='zero'"
            )
        # A pair without a margin falls back to plain BT (m = 0) rather than poisoning the batch with NaN.
        margins = torch.where(absent, torch.zeros_like(margins), margins)
    if not bool(torch.isfinite(margins).all()):
        raise ValueError("loss 'margin': LossInputs.margins has an infinite value")
    metrics = pairwise_metrics(chosen, rejected)
    metrics["data_margin"] = float(margins.mean())
    metrics["margin_present_fraction"] = float((~absent).float().mean())
    return LossResult(margin_loss(chosen, rejected, margins, scale), metrics)


def _label_smoothing(inputs: LossInputs, epsilon: float = 0.1) -> LossResult:
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"loss 'label_smoothing': option epsilon must be in [0, 1), got {epsilon}")
    chosen, rejected = pair_rewards(inputs, "label_smoothing")
    return LossResult(label_smoothing_loss(chosen, rejected, epsilon), pairwise_metrics(chosen, rejected))


def _hinge(inputs: LossInputs, margin: float = 0.0) -> LossResult:
    chosen, rejected = pair_rewards(inputs, "hinge")
    return LossResult(hinge_loss(chosen, rejected, margin), pairwise_metrics(chosen, rejected))


def _bt_norm(inputs: LossInputs, eps: float = 1e-8) -> LossResult:
    if eps <= 0:
        raise ValueError(f"loss 'bt_norm': option eps must be > 0, got {eps}")
    chosen, rejected = pair_rewards(inputs, "bt_norm")
    return LossResult(bt_norm_loss(chosen, rejected, eps), pairwise_metrics(chosen, rejected))


def _bt_dr(inputs: LossInputs) -> LossResult:
    chosen, rejected = pair_rewards(inputs, "bt_dr")
    return LossResult(bt_dr_loss(chosen, rejected), pairwise_metrics(chosen, rejected))


register_loss("bt", _bt, {"pairs"}, "Bradley-Terry -log σ(r_c - r_r) (000 Eq. 1)", {})
register_loss(
    "margin",
    _margin,
    {"pairs"},
    "BT with the data margin: -log σ(r_c - r_r - scale·m) (000 App. G.1)",
    {"scale": 1.0, "missing": "zero"},
    {"missing": ("zero", "error")},
)
register_loss(
    "label_smoothing",
    _label_smoothing,
    {"pairs"},
    "label-smoothed BT -(1-ε)log σ(Δ) - ε log σ(-Δ) (000 App. G.1, sign slip fixed as in the GRM code)",
    {"epsilon": 0.1},
)
register_loss(
    "hinge", _hinge, {"pairs"}, "BT-Hinge max(0, m - (r_c - r_r)), m = 0 as the authors' code (002 Eq. 30)",
    {"margin": 0.0},
)
register_loss(
    "bt_norm", _bt_norm, {"pairs"}, "BT-Norm -log σ(Δ / sqrt(r_c² + r_r²)) (002 Eq. 29)", {"eps": 1e-8}
)
register_loss("bt_dr", _bt_dr, {"pairs"}, "BT-DR: BT - log σ(r_c) - log σ(-r_r) (002 Eq. 31)", {})
