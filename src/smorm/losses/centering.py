"""BT plus a batch-level reward-centering regulariser: bsr (002 Eq. 24-25) and center (TRL).

Both keep rewards from drifting to large magnitudes; they differ in what is squared:
``bsr`` squares the batch mean of all rewards, ``center`` averages the squared pair sums.
``bsr`` multiplies λ by the per-device batch size by default, as the authors' trainer does (``_bsr``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smorm.losses.base import LossInputs, LossResult, pair_rewards, pairwise_metrics, register_loss
from smorm.losses.pairwise import bt_loss


def batch_sum_penalty(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """``L_BSR = ( (1 / 2|B|) Σ_i Σ_{j∈{w,l}} r(x_i, y_ij) )²``: the squared mean of ALL 2B rewards (002 Eq. 25).

    002's gradient (Eq. 28) is written as ``r(x_i, y_ij)/|B| · W_p``, which is the gradient of
    the mean of squares instead; we follow Eq. 25, which is also what the authors' released
    trainer computes (``mean(cat([r_c, r_r])).square()``).

    Args:
        chosen_rewards: ``[B]``.
        rejected_rewards: ``[B]``.
    """
    return torch.cat([chosen_rewards, rejected_rewards]).mean().square()


def bsr_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, bsr_lambda: float = 1e-3) -> Tensor:
    """``L_BT-BSR = L_BT + λ · L_BSR`` (002 Eq. 24), λ as given; 002 selects 1e-3 (App. A.2, Sec. 5.3).

    The registered ``bsr`` loss passes ``λ·B`` here by default, as the authors' trainer does (see ``_bsr``).

    Args:
        chosen_rewards: ``[B]``.
        rejected_rewards: ``[B]``.
        bsr_lambda: λ.
    """
    return bt_loss(chosen_rewards, rejected_rewards) + bsr_lambda * batch_sum_penalty(
        chosen_rewards, rejected_rewards
    )


def center_penalty(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """``mean_i (r_c,i + r_r,i)²``, TRL's reward-centering auxiliary (Eisenstein et al. 2023, Eq. 2).

    Args:
        chosen_rewards: ``[B]``.
        rejected_rewards: ``[B]``.
    """
    return (chosen_rewards + rejected_rewards).square().mean()


def center_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, coefficient: float = 0.01) -> Tensor:
    """``L_BT + c · mean((r_c + r_r)²)``: TRL's ``center_rewards_coefficient`` definition (recommended c = 0.01).

    002 lists this beside BSR (their trainer has the same switch); the definition here is TRL's.

    Args:
        chosen_rewards: ``[B]``.
        rejected_rewards: ``[B]``.
        coefficient: c.
    """
    return bt_loss(chosen_rewards, rejected_rewards) + coefficient * center_penalty(
        chosen_rewards, rejected_rewards
    )


def _bsr(inputs: LossInputs, bsr_lambda: float = 1e-3, scale_by_batch_size: bool = True) -> LossResult:
    """BT-BSR on this process's pairs, ``L_BT + λ·B·L_BSR`` by default: λ times the per-device batch size.

    002 writes ``L_BT + λ·L_BSR`` (Sec. 4.2, Eq. 24) with λ = 1e-3 (App. A.2; chosen in Sec. 5.3,
    Table 2). The authors' released trainer (LinkedIn-XFACT/RM-Robustness,
    ``modules/trainers/reward_trainer.py``, ``RewardTrainer.__init__``) runs
    ``bsr_lambda * self._train_batch_size``, which in Hugging Face's Trainer is
    ``per_device_train_batch_size`` (times the GPUs of one process, 1 under their FSDP launch,
    ``run/rm.sh``); ``recipes/skywork-bsr/rm.yaml`` has 16 per device, so they trained with
    λ·B = 0.016. That is the default here. Their penalty, like ours, is the squared mean over
    one device's micro-batch; ``chosen_rewards`` is exactly that: ``train/losses_glue.py`` gives
    each process its strided shard of the step's ``train.pair_batch_size`` pairs, so
    ``B = chosen_rewards.numel()`` is ``pair_batch_size / world_size``. The authors' factor is
    fixed from the config; ours is the shard's size, smaller on an epoch's short last batch.
    ``scale_by_batch_size: false`` gives the paper's plain λ.

    Args:
        inputs: ``chosen_rewards`` and ``rejected_rewards``, ``[B]`` each (this process's pairs).
        bsr_lambda: λ (002 selects 1e-3).
        scale_by_batch_size: use ``λ·B`` (the authors' code) instead of ``λ`` (the paper's equation).
    """
    chosen, rejected = pair_rewards(inputs, "bsr")
    effective_lambda = bsr_lambda * chosen.numel() if scale_by_batch_size else bsr_lambda
    penalty = batch_sum_penalty(chosen, rejected)
    bt = bt_loss(chosen, rejected)
    metrics = pairwise_metrics(chosen, rejected)
    metrics.update({"bt_loss": float(bt.detach()), "bsr_penalty": float(penalty.detach()),
                    "effective_lambda": float(effective_lambda)})
    return LossResult(bt + effective_lambda * penalty, metrics)


def _center(inputs: LossInputs, coefficient: float = 0.01) -> LossResult:
    chosen, rejected = pair_rewards(inputs, "center")
    penalty = center_penalty(chosen, rejected)
    bt = bt_loss(chosen, rejected)
    metrics = pairwise_metrics(chosen, rejected)
    metrics.update({"bt_loss": float(bt.detach()), "center_penalty": float(penalty.detach())})
    return LossResult(bt + coefficient * penalty, metrics)


register_loss(
    "bsr",
    _bsr,
    {"pairs"},
    "BT + λ·B·(mean of all 2B batch rewards)², batch sum-to-zero (002 Eq. 24-25; λ·B as the authors' trainer)",
    {"bsr_lambda": 1e-3, "scale_by_batch_size": True},
)
register_loss(
    "center",
    _center,
    {"pairs"},
    "BT + c·mean((r_c + r_r)²), TRL's center_rewards_coefficient",
    {"coefficient": 0.01},
)
