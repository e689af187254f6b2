"""The ArmoRM gate: prompt feature -> weights over the K attributes -> one gated reward.

004 Sec. 3.2: ``g_φ(f_θ(x))`` is a shallow ReLU MLP on the prompt's last-token hidden state whose
output goes through a softmax so the K coefficients are non-negative and sum to 1; the gated score
is ``R = g_φ(x)^T r'`` with ``r'`` the verbosity-debiased attribute rewards (Eq. 2-4), and a learnable
scale β (initialised at 100, Sec. 4) multiplies it in the BT loss. The reward this head returns is
``β · R``, the logit that BT training calibrated, so ``σ(G_chosen - G_rejected)`` is a probability.

The softmax is taken over the LAST axis, the attributes. (The public ArmoRM code normalised over
the chosen/rejected axis of a ``[B, 2, K]`` tensor instead, so its "weights" did not sum to 1 over
attributes; see docs/gating.md.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from smorm.gating.settings import DEFAULT_BETA_INIT, DEFAULT_DROPOUT, DEFAULT_HIDDEN_SIZES

GATE_HEAD = "gate"


class GatingHead(nn.Module):
    """ReLU MLP gate with a softmax over attributes, a debiasing transform and a scale β.

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


def gate_spec(
    hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES,
    dropout: float = DEFAULT_DROPOUT,
    beta_init: float = DEFAULT_BETA_INIT,
) -> dict[str, object]:
    """The ``heads["gate"]`` entry of ``smorm_config.json`` that rebuilds this head."""
    return {"kind": GATE_HEAD, "hidden_sizes": [int(h) for h in hidden_sizes], "dropout": float(dropout),
            "beta_init": float(beta_init)}


def build_gate_head(in_features: int, num_attributes: int, spec: dict[str, object]) -> GatingHead:
    """A :class:`GatingHead` from its config entry (unknown keys are an error, naming them)."""
    options = {k: v for k, v in spec.items() if k not in ("kind", "out")}
    unknown = set(options) - {"hidden_sizes", "dropout", "beta_init"}
    if unknown:
        raise ValueError(f"heads.gate: unknown option(s) {sorted(unknown)} (known: hidden_sizes, dropout, beta_init)")
    return GatingHead(
        in_features,
        num_attributes,
        hidden_sizes=[int(h) for h in options.get("hidden_sizes", DEFAULT_HIDDEN_SIZES)],  # type: ignore[union-attr]
        dropout=float(options.get("dropout", DEFAULT_DROPOUT)),  # type: ignore[arg-type]
        beta_init=float(options.get("beta_init", DEFAULT_BETA_INIT)),  # type: ignore[arg-type]
    )
