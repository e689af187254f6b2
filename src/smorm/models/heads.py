"""Reward heads: small modules that map the pooled hidden state ``[N, d]`` to scores.

Heads are registered by kind in ``HEADS`` so a config names them (``linear``, ``mlp``, ``gate``).
The gate (ArmoRM, 004 Sec. 3.2) is the one head that reads two inputs, the prompt feature and the
attribute rewards; :mod:`smorm.gating` trains it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from smorm.models.gate_spec import DEFAULT_BETA_INIT, DEFAULT_DROPOUT, DEFAULT_HIDDEN_SIZES, GATE_HEAD
from smorm.registry import HEADS


def init_head_weight(weight: torch.Tensor, in_features: int) -> None:
    """N(0, 1/(d+1)) initialisation of a reward head (as OpenRLHF/TRL value heads do)."""
    nn.init.normal_(weight, mean=0.0, std=1.0 / math.sqrt(in_features + 1))


@HEADS.register("linear", "a bias-free linear map d -> out (the paper's w_S / w_M)")
class LinearHead(nn.Module):
    """``w^T f``: the SMORM heads of Eq. 5 (000, Sec. 3) are plain linear maps without bias."""

    def __init__(self, in_features: int, out_features: int = 1) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, out_features, bias=False)
        init_head_weight(self.proj.weight, in_features)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``[N, d] -> [N, out]``."""
        return self.proj(pooled)

    @property
    def weight(self) -> torch.Tensor:
        """``[out, d]``."""
        return self.proj.weight


