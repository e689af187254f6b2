"""Gating feature cache: response and prompt features from one pass, sharded, resumable."""

from __future__ import annotations

import pytest
import torch

from smorm.gating.features import (
    GatingFeatureCache,
    SequenceIndex,
    cache_key,
    compute_features,
    model_compute_fn,
)
from tests.models.test_reward_model import make_model

TEXTS = [("Name a fruit.", "An apple."), ("Name a fruit.", "Pears, when ripe."), ("Say hi.", "Hello!"),
         ("Count to three.", "1, 2, 3."), ("Say hi.", "Hi there, how are you today?")]


def index_for(model, max_length: int = 128) -> SequenceIndex:
    from smorm.data.formatting import Formatter

    formatter = Formatter(model.tokenizer, max_length)
    index = SequenceIndex()
    for prompt, response in TEXTS:
        encoded = formatter.encode([{"role": "user", "content": prompt}], response)
        index.add(encoded.input_ids, encoded.response_start)
    return index


def test_sequence_index_deduplicates():
    index = SequenceIndex()
    assert index.add([1, 2, 3], 2) == 0
    assert index.add([4, 5], 1) == 1
    assert index.add([1, 2, 3], 2) == 0
    assert index.add([1, 2, 3], 1) == 2  # another split of the same tokens is another sequence
    assert len(index) == 3


def test_features_are_the_models_pooled_state_and_the_prompt_only_state(tiny_llama_dir, tmp_path):
    model = make_model(tiny_llama_dir)
    index = index_for(model)
    cached = compute_features(model, index, tmp_path, batch_size=2, shard_size=2, show_progress=False)
    assert cached.features.shape == cached.prompt_features.shape == (5, model.hidden_size)
    assert len(list(cached.root.glob("shard-*.safetensors"))) == 3
    for row, (ids, start) in enumerate(zip(index.input_ids, index.response_starts)):
        full = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
        assert torch.allclose(cached.features[row], full.pooled[0], atol=1e-5)
        # causal backbone: the state at the prompt's last token equals a prompt-only pass (004 Sec. 3.2)
        prompt_only = model.encode(torch.tensor([ids[:start]]), torch.ones(1, start, dtype=torch.long))[0, -1]
        assert torch.allclose(cached.prompt_features[row], prompt_only, atol=1e-5)
    assert torch.allclose(cached.prompt_features[0], cached.prompt_features[1], atol=1e-5)  # same prompt


def test_an_interrupted_cache_resumes_without_recomputing_finished_shards(tiny_llama_dir, tmp_path):
    model = make_model(tiny_llama_dir)
    index = index_for(model)
    compute = model_compute_fn(model)
    calls: list[int] = []

    def failing(ids, starts):
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while computing the second shard
        calls.append(len(ids))
        return compute(ids, starts)

    cache = GatingFeatureCache(tmp_path, "key", shard_size=2)
    with pytest.raises(KeyboardInterrupt):
        cache.build(index, failing, batch_size=1, show_progress=False)
    assert [p.name for p in sorted(cache.root.glob("shard-*"))] == ["shard-00000.safetensors"]
    assert not list(cache.root.glob(".shard-*"))  # nothing half-written is left as a shard
    calls.clear()

    def counting(ids, starts):
        calls.append(len(ids))
        return compute(ids, starts)

    resumed = cache.build(index, counting, batch_size=1, show_progress=False)
    assert sum(calls) == 3  # only the rows of shards 1 and 2
    fresh = GatingFeatureCache(tmp_path, "fresh", shard_size=2).build(index, compute, 4, show_progress=False)
    assert torch.allclose(resumed.features, fresh.features, atol=1e-6)
    assert torch.allclose(resumed.prompt_features, fresh.prompt_features, atol=1e-6)
    calls.clear()
    cache.build(index, counting, batch_size=1, show_progress=False)
    assert calls == []  # complete: nothing recomputed


def test_cache_key_follows_top_layer_weights_and_precision(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    index = index_for(model)
    key = cache_key(model, index, bf16=False)
    assert cache_key(model, index, bf16=True) != key
    last = list(model.backbone.parameters())[-1]
    with torch.no_grad():
        last.add_(0.5)
    assert cache_key(model, index, bf16=False) != key
