"""Experiment trackers (TensorBoard, Weights & Biases, MLflow) through accelerate, each optional.

``metrics.jsonl`` in the run folder is always written; ``train.report_to`` sends the same rows to
trackers as well. Weights & Biases and MLflow are set up the way their users expect, by their own
environment variables (``WANDB_ENTITY``, ``WANDB_MODE``, ``MLFLOW_TRACKING_URI``, ...).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PROJECT_NAME = "smorm"  # wandb project / mlflow experiment; TensorBoard's subfolder of tensorboard/
TENSORBOARD_DIR = "tensorboard"
TRACKER_PACKAGES: dict[str, tuple[str, ...]] = {
    # accelerate's TensorBoard tracker falls back to tensorboardX when tensorboard is missing
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
}

Scalar = bool | int | float | str


def check_tracker_packages(report_to: Sequence[str]) -> None:
    """Refuse, before anything loads, a tracker whose package is not installed.

    accelerate itself only drops such a tracker with a debug message, so the run would go on
    without the metrics the user asked for.
    """
    for name in report_to:
        if not any(importlib.util.find_spec(module) for module in TRACKER_PACKAGES[name]):
            raise ValueError(f"train.report_to: {name} needs the {name} package: pip install {name}")


def accelerator_kwargs(report_to: Sequence[str], output_dir: Path) -> dict[str, Any]:
    """``Accelerator(**kwargs)`` arguments that route ``accelerator.log`` to the chosen trackers."""
    from accelerate.utils import ProjectConfiguration

    project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / TENSORBOARD_DIR))
    return {"log_with": list(report_to) or None, "project_config": project}


def flat_scalars(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """``{"train": {"lr": 1e-5}, "losses": [{"name": "bt"}]}`` -> ``{"train.lr": 1e-5, "losses.0.name": "bt"}``.

    Trackers take hyperparameters as flat scalars only; ``None`` is dropped (TensorBoard rejects it).
    """
    flat: dict[str, Scalar] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_scalars(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat.update(flat_scalars({str(i): item for i, item in enumerate(value)}, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat


def tracker_init_kwargs(run_name: str, start_step: int) -> dict[str, dict[str, Any]]:
    """Per-tracker options: the run is named after its folder; a resumed run continues at ``start_step``.

    TensorBoard hides events past the resumed step (the interrupted run logged them before it died,
    and they are logged again), as metrics.jsonl drops those lines. A resumed wandb or MLflow run
    is a new run starting at that step, unless ``WANDB_RUN_ID``/``WANDB_RESUME`` or ``MLFLOW_RUN_ID``
    name the old one.
    """
    kwargs: dict[str, dict[str, Any]] = {"wandb": {"name": run_name}, "mlflow": {"run_name": run_name}}
    if start_step > 0:
        kwargs["tensorboard"] = {"purge_step": start_step + 1}
    return kwargs


def start_trackers(accelerator: Any, report_to: Sequence[str], run_config: Mapping[str, Any],
                   output_dir: Path, start_step: int) -> None:
    """Start the trackers on the main process, with the run config as hyperparameters."""
    # Only the main process logs; accelerate's wandb tracker would otherwise open one run per process.
    if not report_to or not accelerator.is_main_process:
        return
    accelerator.init_trackers(PROJECT_NAME, config=flat_scalars(run_config),
                              init_kwargs=tracker_init_kwargs(output_dir.name, start_step))
    started = {tracker.name for tracker in accelerator.trackers}
    missing = [name for name in report_to if name not in started]
    if missing:
        raise RuntimeError(f"train.report_to: accelerate did not start {', '.join(missing)}; "
                           "is the package importable in this environment?")


def log_metrics(accelerator: Any, metrics: Mapping[str, float], step: int) -> None:
    """Send one metrics row to the trackers; ``step`` is their x axis, so not a series of its own."""
    if accelerator.trackers:
        accelerator.log({key: value for key, value in metrics.items() if key != "step"}, step=step)


def finish_trackers(accelerator: Any) -> None:
    """Close the trackers (flushes TensorBoard, ends the wandb / MLflow run).

    Not ``accelerator.end_training()``: it also destroys the process group, which the next Trainer
    in this process (the members of an ensemble, under a distributed launch) still needs.
    """
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()
