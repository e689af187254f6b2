"""Every loss from the papers, one pure function each, registered by name in ``smorm.registry.LOSSES``.

Importing this package registers: ``bt``, ``margin``, ``label_smoothing``, ``hinge``, ``bt_norm``,
``bt_dr`` (pairwise), ``bsr``, ``center`` (centering), ``regression`` (ratings), ``grm_sft``,
``grm_dpo`` (LM-head regularised), ``odin`` (length-disentangled), ``more`` (multi-source) and
``plackett_luce`` (listwise, over ranked lists).
SMORM itself is ``bt`` on D_S plus ``regression`` on D_M, combined with weights in the config.
"""

from smorm.losses import centering, grm, listwise, more, odin, pairwise, regression  # noqa: F401  (registers the losses)
from smorm.losses.base import LossDef, LossInputs, LossResult, get_loss, validate_options
from smorm.losses.centering import bsr_loss, center_loss
from smorm.losses.grm import grm_dpo_loss, grm_sft_loss
from smorm.losses.listwise import plackett_luce_loss
from smorm.losses.more import min_norm_weights, more_loss
from smorm.losses.odin import odin_loss, pearson_correlation
from smorm.losses.pairwise import (
    bt_dr_loss,
    bt_loss,
    bt_norm_loss,
    hinge_loss,
    label_smoothing_loss,
    margin_loss,
)
from smorm.losses.regression import regression_loss

__all__ = [
    "LossDef",
    "LossInputs",
    "LossResult",
    "get_loss",
    "validate_options",
    "bt_loss",
    "margin_loss",
    "label_smoothing_loss",
    "hinge_loss",
    "bt_norm_loss",
    "bt_dr_loss",
    "bsr_loss",
    "center_loss",
    "regression_loss",
    "grm_sft_loss",
    "grm_dpo_loss",
    "odin_loss",
    "pearson_correlation",
    "more_loss",
    "min_norm_weights",
    "plackett_luce_loss",
]
