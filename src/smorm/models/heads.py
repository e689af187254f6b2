"""Reward heads: small modules that map the pooled hidden state ``[N, d]`` to scores.

Heads are registered by kind in ``HEADS`` so a config names them (``linear``, ``mlp``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

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


def build_head(kind: str, in_features: int, out_features: int, **options: int) -> nn.Module:
    """Instantiate a registered head kind."""
    return HEADS.get(kind)(in_features, out_features, **options)
