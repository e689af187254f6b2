"""Tiny reward models and prompt files for the reward-hacking lab tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ATTRIBUTES = ["helpfulness", "verbosity"]
PROMPTS = ["Name a fruit.", "Say hi.", "Count to three.", "What is 2 + 2?", "Give a color.", "Tell a joke."]
GATED_HEADS = {"single": {"kind": "linear"}, "multi": {"kind": "linear"},
               "gate": {"kind": "gate", "hidden_sizes": [8], "dropout": 0.0}}


def save_reward_model(folder: Path, backbone: Path, seed: int, heads: dict | None = None, mode: str = "F") -> Path:
    """A random-head RewardModel on the tiny Llama backbone, saved as a smorm model folder
    (``heads=GATED_HEADS, mode="G"``: a gated model, as ``smorm gate`` leaves one)."""
    import torch

    from smorm.models.backbone import load_backbone
    from smorm.models.reward_model import RewardModel, RewardModelConfig

    loaded = load_backbone(str(backbone))
    heads = heads or {"single": {"kind": "linear"}, "multi": {"kind": "linear"}}
    config = RewardModelConfig(backbone=str(backbone), attributes=ATTRIBUTES if "multi" in heads else [],
                               heads=heads, max_length=96, mode=mode)
    torch.manual_seed(seed)
    model = RewardModel(loaded.model, loaded.tokenizer, config)
    for name, parameter in model.heads.named_parameters():  # big enough that scores differ visibly
        # a gate MLP this wide saturates its softmax at std 1 (one-hot weights, blind to the prompt)
        torch.nn.init.normal_(parameter, std=0.3 if name.startswith("gate.mlp") else 1.0)
    return model.save_pretrained(folder, backbone_weights="reference")


def write_prompts(path: Path, prompts: list[str] = PROMPTS) -> Path:
    """A prompts file in the generic ``prompt`` format."""
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def save_hf_classifier(folder: Path, tokenizer, seed: int) -> Path:
    """A tiny random ``LlamaForSequenceClassification`` (one label) saved with safetensors, with its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, num_labels=1)
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).eval().save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def direct_hf_rewards(folder: Path, prompts: list, responses: list[str]) -> np.ndarray:
    """``[B]`` logits of a classifier folder, independent of smorm: the tokenizer's chat template, then one
    unpadded forward per text. ``prompts[i]`` is a string (one user turn) or a list of messages."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rewards = []
    for prompt, response in zip(prompts, responses, strict=True):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        text = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": response}], tokenize=False)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            rewards.append(float(model(input_ids=ids).logits[0, 0]))
    return np.asarray(rewards)


def model_rewards(folder: Path, prompts: list, responses: list[str], mode: str) -> np.ndarray:
    """``[B]`` rewards through ``RewardModel.score`` (not the lab's scoring path)."""
    from smorm.models.reward_model import RewardModel

    return np.asarray(RewardModel.from_pretrained(folder).score(prompts, responses, mode=mode).reward)
