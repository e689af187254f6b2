"""The ArmoRM gate: prompt feature -> weights over the K attributes -> one gated reward.

004 Sec. 3.2: ``g_φ(f_θ(x))`` is a shallow ReLU MLP on the prompt's last-token hidden state whose
output goes through a softmax so the K coefficients are non-negative and sum to 1; the gated score
is ``R = g_φ(x)^T r'`` with ``r'`` the verbosity-debiased attribute rewards (Eq. 2-4), and a learnable
scale β (initialised at 100, Sec. 4) multiplies it in the BT loss. The reward this head returns is
``β · R``, the logit that BT training calibrated, so ``σ(G_chosen - G_rejected)`` is a probability.

The softmax is taken over the LAST axis, the attributes. (The public ArmoRM code normalised over
the chosen/rejected axis of a ``[B, 2, K]`` tensor instead, so its "weights" did not sum to 1 over
attributes; see docs/gating.md.)

The head itself lives with the other heads, in :mod:`smorm.models.heads` (registered as kind
``gate``, so a saved model rebuilds it like any head); this module keeps its names for the gating
recipe and for users.
"""

from smorm.models.gate_spec import GATE_HEAD, gate_spec
from smorm.models.heads import GatingHead, build_gate_head

__all__ = ["GATE_HEAD", "GatingHead", "build_gate_head", "gate_spec"]
