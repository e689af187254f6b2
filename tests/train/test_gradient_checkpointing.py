"""train.gradient_checkpointing: same losses and weights as without it, activations recomputed in backward."""

from __future__ import annotations

import pytest
import torch

from smorm.train.config import RunConfig
from smorm.train.trainer import Trainer
from tests.train.helpers import tiny_config


def run(tmp_path, backbone, **train):
    trainer = Trainer(RunConfig.model_validate(tiny_config(tmp_path, backbone, steps=2, seed=3, **train)),
                      show_progress=False)
    trainer.setup()
    result = trainer.train()
    weights = {n: p.detach().clone() for n, p in trainer.model_unwrapped.named_parameters()}
    return trainer, result, weights


def checkpointed_layers(trainer) -> int:
    return sum(bool(getattr(layer, "gradient_checkpointing", False)) for layer in trainer.model_unwrapped.backbone.layers)


@pytest.mark.parametrize("trunk", ["full", "top_k"])
def test_checkpointing_changes_memory_not_results(tmp_path, tiny_llama_dir, trunk):
    plain, plain_result, plain_weights = run(tmp_path / "plain", tiny_llama_dir, trunk=trunk)
    checked, checked_result, checked_weights = run(tmp_path / "checked", tiny_llama_dir, trunk=trunk,
                                                   gradient_checkpointing=True)
    assert checkpointed_layers(checked) == len(checked.model_unwrapped.backbone.layers) > 0
    assert checkpointed_layers(plain) == 0
    assert checked_result.final_metrics["loss"] == pytest.approx(plain_result.final_metrics["loss"], abs=1e-5)
    for name, value in plain_weights.items():
        torch.testing.assert_close(checked_weights[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_checkpointing_a_frozen_trunk_is_refused(tmp_path, tiny_llama_dir):
    trainer = Trainer(RunConfig.model_validate(tiny_config(tmp_path, tiny_llama_dir, trunk="frozen",
                                                           gradient_checkpointing=True)), show_progress=False)
    with pytest.raises(ValueError, match="trunk frozen trains heads only"):
        trainer.setup()
