"""GRM: BT on the reward head plus a text-generation regulariser through the kept LM head.

GRM (Yang et al. 2024, "Regularizing hidden states enables learning generalizable reward
model for LLMs") keeps the base model's LM head next to the reward head and adds a
reference-free generation loss on the same hidden states. SMORM (000 App. G.1) "strictly
follow[s] the implementation in [19]" with α = 0.01 and β = 0.1; the defaults below are that
implementation's: ``loss = (1-α)·L_BT + α·L_reg`` with

* SFT:  ``L_reg = -log σ(β · log π(y_c|x))`` (log π summed over the response tokens),
* DPO:  ``L_reg = -log σ(β · (log π(y_c|x) - log π(y_r|x)))`` (reference-free).

Options give the plain variants: ``combine="additive"`` for ``L_BT + α·L_reg`` and
``sft_form="token_mean_nll"`` for the per-token negative log-likelihood of the chosen response.
The head variants (linear or MLP(1024)) belong to the model, not to the loss.
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
from smorm.losses.pairwise import bt_loss

SFT_FORMS = ("logsigmoid", "token_mean_nll")
COMBINES = ("convex", "additive")


def grm_sft_regularizer(chosen_logps: Tensor, beta: float = 0.1) -> Tensor:
    """GRM's SFT regulariser ``-log σ(β · log π(y_c|x))``, mean over pairs (the GRM reference code's default).

    Args:
        chosen_logps: ``[B]`` log-prob of the chosen response, summed over its tokens.
        beta: β.
    """
    return -F.logsigmoid(beta * chosen_logps).mean()


def token_mean_nll(chosen_logps: Tensor, chosen_response_tokens: Tensor) -> Tensor:
    """Plain SFT: ``-(log π(y_c|x) / |y_c|)``, mean over pairs (per-token NLL of the chosen response).

    Args:
        chosen_logps: ``[B]`` summed log-prob of the chosen response.
        chosen_response_tokens: ``[B]`` number of response tokens (>= 1).
    """
    return -(chosen_logps / chosen_response_tokens.to(chosen_logps.dtype)).mean()


def grm_dpo_regularizer(chosen_logps: Tensor, rejected_logps: Tensor, beta: float = 0.1) -> Tensor:
    """Reference-free DPO ``-log σ(β (log π(y_c|x) - log π(y_r|x)))``, mean over pairs (GRM, DPO w/o reference).

    Args:
        chosen_logps: ``[B]`` summed log-prob of the chosen response.
        rejected_logps: ``[B]`` summed log-prob of the rejected response.
        beta: β.
    """
    return -F.logsigmoid(beta * (chosen_logps - rejected_logps)).mean()


def combine_reward_and_regularizer(
    reward_loss: Tensor, regularizer: Tensor, alpha: float, combine: str
) -> Tensor:
    """``(1-α)·L_reward + α·L_reg`` (``"convex"``, GRM's code) or ``L_reward + α·L_reg`` (``"additive"``)."""
    if combine == "convex":
        return (1.0 - alpha) * reward_loss + alpha * regularizer
    if combine == "additive":
        return reward_loss + alpha * regularizer
    raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")


def grm_sft_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    chosen_logps: Tensor,
    chosen_response_tokens: Tensor | None = None,
    alpha: float = 0.01,
    beta: float = 0.1,
    sft_form: str = "logsigmoid",
    combine: str = "convex",
) -> Tensor:
    """GRM with SFT regularisation (000 App. G.1; GRM Sec. 3.2). See the module docstring for the forms.

    Args:
        chosen_rewards: ``[B]`` reward-head output.
        rejected_rewards: ``[B]``.
        chosen_logps: ``[B]`` summed log-prob of the chosen response under the LM head.
        chosen_response_tokens: ``[B]`` response token counts; needed for ``sft_form="token_mean_nll"``.
        alpha: regularisation weight α.
        beta: β of the log-sigmoid form.
        sft_form: ``"logsigmoid"`` or ``"token_mean_nll"``.
        combine: ``"convex"`` or ``"additive"``.
    """
    if sft_form == "logsigmoid":
        regularizer = grm_sft_regularizer(chosen_logps, beta)
    elif sft_form == "token_mean_nll":
        if chosen_response_tokens is None:
            raise ValueError("sft_form='token_mean_nll' needs chosen_response_tokens")
        regularizer = token_mean_nll(chosen_logps, chosen_response_tokens)
    else:
        raise ValueError(f"sft_form must be one of {SFT_FORMS}, got {sft_form!r}")
    return combine_reward_and_regularizer(
        bt_loss(chosen_rewards, rejected_rewards), regularizer, alpha, combine
    )


