"""``smorm eval``'s settings: the one place each of its options is declared (flags come from here)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from smorm.settings import DEVICE_HELP, Strict


class EvalSettings(Strict):
    """What ``smorm eval`` evaluates, on what, and how (recorded in ``report.json``)."""

    run: str = Field(description="run folder, smorm model folder, or a Hugging Face sequence-classification "
                     "reward model (folder or hub id)")
    benches: list[str] = Field(default_factory=list, description="KIND:PATH[:LIMIT] with KIND reward-bench | "
                               "rm-bench | pairs | ranked (repeat the flag); default: the run's own eval.benches",
                               json_schema_extra={"flag": "--bench"})
    out: Path | None = Field(None, description="report folder (default: RUN, or runs/eval/ID for a hub id)")
    sample: int | None = Field(None, ge=1, description="score a seeded random N items of each benchmark")
    seed: int = Field(0, description="seed of --sample")
    batch_size: int = Field(16, ge=1, description="sequences per forward pass")
    bf16: bool = Field(False, description="bf16 autocast (faster; rewards then vary slightly with batch size)")
    modes: list[Literal["F", "L", "M", "G"]] = Field(
        default_factory=list, description="only these modes (repeat the flag; default: every mode the model has)",
        json_schema_extra={"flag": "--mode"})
    hf: bool | None = Field(None, description="RUN is a Hugging Face AutoModelForSequenceClassification (mode F) "
                            "/ a smorm model (default: detected)", json_schema_extra={"flag": "--hf/--smorm"})
    device: str = Field("auto", description=DEVICE_HELP)
    max_length: int | None = Field(None, ge=8, description="token budget per sequence (default: the model's)")
    on_error: Literal["error", "skip"] | None = Field(
        None, description="structurally broken benchmark rows (missing fields, wrong types): error stops at "
        "file:line, skip counts them in the report (default: each benchmark's own on_error, else error); a "
        "blank response is never an error in a benchmark, it is scored and counted")
    theory: bool = Field(False, description="check Theorem 1 (000 App. C.2) on the run's own D_S and D_M "
                         "(read from RUN/config.json)")
    theory_sample: int = Field(200, ge=2, description="pairs and rated responses sampled for --theory")
    theory_seed: int = Field(0, description="seed of the --theory sample")
    theory_ridge: float = Field(1e-3, ge=0, description="ridge on the second moments, relative to "
                                "trace(Sigma_S)/d (0: none)")
