"""Trunk modes: which parameters train, and that the top_k split reproduces the full forward."""

from __future__ import annotations

import pytest
import torch

from smorm.models.trunk import apply_trunk_mode
from tests.models.test_reward_model import make_model, pad


@pytest.mark.parametrize("top_k", [1, 2])
def test_lower_then_upper_equals_full_forward(tiny_llama_dir, top_k):
    model = make_model(tiny_llama_dir)
    ids, mask = pad([[5, 6, 7, 8, 9], [10, 11]], model.tokenizer.pad_token_id, "right")
    full = model(input_ids=ids, attention_mask=mask)
    lower = apply_trunk_mode(model, "top_k", top_k=top_k)
    hidden = lower(ids, mask)
    split = model(hidden_states=hidden, attention_mask=mask)
    assert torch.allclose(full.single, split.single, atol=1e-5)
    assert torch.allclose(full.attributes, split.attributes, atol=1e-5)


def test_top_k_on_an_encoder_equals_the_full_forward_with_padding():
    # MiniLM (BERT): the slice builds the layers' attention mask the way BertModel.forward does, so a
    # padded row's states match its unpadded forward (transformers 5 removed get_extended_attention_mask)
    model = make_model("minilm-l6")
    ids, mask = pad([[101, 2054, 2003, 1037, 3899, 102], [101, 7592, 102]], model.tokenizer.pad_token_id, "right")
    full = model(input_ids=ids, attention_mask=mask)
    lower = apply_trunk_mode(model, "top_k", top_k=2)
    split = model(hidden_states=lower(ids, mask), attention_mask=mask)
    assert torch.allclose(full.single, split.single, atol=1e-5)
    alone = model(hidden_states=lower(ids[1:, :3], mask[1:, :3]), attention_mask=mask[1:, :3])
    assert torch.allclose(split.single[1], alone.single[0], atol=1e-5)  # the padding is masked out


def test_top_k_trains_only_top_layers_norm_and_heads(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    apply_trunk_mode(model, "top_k", top_k=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("backbone.layers.1.") for n in trainable)
    assert not any(n.startswith("backbone.layers.0.") for n in trainable)
    assert "backbone.norm.weight" in trainable
    assert "backbone.embed_tokens.weight" not in trainable
    assert {"heads.single.proj.weight", "heads.multi.proj.weight"} <= trainable


def test_frozen_trains_heads_only_and_full_trains_all(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    apply_trunk_mode(model, "frozen")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "heads.single.proj.weight", "heads.multi.proj.weight"}
    apply_trunk_mode(model, "full")
    assert all(p.requires_grad for p in model.parameters())


def test_lora_wraps_backbone_and_keeps_scores_at_init(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    ids, mask = pad([[5, 6, 7, 8]], model.tokenizer.pad_token_id, "right")
    before = model(input_ids=ids, attention_mask=mask).single
    apply_trunk_mode(model, "lora", lora={"r": 4, "alpha": 8})
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable) and all("lora_" in n or n.startswith("heads.") for n in trainable)
    # LoRA's B matrices start at zero, so scores are unchanged until training
    assert torch.allclose(before, model(input_ids=ids, attention_mask=mask).single, atol=1e-6)


def test_unknown_mode_and_bad_top_k_are_rejected(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    with pytest.raises(ValueError, match="unknown trunk mode"):
        apply_trunk_mode(model, "half")
    with pytest.raises(ValueError, match="top_k must be in 1..2"):
        apply_trunk_mode(model, "top_k", top_k=3)