@HEADS.register("mlp", "Linear(d, 1024) -> ReLU -> Linear(1024, out), the GRM reward head (000 App. G)")
class MLPHead(nn.Module):
    """The GRM head variant of 000 App. G: Linear(d, 1024), ReLU, Linear(1024, 1)."""

    def __init__(self, in_features: int, out_features: int = 1, hidden: int = 1024) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden)
        self.out = nn.Linear(hidden, out_features)
        init_head_weight(self.hidden.weight, in_features)
        init_head_weight(self.out.weight, hidden)
        nn.init.zeros_(self.hidden.bias)
        nn.init.zeros_(self.out.bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``[N, d] -> [N, out]``."""
        return self.out(torch.relu(self.hidden(pooled)))

    @property
    def weight(self) -> torch.Tensor:
        return self.hidden.weight



class GatingHead(nn.Module):
    """ReLU MLP gate with a softmax over attributes, a debiasing transform and a scale β.

    004 Sec. 3.2: ``g_φ(f_θ(x))`` is a shallow ReLU MLP on the prompt's last-token hidden state whose
    output goes through a softmax (over the LAST axis, the attributes) so the K coefficients are
    non-negative and sum to 1; the gated score is ``R = g_φ(x)^T r'`` with ``r'`` the verbosity-debiased
    attribute rewards, and the head returns ``β · R``, the logit BT training calibrated. See
    :mod:`smorm.gating.head` for how this differs from the public ArmoRM code.

    Args:
        in_features: size d of the prompt feature.
        num_attributes: K, the multi head's outputs.
        hidden_sizes: widths of the hidden layers (004 Sec. 4: three layers of 1024).
        dropout: dropout after each hidden ReLU (training only).
        beta_init: initial value of the learnable scale β (004 Sec. 4: 100).

    Attributes:
        debias: ``[K, K]`` buffer T with ``r' = r @ T``; identity until debiasing sets it
            (:func:`smorm.gating.debias.debias_matrix`). Saved with the weights.
        active: ``[K]`` bool buffer, the attributes the gate may weigh; an inactive one gets weight 0
            (its logit is -inf before the softmax). Debiasing turns verbosity off: Eq. 3 makes its
            debiased reward identically 0, and a gate free to weigh a zero reward learns to abstain
            (G = 0 for every response, all pairs tied) whenever the other attributes are weak.
        beta: learnable scalar β.
    """

    def __init__(
        self,
        in_features: int,
        num_attributes: int,
        hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES,
        dropout: float = DEFAULT_DROPOUT,
        beta_init: float = DEFAULT_BETA_INIT,
    ) -> None:
        super().__init__()
        if num_attributes < 1:
            raise ValueError("a gate needs at least one attribute")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"gate dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_sizes:
            if int(hidden) < 1:
                raise ValueError(f"gate hidden sizes must be positive, got {list(hidden_sizes)}")
            layers += [nn.Linear(width, int(hidden)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(hidden)
        layers.append(nn.Linear(width, num_attributes))
        self.mlp = nn.Sequential(*layers)
        self.beta = nn.Parameter(torch.tensor(float(beta_init)))
        self.debias: torch.Tensor  # buffers, declared for the type checker (register_buffer sets them)
        self.active: torch.Tensor
        self.register_buffer("debias", torch.eye(num_attributes))
        self.register_buffer("active", torch.ones(num_attributes, dtype=torch.bool))
        self.num_attributes = num_attributes

    def set_active(self, active: Sequence[bool]) -> None:
        """Choose the attributes the gate may weigh (at least one)."""
        mask = torch.tensor([bool(a) for a in active], dtype=torch.bool)
        if mask.shape != self.active.shape or not bool(mask.any()):
            raise ValueError(f"the gate needs {self.num_attributes} flags with at least one attribute on, got {list(active)}")
        self.active.copy_(mask)

    def gate_weights(self, prompt_features: torch.Tensor) -> torch.Tensor:
        """``[N, d] -> [N, K]`` non-negative weights summing to 1 over the (active) attributes."""
        logits = self.mlp(prompt_features).masked_fill(~self.active, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def debiased(self, attribute_rewards: torch.Tensor) -> torch.Tensor:
        """``[N, K] -> [N, K]``: ``r' = r @ T`` (004 Eq. 2)."""
        return attribute_rewards @ self.debias.to(attribute_rewards.dtype)

    def forward(
        self, prompt_features: torch.Tensor, attribute_rewards: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gated reward and gate weights.

        Args:
            prompt_features: ``[N, d]`` hidden state at each row's last prompt token.
            attribute_rewards: ``[N, K]`` the multi head's output r for the same rows.

        Returns:
            ``gated [N] = β · Σ_i g_i(x) r_i'`` and ``weights [N, K]``.
        """
        if attribute_rewards.shape[-1] != self.num_attributes:
            raise ValueError(
                f"the gate was built for {self.num_attributes} attributes, got {attribute_rewards.shape[-1]}"
            )
        weights = self.gate_weights(prompt_features.to(self.beta.dtype))
        rewards = self.debiased(attribute_rewards.to(self.beta.dtype))
        return self.beta * (weights * rewards).sum(dim=-1), weights


@HEADS.register(GATE_HEAD, "ArmoRM gate: ReLU MLP on the prompt feature, softmax over the attributes, scale β (004 Sec. 3.2)")
def build_gate_head(in_features: int, num_attributes: int, **options: Any) -> GatingHead:
    """A :class:`GatingHead` from its config entry's options (unknown keys are an error, naming them)."""
    unknown = set(options) - {"hidden_sizes", "dropout", "beta_init"}
    if unknown:
        raise ValueError(f"heads.gate: unknown option(s) {sorted(unknown)} (known: hidden_sizes, dropout, beta_init)")
    return GatingHead(
        in_features,
        num_attributes,
        hidden_sizes=[int(h) for h in options.get("hidden_sizes", DEFAULT_HIDDEN_SIZES)],
        dropout=float(options.get("dropout", DEFAULT_DROPOUT)),
        beta_init=float(options.get("beta_init", DEFAULT_BETA_INIT)),
    )


def build_head(kind: str, in_features: int, out_features: int, **options: Any) -> nn.Module:
    """Instantiate a registered head kind."""
    return HEADS.get(kind)(in_features, out_features, **options)