def grm_dpo_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    alpha: float = 0.01,
    beta: float = 0.1,
    combine: str = "convex",
) -> Tensor:
    """GRM with reference-free DPO regularisation (000 App. G.1; GRM Sec. 3.2).

    Args:
        chosen_rewards: ``[B]`` reward-head output.
        rejected_rewards: ``[B]``.
        chosen_logps: ``[B]`` summed log-prob of the chosen response under the LM head.
        rejected_logps: ``[B]`` summed log-prob of the rejected response.
        alpha: regularisation weight α.
        beta: DPO β.
        combine: ``"convex"`` or ``"additive"``.
    """
    regularizer = grm_dpo_regularizer(chosen_logps, rejected_logps, beta)
    return combine_reward_and_regularizer(
        bt_loss(chosen_rewards, rejected_rewards), regularizer, alpha, combine
    )


def _check_options(name: str, alpha: float, combine: str) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"loss {name!r}: option alpha must be in [0, 1], got {alpha}")
    if combine not in COMBINES:
        raise ValueError(f"loss {name!r}: option combine must be one of {COMBINES}, got {combine!r}")


def _grm_sft(
    inputs: LossInputs,
    alpha: float = 0.01,
    beta: float = 0.1,
    sft_form: str = "logsigmoid",
    combine: str = "convex",
) -> LossResult:
    name = "grm_sft"
    _check_options(name, alpha, combine)
    if sft_form not in SFT_FORMS:
        raise ValueError(f"loss {name!r}: option sft_form must be one of {SFT_FORMS}, got {sft_form!r}")
    chosen, rejected = pair_rewards(inputs, name)
    size = chosen.numel()
    logps = as_float(check_vector(require(inputs, "chosen_logps", name), "chosen_logps", name, size))
    if sft_form == "token_mean_nll":
        tokens = check_vector(
            require(inputs, "chosen_response_tokens", name), "chosen_response_tokens", name, size
        )
        if bool((tokens < 1).any()):
            raise ValueError(f"loss {name!r}: LossInputs.chosen_response_tokens has a count < 1")
        regularizer = token_mean_nll(logps, tokens)
    else:
        regularizer = grm_sft_regularizer(logps, beta)
    reward = bt_loss(chosen, rejected)
    metrics = pairwise_metrics(chosen, rejected)
    metrics.update({"bt_loss": float(reward.detach()), "sft_regularizer": float(regularizer.detach())})
    return LossResult(combine_reward_and_regularizer(reward, regularizer, alpha, combine), metrics)


def _grm_dpo(
    inputs: LossInputs, alpha: float = 0.01, beta: float = 0.1, combine: str = "convex"
) -> LossResult:
    name = "grm_dpo"
    _check_options(name, alpha, combine)
    chosen, rejected = pair_rewards(inputs, name)
    size = chosen.numel()
    chosen_logps = as_float(check_vector(require(inputs, "chosen_logps", name), "chosen_logps", name, size))
    rejected_logps = as_float(
        check_vector(require(inputs, "rejected_logps", name), "rejected_logps", name, size)
    )
    regularizer = grm_dpo_regularizer(chosen_logps, rejected_logps, beta)
    reward = bt_loss(chosen, rejected)
    metrics = pairwise_metrics(chosen, rejected)
    with torch.no_grad():
        implicit = chosen_logps - rejected_logps
    metrics.update(
        {
            "bt_loss": float(reward.detach()),
            "dpo_regularizer": float(regularizer.detach()),
            "lm_accuracy": float((implicit > 0).float().mean()),
        }
    )
    return LossResult(combine_reward_and_regularizer(reward, regularizer, alpha, combine), metrics)


register_loss(
    "grm_sft",
    _grm_sft,
    {"pairs", "lm"},
    "GRM: (1-α)·BT + α·SFT regulariser -log σ(β log π(y_c)) through the kept LM head (000 App. G.1)",
    {"alpha": 0.01, "beta": 0.1, "sft_form": "logsigmoid", "combine": "convex"},
    {"sft_form": SFT_FORMS, "combine": COMBINES},
)
register_loss(
    "grm_dpo",
    _grm_dpo,
    {"pairs", "lm"},
    "GRM: (1-α)·BT + α·reference-free DPO -log σ(β(log π(y_c) - log π(y_r))) (000 App. G.1)",
    {"alpha": 0.01, "beta": 0.1, "combine": "convex"},
    {"combine": COMBINES},
)
