"""Every method config in configs/methods trains a few steps on a tiny random Llama.

The config's method (losses, options, heads, LM head, source balancing) is kept as shipped; only
the backbone, the data and the sizes are swapped for tiny ones. Every logged loss must be finite
and every trainable parameter must change.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from smorm.train.config import RunConfig
from smorm.train.trainer import Trainer
from tests.methods.helpers import shrink

REPO = Path(__file__).resolve().parents[2]
METHOD_CONFIGS = sorted((REPO / "configs" / "methods").glob("*.yaml"))


def test_a_config_for_every_method_of_the_issue():
    names = {p.stem for p in METHOD_CONFIGS}
    assert names >= {"bsr", "center", "margin", "label_smoothing", "hinge", "bt_norm", "bt_dr", "grm_sft",
                     "grm_dpo", "grm_sft_mlp", "grm_dpo_mlp", "odin", "more"}


def train_tiny(path: Path, folder: Path, backbone: Path) -> tuple[Trainer, list[dict], dict[str, torch.Tensor]]:
    config = RunConfig.model_validate(shrink(yaml.safe_load(path.read_text()), folder, backbone))
    trainer = Trainer(config, show_progress=False)
    trainer.setup()
    params = {n: p for n, p in trainer.model_unwrapped.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    assert before, "nothing to train"
    trainer.train()
    unchanged = [n for n, p in before.items() if torch.equal(p, params[n].detach())]
    assert not unchanged, f"{path.stem}: parameters that did not change: {unchanged}"
    log = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    return trainer, log, before


def check_grm(trainer: Trainer, log: list[dict], folder: Path) -> None:
    regularizer = next(k for k in log[0] if k.endswith(("/sft_regularizer", "/dpo_regularizer")))
    assert all(math.isfinite(row[regularizer]) and row[regularizer] > 0 for row in log)
    assert trainer.model_unwrapped.backbone.get_output_embeddings() is not None
    if trainer.config.model.heads["single"].kind == "mlp":
        assert trainer.model_unwrapped.heads["single"].hidden.out_features == 1024


def check_more(trainer: Trainer, log: list[dict], folder: Path) -> None:
    for row in log:
        lambdas = {k: v for k, v in row.items() if k.startswith("more/lambda/")}
        # three tiny sources, two pairs each per batch: every step sees every source
        assert sorted(lambdas) == [f"more/lambda/source-{i}" for i in range(3)]
        assert sum(lambdas.values()) == pytest.approx(1.0, abs=1e-6)
        assert all(v >= 0 for v in lambdas.values())


def check_margin(trainer: Trainer, log: list[dict], folder: Path) -> None:
    assert all(row["margin/margin_present_fraction"] == 1.0 for row in log)
    assert all(row["margin/data_margin"] > 0 for row in log)


def check_odin(trainer: Trainer, log: list[dict], folder: Path) -> None:
    from smorm.data.formatting import Formatter
    from smorm.models.reward_model import RewardModel

    model = RewardModel.from_pretrained(folder / "run" / "model")
    assert set(model.heads) == {"single", "length"} and model.config.mode == "F"
    responses = ["Hi!", "Hello there, how are you doing today?"]
    scores = model.score(["Say hi.", "Say hi."], responses)
    formatter = Formatter(model.tokenizer, model.config.max_length)
    output = model.score_token_ids([formatter.encode([{"role": "user", "content": "Say hi."}], r).input_ids
                                    for r in responses])
    assert bool((output.extra["length"].abs() > 1e-6).all())  # the length head is there and not zero ...
    assert scores.reward == pytest.approx(output.single.tolist(), abs=1e-6)  # ... and never enters the reward


CHECKS = {"grm_sft": check_grm, "grm_dpo": check_grm, "grm_sft_mlp": check_grm, "grm_dpo_mlp": check_grm,
          "more": check_more, "margin": check_margin, "odin": check_odin}


@pytest.mark.parametrize("path", METHOD_CONFIGS, ids=lambda p: p.stem)
def test_method_trains_with_finite_losses_and_every_parameter_changes(path, tiny_llama_dir, tmp_path):
    trainer, log, _ = train_tiny(path, tmp_path, tiny_llama_dir)
    assert [row["step"] for row in log] == [1, 2, 3]
    for row in log:
        assert math.isfinite(row["loss"]), row
        for spec in trainer.config.losses:
            assert math.isfinite(row[f"{spec.name}/loss"]), (spec.name, row)
    if path.stem in CHECKS:
        CHECKS[path.stem](trainer, log, tmp_path)
