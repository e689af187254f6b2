"""Model FLOPs: matmul weights per trunk mode from the config by hand, FLOPs and MFU by hand, the peak cache."""

from __future__ import annotations

import json

import pytest
import torch

from smorm.models import flops
from smorm.models.flops import (
    MatmulWeights,
    StepWeights,
    caching_weights,
    matmul_peak,
    mfu,
    model_flops,
    step_flops,
    training_weights,
)
from smorm.models.trunk import apply_trunk_mode
from tests.models.test_reward_model import ATTRS, make_model


def llama_layer_weights(config: dict) -> int:
    """One Llama decoder layer's matmul weights: q, k, v, o projections and the gated MLP (gate, up, down)."""
    d, inter = config["hidden_size"], config["intermediate_size"]
    head_dim = d // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    return d * d + 2 * d * kv + d * d + 3 * d * inter


def backbone_config(tiny_llama_dir) -> dict:
    return json.loads((tiny_llama_dir / "config.json").read_text())


def test_the_tiny_llama_layer_by_hand(tiny_llama_dir):
    config = backbone_config(tiny_llama_dir)
    # d = 32, 4 heads of 8, 2 kv heads (16 wide), MLP 64: 32*32 + 2*32*16 + 32*32 + 3*32*64
    assert (config["hidden_size"], config["intermediate_size"], config["num_key_value_heads"]) == (32, 64, 2)
    assert llama_layer_weights(config) == 1024 + 1024 + 1024 + 6144 == 9216


@pytest.mark.parametrize("trunk", ["full", "top_k", "frozen"])
def test_weights_per_trunk_mode_match_the_config(tiny_llama_dir, trunk):
    config = backbone_config(tiny_llama_dir)
    layer, layers, d = llama_layer_weights(config), config["num_hidden_layers"], config["hidden_size"]
    heads = d * 1 + d * len(ATTRS)  # single: d -> 1, multi: d -> K, no biases
    model = make_model(tiny_llama_dir)
    apply_trunk_mode(model, trunk, top_k=1)
    weights = training_weights(model, trunk, top_k=1)
    trunk_runs = {"full": layers * layer, "top_k": 1 * layer, "frozen": 0}[trunk]
    assert weights == StepWeights(MatmulWeights(trunk_runs, trunk_runs), MatmulWeights(heads, heads))
    if trunk == "full":
        assert weights.trunk.runs == 2 * 9216 and heads == 32 + 96
    else:  # the caching pass: the layers below the top k (top_k), the whole backbone (frozen)
        lower = {"top_k": (layers - 1) * layer, "frozen": layers * layer}[trunk]
        assert caching_weights(model, trunk, top_k=1) == lower


