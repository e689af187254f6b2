"""``smorm serve``'s settings: the one place each server option is declared (pydantic only, no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from smorm.settings import DEVICE_HELP, Strict


class ServeSettings(Strict):
    """How the server runs and what it accepts."""

    host: str = Field("127.0.0.1", description="interface to bind; loopback unless you mean to expose it")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    mode: str | None = Field(None, description="default mode F, L, M or G (default: the model's)")
    max_batch_size: int = Field(16, ge=1, description="most sequences per forward pass")
    max_wait_ms: float = Field(5.0, ge=0, description="how long the worker waits to fill a batch after the "
                               "first request arrives")
    max_queue: int = Field(1024, ge=1, description="most sequences waiting at once; more -> 503")
    max_body_bytes: int = Field(1 << 20, ge=1, description="largest request body; more -> 413")
    max_items: int = Field(64, ge=1, description="most items (or queries) per request; more -> 422")
    max_item_tokens: int | None = Field(None, ge=2, description="most tokens per item; more -> 422 "
                                        "(default: the model's max_length)")
    request_timeout_s: float = Field(120.0, gt=0, description="longest wait for a request's scores; more -> 504")
    device: str = Field("auto", description=DEVICE_HELP)
    token: str | None = Field(None, description="bearer token required on every endpoint but /health "
                              "(better: the SMORM_SERVE_TOKEN variable, which the command line reads)")

    @model_validator(mode="after")
    def _consistent(self) -> ServeSettings:
        if self.max_items > self.max_queue:
            raise ValueError(
                f"max_items ({self.max_items}) exceeds max_queue ({self.max_queue}): a full-size request could never be queued"
            )
        if self.token is not None and not self.token.strip():
            raise ValueError("the bearer token is empty; give a real token or none")
        return self


class ServeCommand(ServeSettings):
    """``smorm serve``'s settings: the model to serve and how."""

    run: Path = Field(description="what to serve: a run folder, smorm model folder, composite folder (ensemble, "
                      "Baseline SM) or Hugging Face sequence-classification reward model (folder or hub id; mode F)")
    hf: bool | None = Field(None, description="RUN is a Hugging Face AutoModelForSequenceClassification (mode F) "
                            "/ a smorm model (default: detected)", json_schema_extra={"flag": "--hf/--smorm"})
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = Field(
        "info", description="uvicorn log level")
