"""Reading a run config: a YAML file, ``key=value`` overrides, data paths resolved, validated.

The typed models themselves (:class:`RunConfig` and its sections) live in :mod:`smorm.run_config`,
below both training and evaluation, and are importable from here as well. ``key=value`` overrides
use dotted paths (``train.lr=1e-5``, ``data.pairs.0.limit=100``) and YAML 1.2 values
(:mod:`smorm.settings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smorm.run_config import (
    BenchConfig,
    DataConfig,
    DataSource,
    EvalConfig,
    HeadConfig,
    LoraOptions,
    LossConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from smorm.settings import apply_overrides, load_mapping, validate_settings
from smorm.train.tracking import check_tracker_packages

__all__ = ["BenchConfig", "DataConfig", "DataSource", "EvalConfig", "HeadConfig", "LoraOptions", "LossConfig", "ModelConfig", "RunConfig", "TrainConfig", "load_config"]


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config, apply ``key=value`` overrides, resolve data paths, validate.

    Relative data and benchmark paths are resolved against the config file's folder, so a config
    runs from any working directory.
    """
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        raw = load_mapping(path)
        base = Path(path).resolve().parent
    apply_overrides(raw, overrides)
    resolve_paths(raw, base)
    config = validate_settings(RunConfig, raw, where=str(path or "config"))
    # Here, not in a validator: a saved run config must still load where its trackers are not installed.
    check_tracker_packages(config.train.report_to)
    return config


def resolve_path(path: str, base: Path) -> str:
    """``path`` against ``base`` unless it is absolute or an ``hf:`` reference."""
    if path.startswith("hf:") or Path(path).is_absolute():
        return path
    return str((base / path).resolve())


def resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Relative data, benchmark and ``./`` backbone paths of a raw run config, made absolute against ``base``."""
    data = raw.get("data") or {}
    for key in ("pairs", "ratings", "exclude_prompts_of"):
        for source in data.get(key) or []:
            if isinstance(source, dict) and isinstance(source.get("path"), str):
                source["path"] = resolve_path(source["path"], base)
    for bench in (raw.get("eval") or {}).get("benches") or []:
        if isinstance(bench, dict) and isinstance(bench.get("path"), str):
            bench["path"] = resolve_path(bench["path"], base)
    backbone = (raw.get("model") or {}).get("backbone")
    if isinstance(backbone, str) and (backbone.startswith("./") or backbone.startswith("../")):
        raw["model"]["backbone"] = resolve_path(backbone, base)
