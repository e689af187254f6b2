"""Train a seed ensemble: the same config k times with ``train.seed`` = each seed (000 App. G.1: three seeds).

The ensemble folder (default ``<output_dir>-ensemble``, so it never mixes with a plain run of the same
config) holds ``smorm_composite.json`` (see :mod:`smorm.models.composite`) and the members in
``seed-<s>/``. A member whose run finished with the
same config is not trained again, and an interrupted member resumes from its checkpoints, so
re-running the command completes an ensemble.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from smorm.io import read_json
from smorm.train.config import RunConfig, load_config

logger = logging.getLogger(__name__)


def member_configs(config_path: str | Path, seeds: Sequence[int], overrides: Sequence[str] = (),
                   out: str | Path | None = None) -> tuple[Path, list[RunConfig]]:
    """The ensemble folder and one validated config per seed (all checked before any training)."""
    if len(seeds) < 2:
        raise ValueError(f"an ensemble needs at least 2 seeds, got {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must differ, got {list(seeds)}")
    base = load_config(config_path, list(overrides))
    folder = Path(out) if out is not None else Path(f"{base.output_dir.rstrip('/')}-ensemble")
    configs = [
        load_config(config_path, [*overrides, f"train.seed={seed}", f"output_dir={folder / f'seed-{seed}'}"])
        for seed in seeds
    ]
    return folder, configs


def finished(config: RunConfig) -> bool:
    """True if ``config``'s run folder holds a finished model trained with exactly this config.

    Raises:
        ValueError: the folder holds a finished run of a different config (it would be overwritten).
    """
    run = Path(config.output_dir)
    saved = run / "config.json"
    if not ((run / "model" / "smorm_config.json").is_file() and saved.is_file()):
        return False
    # read through the model, so a key added since (with its default) does not make the run "different"
    if json.loads(RunConfig.model_validate(read_json(saved)).model_dump_json()) != json.loads(config.model_dump_json()):
        raise ValueError(
            f"{run} holds a finished run with a different config; use another output_dir or delete the folder"
        )
    return True


def train_ensemble(config_path: str | Path, seeds: Sequence[int], overrides: Sequence[str] = (),
                   combine: str = "mean", mode: str | None = None, out: str | Path | None = None,
                   show_progress: bool = True, uwo_lambda: float | None = None) -> Path:
    """Train one member per seed, then write the ensemble folder; returns its path.

    ``combine`` and ``uwo_lambda`` (``uwo`` only, Coste et al. 2024 Sec. 3) are checked before any training.
    """
    from smorm.models.composite import check_combine, write_ensemble
    from smorm.train.trainer import train

    check_combine(combine, uwo_lambda, "smorm ensemble")
    folder, configs = member_configs(config_path, seeds, overrides, out)
    for seed, config in zip(seeds, configs, strict=True):
        if finished(config):
            logger.info("seed %s: already trained in %s", seed, config.output_dir)
            continue
        train(config, show_progress=show_progress)
    members = [Path(config.output_dir) / "model" for config in configs]
    write_ensemble(folder, members, combine=combine, mode=mode, roles=[f"seed-{seed}" for seed in seeds],
                   uwo_lambda=uwo_lambda)
    return folder
