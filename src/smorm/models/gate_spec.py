"""The gate head's entry in ``smorm_config.json`` and its defaults, without torch.

``smorm gate``'s settings (:mod:`smorm.gating.settings`) take their defaults from here, and the
command line builds its flags without importing torch; the head itself is
:class:`smorm.models.heads.GatingHead`.
"""

from __future__ import annotations

from collections.abc import Sequence

GATE_HEAD = "gate"  # the head's name in RewardModel.heads, and its kind in HEADS

# 004 Sec. 4: three hidden layers of 1024; the released code's dropout; β's initial value.
DEFAULT_HIDDEN_SIZES = (1024, 1024, 1024)
DEFAULT_DROPOUT = 0.2
DEFAULT_BETA_INIT = 100.0


def gate_spec(
    hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES,
    dropout: float = DEFAULT_DROPOUT,
    beta_init: float = DEFAULT_BETA_INIT,
) -> dict[str, object]:
    """The ``heads["gate"]`` entry of ``smorm_config.json`` that rebuilds this head."""
    return {"kind": GATE_HEAD, "hidden_sizes": [int(h) for h in hidden_sizes], "dropout": float(dropout),
            "beta_init": float(beta_init)}
