"""train.report_to: metrics go to TensorBoard / wandb / MLflow through accelerate, each optional."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from smorm.train.config import RunConfig, TrainConfig, load_config
from smorm.train.tracking import PROJECT_NAME, TENSORBOARD_DIR, flat_scalars, tracker_init_kwargs
from smorm.train.trainer import Trainer, train
from tests.train.helpers import tiny_config, write_config


def test_report_to_takes_a_name_a_list_or_none():
    assert TrainConfig().report_to == []
    assert TrainConfig(report_to="wandb").report_to == ["wandb"]
    assert TrainConfig(report_to="none").report_to == []
    assert TrainConfig(report_to=None).report_to == []
    assert TrainConfig(report_to=["tensorboard", "mlflow", "tensorboard"]).report_to == ["tensorboard", "mlflow"]
    with pytest.raises(ValueError, match="'tensorboard', 'wandb' or 'mlflow'"):
        TrainConfig(report_to=["tensorbord"])


@pytest.fixture
def without_wandb(monkeypatch):
    """wandb looks uninstalled (and every other package looks as it is)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))


def test_a_tracker_whose_package_is_missing_is_refused_before_the_model_loads(
        without_wandb, tiny_llama_dir, tmp_path, monkeypatch):
    raw = tiny_config(tmp_path, tiny_llama_dir)
    raw["train"]["report_to"] = "wandb"
    message = "train.report_to: wandb needs the wandb package: pip install wandb"
    with pytest.raises(ValueError, match=message):
        load_config(write_config(tmp_path, raw))
    # a saved run config still loads (eval and the RL lab read them back) ...
    config = RunConfig.model_validate(raw)
    import smorm.models.backbone

    def no_loading(*args, **kwargs):
        raise AssertionError("the backbone was loaded before the tracker check")

    monkeypatch.setattr(smorm.models.backbone, "load_backbone", no_loading)
    # ... and training it refuses before any model loads
    with pytest.raises(ValueError, match=message):
        Trainer(config).setup()


def test_flat_scalars_names_nested_values_by_dotted_paths():
    tree = {"train": {"lr": 1e-5, "cache_dir": None, "report_to": ["tensorboard"]},
            "losses": [{"name": "bt", "options": {}}], "method": "smorm", "model": {"trust_remote_code": False}}
    assert flat_scalars(tree) == {"train.lr": 1e-5, "train.report_to.0": "tensorboard", "losses.0.name": "bt",
                                  "method": "smorm", "model.trust_remote_code": False}


def test_a_resumed_tensorboard_run_hides_the_events_past_the_resumed_step():
    assert "tensorboard" not in tracker_init_kwargs("run", 0)
    assert tracker_init_kwargs("run", 4)["tensorboard"] == {"purge_step": 5}
    assert tracker_init_kwargs("run", 4)["wandb"] == {"name": "run"}


def scalars(folder, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_tensorboard_gets_the_metrics_of_metrics_jsonl_and_a_resumed_run_continues(tiny_llama_dir, tmp_path):
    raw = tiny_config(tmp_path, tiny_llama_dir, steps=3, checkpoint_every=2, report_to=["tensorboard"])
    config = RunConfig.model_validate(raw)
    train(config, show_progress=False)
    run = tmp_path / "run"
    events = run / TENSORBOARD_DIR / PROJECT_NAME
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [step for step, _ in scalars(events, "loss")] == [1, 2, 3]
    for (step, value), row in zip(scalars(events, "loss"), logged):
        assert step == row["step"] and value == pytest.approx(row["loss"], rel=1e-6)
    assert [step for step, _ in scalars(events, "lr")] == [1, 2, 3]
    hparams = list((run / TENSORBOARD_DIR / PROJECT_NAME).glob("*/hparams.yml"))
    assert len(hparams) == 1 and yaml.safe_load(hparams[0].read_text())["train.report_to.0"] == "tensorboard"

    # the same run again resumes from step 2's checkpoint: step 3 is logged again, once, not twice
    train(config, show_progress=False)
    assert [step for step, _ in scalars(events, "loss")] == [1, 2, 3]
    assert len(list(events.glob("events.out.tfevents.*"))) == 2
