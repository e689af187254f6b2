"""``smorm gate``'s settings (004 Sec. 3.2, 4, App. A): the one place each option is declared.

Pydantic only, so the command line builds its flags without importing torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from smorm.models.gate_spec import DEFAULT_BETA_INIT, DEFAULT_DROPOUT, DEFAULT_HIDDEN_SIZES
from smorm.settings import DEVICE_HELP, Strict


class GateTrainOptions(Strict):
    """Gate training settings; the defaults are 004 App. A's (weight decay and dropout: public code's)."""

    steps: int = Field(10_000, ge=1, description="gate training steps (004 App. A: 10,000)")
    batch_size: int = Field(1024, ge=1, description="pairs per step, capped at the number of training pairs "
                            "(004 App. A: 1024)")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate, decayed to 0 by a cosine schedule "
                      "(004 App. A: 1e-3)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of the MLP weights (β is never decayed)")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="share of the pairs held out (seeded) to report "
                                "accuracy; 0 trains on all")
    seed: int = Field(0, description="seed of the split, the batch order, dropout and the gate's initial weights")
    log_every: int = Field(100, ge=1, description="steps between recorded losses")


class GatingOptions(Strict):
    """Everything ``smorm gate`` can set besides the run and the pairs (004 Sec. 3.2, 4, App. A)."""

    ratings: list[str] = Field(default_factory=list, description="rated responses PATH[:FORMAT] (repeat the "
                               "flag): refit the multi head by ridge first (stage 1)",
                               json_schema_extra={"flag": "--ratings"})
    reference: list[str] = Field(default_factory=list, description="reference set for verbosity debiasing, pairs "
                                 "or ratings PATH[:FORMAT] (default: the pairs)")
    limit: int | None = Field(None, ge=1, description="first N records of every source")
    verbosity: str = Field("verbosity", description="name of the verbosity attribute (004 Eq. 2)")
    debias: bool = Field(True, description="verbosity debiasing (004 Eq. 2-3)")
    debias_into: Literal["gate", "multi"] = Field(
        "gate", description="gate: keep the multi head as it is and store T in the gate, so F/L/M and the "
        "attribute outputs do not change; multi: fold w_i - λ_i w_v into a linear multi head")
    gate_verbosity: bool = Field(False, description="let the gate weigh the debiased verbosity attribute, which "
                                 "Eq. 3 makes 0 (off by default: that zero expert lets the gate abstain)")
    hidden_sizes: list[int] = Field(default_factory=lambda: list(DEFAULT_HIDDEN_SIZES),
                                    description="gate MLP hidden widths, comma-separated (004 Sec. 4: 3 x 1024)")
    dropout: float = Field(DEFAULT_DROPOUT, ge=0, lt=1, description="gate dropout")
    beta_init: float = Field(DEFAULT_BETA_INIT, gt=0, description="initial scale β (004: 100)")
    train: GateTrainOptions = Field(default_factory=GateTrainOptions, description="gate training (004 App. A)")
    ridge_val_fraction: float = Field(0.2, gt=0, lt=1, description="stage 1's α-selection split")
    ridge_seed: int = Field(0, description="seed of stage 1's split")
    batch_size: int = Field(16, ge=1, description="sequences per forward pass when caching features",
                            json_schema_extra={"flag": "--feature-batch-size"})
    bf16: bool = Field(False, description="bf16 autocast for the feature pass")
    device: str = Field("auto", description=DEVICE_HELP)
    cache_dir: str | None = Field(None, description="feature cache folder (default: RUN/cache/gating)")
    default_mode: Literal["F", "L", "M", "G"] = Field("G", description="default inference mode of the saved model")
    on_error: Literal["error", "skip"] = Field("error", description="bad records: error (stop with file:line) "
                                               "or skip (count them)")

    @field_validator("hidden_sizes", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """``"1024,1024"`` (or a list of such strings, as repeated flags give) -> ``[1024, 1024]``."""
        if isinstance(value, str | int):
            value = [value]
        if isinstance(value, list):
            return [part for item in value for part in (str(item).split(",") if isinstance(item, str) else [item])
                    if part != ""]
        return value


class GateSettings(GatingOptions):
    """``smorm gate``'s settings: the model, the pairs, where the gated model goes, and every option."""

    run: Path = Field(description="run folder or smorm model folder to put the gate on")
    pairs: list[str] = Field(min_length=1, description="preference pairs PATH[:FORMAT] to train the gate on "
                             "(repeat the flag)", json_schema_extra={"flag": "--pairs"})
    out: Path | None = Field(None, description="write the gated model here (default: replace RUN's model "
                             "atomically)")


