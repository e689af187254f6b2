"""Saving under DeepSpeed ZeRO-3 / FSDP: the trainer writes the gathered full state dict.

accelerate enters FSDP and DeepSpeed only on GPUs, so here the accelerator is faked where it
decides (its distributed type, its get_state_dict); tests/train/test_sharded_cpu.py shards a model
for real with torch FSDP2 and DeepSpeed ZeRO-2/3 on two CPU processes.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from smorm.models.reward_model import RewardModel
from smorm.train import checkpoint as ckpt
from smorm.train import sharding
from smorm.train.config import RunConfig, TrainConfig
from smorm.train.trainer import Trainer
from tests.train.helpers import tiny_config


def fake_accelerator(kind: DistributedType, zero_stage: int = 0) -> SimpleNamespace:
    return SimpleNamespace(distributed_type=kind,
                           state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=zero_stage)))


@pytest.mark.parametrize(("kind", "stage", "weights", "optimizer"), [
    (DistributedType.NO, 0, False, False),
    (DistributedType.MULTI_GPU, 0, False, False),
    (DistributedType.MULTI_CPU, 0, False, False),
    (DistributedType.DEEPSPEED, 2, False, True),
    (DistributedType.DEEPSPEED, 3, True, True),
    (DistributedType.FSDP, 0, True, True),
])
def test_what_is_sharded_under_each_setup(kind, stage, weights, optimizer):
    accelerator = fake_accelerator(kind, stage)
    assert sharding.weights_are_sharded(accelerator) is weights
    assert sharding.optimizer_is_sharded(accelerator) is optimizer


def run_config(tmp_path, tiny_llama_dir, **train) -> RunConfig:
    return RunConfig.model_validate(tiny_config(tmp_path, tiny_llama_dir, **train))


def test_lora_is_refused_before_training_when_weights_are_sharded(tmp_path, tiny_llama_dir):
    config = run_config(tmp_path, tiny_llama_dir, trunk="lora")
    with pytest.raises(ValueError, match="trunk=lora cannot be saved"):
        sharding.check_run(fake_accelerator(DistributedType.FSDP), config)
    sharding.check_run(fake_accelerator(DistributedType.DEEPSPEED, 2), config)  # ZeRO-2 keeps whole weights


def test_sharded_optimizer_turns_checkpoints_off_and_refuses_to_resume(tmp_path, tiny_llama_dir, caplog):
    config = run_config(tmp_path, tiny_llama_dir, checkpoint_every=2)
    with caplog.at_level(logging.WARNING, logger="smorm.train.sharding"):
        sharding.check_run(fake_accelerator(DistributedType.DEEPSPEED, 2), config)
    assert "checkpoint_every=2 is ignored" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="smorm.train.sharding"):
        sharding.check_run(fake_accelerator(DistributedType.MULTI_GPU), config)
    assert not caplog.text  # DDP checkpoints as before
    ckpt.write_checkpoint(tmp_path / "run" / "checkpoints", 2, {"trainable": {}}, {}, keep=1)
    with pytest.raises(ValueError, match="cannot resume under DeepSpeed or FSDP"):
        sharding.check_run(fake_accelerator(DistributedType.FSDP), config)


def test_trainer_saves_what_the_gather_returns_when_weights_are_sharded(tmp_path, tiny_llama_dir, monkeypatch):
    # Under ZeRO-3/FSDP the module's own tensors are shards; the trainer must write the full state
    # dict accelerate gathers. The fake gather returns the real weights plus a known offset, so
    # the saved folder shows which of the two was written.
    config = run_config(tmp_path, tiny_llama_dir, steps=2, checkpoint_every=1)
    trainer = Trainer(config, show_progress=False)
    trainer.setup()
    gathered: dict[str, torch.Tensor] = {}
    calls: list[object] = []

    def get_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        calls.append(model)
        own = trainer.accelerator.unwrap_model(model).state_dict()
        gathered.update({k: v.detach().clone() + 0.5 for k, v in own.items()})
        return gathered

    monkeypatch.setattr(sharding, "weights_are_sharded", lambda accelerator: True)
    monkeypatch.setattr(trainer.accelerator, "get_state_dict", get_state_dict)
    result = trainer.train()
    assert calls == [trainer.model]  # once, at the end, with the prepared model
    loaded = RewardModel.from_pretrained(result.model_dir)
    assert loaded.state_dict().keys() == gathered.keys()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, gathered[name]), name
    # the weights are not sharded for real here (one process), so checkpoints stay on
    assert ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints") is not None


def test_trainer_saves_the_modules_own_weights_when_they_are_whole(tmp_path, tiny_llama_dir, monkeypatch):
    config = run_config(tmp_path, tiny_llama_dir, steps=1)
    trainer = Trainer(config, show_progress=False)
    trainer.setup()

    def refuse(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        raise AssertionError("get_state_dict called although the weights are whole")

    monkeypatch.setattr(trainer.accelerator, "get_state_dict", refuse)
    result = trainer.train()
    loaded = RewardModel.from_pretrained(result.model_dir)
    own = trainer.model_unwrapped.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, own[name]), name


def deepspeed_accelerator(ds_config: dict, processes: int) -> SimpleNamespace:
    plugin = SimpleNamespace(zero_stage=2, deepspeed_config=ds_config)
    return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, num_processes=processes,
                           state=SimpleNamespace(deepspeed_plugin=plugin))


def test_deepspeed_engine_is_sized_from_the_run_config(caplog):
    train = TrainConfig(pair_batch_size=16, grad_accum=3, max_grad_norm=0.5)
    ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
          "gradient_clipping": 1.0, "zero_optimization": {"stage": 2}}
    with caplog.at_level(logging.WARNING):
        sharding.configure_deepspeed(deepspeed_accelerator(ds, processes=4), train)
    # 16 pairs per micro-batch over 4 processes = 4 each; 4 * 3 micro-batches * 4 processes = 48
    assert ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["train_batch_size"] == 48
    assert ds["gradient_clipping"] == 0.5
    assert "gradient_clipping=1.0 overridden by the run config: 0.5" in caplog.text
    assert "micro_batch" not in caplog.text  # 'auto' is filled silently
    unclipped = TrainConfig(max_grad_norm=None)
    ds = {}
    sharding.configure_deepspeed(deepspeed_accelerator(ds, processes=1), unclipped)
    assert ds["gradient_clipping"] == 0.0  # DeepSpeed's "do not clip"
    with pytest.raises(ValueError, match="names an optimizer or scheduler"):
        sharding.configure_deepspeed(deepspeed_accelerator({"optimizer": {"type": "Adam"}}, 1), train)
    untouched: dict = {}
    other = SimpleNamespace(distributed_type=DistributedType.FSDP, num_processes=2,
                            state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=untouched)))
    sharding.configure_deepspeed(other, train)
    assert untouched == {}


def test_backward_leaves_the_averaging_and_the_step_to_the_deepspeed_engine():
    calls = []
    engine = SimpleNamespace(backward=lambda loss, sync_gradients: calls.append((float(loss), sync_gradients)))
    ds = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, deepspeed_engine_wrapped=engine)
    sharding.backward(ds, torch.tensor(6.0), grad_accum=3, sync=False)
    sharding.backward(ds, torch.tensor(3.0), grad_accum=3, sync=True)
    assert calls == [(6.0, False), (3.0, True)]  # raw losses: the engine divides by its accumulation steps
    plain = SimpleNamespace(distributed_type=DistributedType.MULTI_GPU, backward=lambda loss: calls.append(float(loss)))
    sharding.backward(plain, torch.tensor(6.0), grad_accum=3, sync=True)
    assert calls[-1] == 2.0