def test_lora_runs_the_frozen_weights_and_trains_the_adapters(tiny_llama_dir):
    config = backbone_config(tiny_llama_dir)
    d, inter, kv = config["hidden_size"], config["intermediate_size"], 2 * (config["hidden_size"] // 4)
    model = make_model(tiny_llama_dir)
    apply_trunk_mode(model, "lora", lora={"r": 4, "alpha": 8})
    # rank 4 on every linear layer: A [in, 4] and B [4, out], r * (in + out) per projection
    adapters = 4 * ((d + d) + 2 * (d + kv) + (d + d) + 2 * (d + inter) + (inter + d))
    assert adapters == 256 + 384 + 256 + 768 + 384 == 2048
    weights = training_weights(model, "lora")
    layers = config["num_hidden_layers"]
    assert weights.trunk == MatmulWeights(layers * (llama_layer_weights(config) + adapters), layers * adapters)
    # per token: 2 (18432 + 4096) forward + 2 (18432 + 4096) input gradients + 2 * 4096 adapter gradients
    assert model_flops(1, weights.trunk.runs, "training", weights.trunk.trains) == 4 * 22528 + 2 * 4096 == 98304


def test_the_lm_head_counts_only_when_it_runs(tiny_llama_dir):
    from smorm.models.backbone import load_backbone
    from smorm.models.reward_model import RewardModel, RewardModelConfig

    config = backbone_config(tiny_llama_dir)
    backbone = load_backbone(str(tiny_llama_dir), with_lm_head=True)
    model = RewardModel(backbone.model, backbone.tokenizer, RewardModelConfig(
        backbone=str(tiny_llama_dir), heads={"single": {"kind": "linear"}}, with_lm_head=True))
    vocab_by_hidden = config["vocab_size"] * config["hidden_size"]
    assert training_weights(model, "full").lm_head == MatmulWeights(0, 0)
    apply_trunk_mode(model, "full")
    assert training_weights(model, "full", lm_head=True).lm_head == MatmulWeights(vocab_by_hidden, vocab_by_hidden)
    apply_trunk_mode(model, "top_k", top_k=1)  # the (tied) LM head is frozen: it runs, but trains no weight
    assert training_weights(model, "top_k", 1, lm_head=True).lm_head == MatmulWeights(vocab_by_hidden, 0)


def test_model_flops_by_hand():
    assert model_flops(10, 100, "forward") == 2 * 100 * 10 == 2000
    assert model_flops(10, 100, "training") == 6 * 100 * 10 == 6000
    assert model_flops(10, 100, "training", trained=20) == (400 + 40) * 10 == 4400
    with pytest.raises(ValueError, match="kind"):
        model_flops(1, 1, "backward")
    weights = StepWeights(MatmulWeights(100, 100), MatmulWeights(5, 5), MatmulWeights(50, 0))
    # trunk 6*100*10 + heads 6*5*2 + LM head (4*50 + 0)*3
    assert step_flops(weights, tokens=10, rows=2, lm_tokens=3) == 6000 + 60 + 600 == 6660


def test_mfu_by_hand():
    assert mfu(6e9, 2.0, 1e12) == pytest.approx(0.003)  # 3e9 FLOP/s of 1e12
    assert mfu(6e9, 2.0, 1e12, devices=2) == pytest.approx(0.0015)
    assert mfu(6e9, 0.0, 1e12) is None


def test_measure_matmul_peak_is_positive():
    assert flops.measure_matmul_peak(torch.float32, "cpu", size=64, seconds=0.05) > 0


def test_the_peak_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(flops.PEAK_ENV, raising=False)
    monkeypatch.setenv("SMORM_CACHE", str(tmp_path))
    calls = []

    def fake_measure(dtype, device, size=None, seconds=1.0):
        calls.append((dtype, size))
        return 5e9 if dtype == torch.float32 else 2e9

    monkeypatch.setattr(flops, "measure_matmul_peak", fake_measure)
    first = matmul_peak(torch.float32, "cpu", size=128)
    second = matmul_peak(torch.float32, "cpu", size=128)
    assert (first.flops_per_s, first.source) == (5e9, "measured")
    assert (second.flops_per_s, second.source) == (5e9, "cached")
    assert calls == [(torch.float32, 128)]
    stored = json.loads((tmp_path / "matmul_peak.json").read_text())
    assert list(stored) == [flops.peak_key(torch.float32, "cpu", 128)]
    assert f"threads={torch.get_num_threads()}" in next(iter(stored))
    bf16 = matmul_peak(torch.bfloat16, "cpu", size=128)  # another dtype: measured on its own
    assert (bf16.flops_per_s, bf16.source, bf16.dtype) == (2e9, "measured", "bfloat16")
    assert len(calls) == 2 and len(json.loads((tmp_path / "matmul_peak.json").read_text())) == 2


def test_the_env_override_skips_measuring(tmp_path, monkeypatch):
    monkeypatch.setattr(flops, "measure_matmul_peak", lambda *a, **k: pytest.fail("measured despite the override"))
    monkeypatch.setenv(flops.PEAK_ENV, "2.5e13")
    peak = matmul_peak(torch.float32, "cpu", cache_file=tmp_path / "peak.json")
    assert (peak.flops_per_s, peak.source) == (2.5e13, "env")
    assert not (tmp_path / "peak.json").exists()
    monkeypatch.setenv(flops.PEAK_ENV, "fast")
    with pytest.raises(ValueError, match="SMORM_PEAK_FLOPS"):
        matmul_peak(torch.float32, "cpu")
