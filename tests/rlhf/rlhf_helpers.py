"""Tiny reward models and prompt files for the reward-hacking lab tests."""

from __future__ import annotations

import json
from pathlib import Path

ATTRIBUTES = ["helpfulness", "verbosity"]
PROMPTS = ["Name a fruit.", "Say hi.", "Count to three.", "What is 2 + 2?", "Give a color.", "Tell a joke."]


def save_reward_model(folder: Path, backbone: Path, seed: int, heads: dict | None = None) -> Path:
    """A random-head RewardModel on the tiny Llama backbone, saved as a smorm model folder."""
    import torch

    from smorm.models.backbone import load_backbone
    from smorm.models.reward_model import RewardModel, RewardModelConfig

    loaded = load_backbone(str(backbone))
    heads = heads or {"single": {"kind": "linear"}, "multi": {"kind": "linear"}}
    config = RewardModelConfig(backbone=str(backbone), attributes=ATTRIBUTES if "multi" in heads else [],
                               heads=heads, max_length=96, mode="F")
    torch.manual_seed(seed)
    model = RewardModel(loaded.model, loaded.tokenizer, config)
    for parameter in model.heads.parameters():  # big enough that scores differ visibly
        torch.nn.init.normal_(parameter, std=1.0)
    return model.save_pretrained(folder, backbone_weights="reference")


def write_prompts(path: Path, prompts: list[str] = PROMPTS) -> Path:
    """A prompts file in the generic ``prompt`` format."""
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path
