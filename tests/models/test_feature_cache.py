"""The per-sequence feature store: each sequence's lower-layer features are computed once, found by
any run with the same part, and an interrupted pass keeps what it finished."""

from __future__ import annotations

import pytest
import torch

from smorm.models.feature_cache import (
    PROMPT_PREFIX,
    FeatureStore,
    part_key,
    prompt_state_key,
    sequence_key,
    weights_digest,
)
from smorm.models.trunk import cached_part
from smorm.train.config import RunConfig
from smorm.train.trainer import Trainer
from tests.models.test_reward_model import make_model
from tests.train.helpers import tiny_config


def fake_features(chunk):
    """A feature that is a known function of the ids: [T, 2] of (id, position)."""
    return [torch.tensor([[float(t), float(i)] for i, t in enumerate(ids)]) for ids in chunk]


class Counting:
    def __init__(self, fail_after: int | None = None):
        self.seen: list[list[int]] = []
        self.fail_after = fail_after

    def __call__(self, chunk):
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise KeyboardInterrupt("interrupted")
        self.seen.extend(chunk)
        return fake_features(chunk)


def test_each_sequence_is_computed_once_and_found_by_a_second_run(tmp_path):
    first = Counting()
    a = FeatureStore(tmp_path, "part", shard_size=2).build([[1, 2], [3], [1, 2]], first, batch_size=2,
                                                           show_progress=False)
    assert sorted(first.seen) == [[1, 2], [3]]  # the repeated sequence once
    assert torch.equal(a[0], a[2]) and torch.equal(a[1], torch.tensor([[3.0, 0.0]]))

    second = Counting()
    b = FeatureStore(tmp_path, "part", shard_size=2).build([[3], [4, 5, 6], [1, 2]], second, batch_size=8,
                                                           show_progress=False)
    assert second.seen == [[4, 5, 6]]  # only the sequence the first run did not have
    assert [t.tolist() for t in b] == [t.tolist() for t in fake_features([[3], [4, 5, 6], [1, 2]])]

    other = Counting()
    FeatureStore(tmp_path, "another-part").build([[3]], other, batch_size=1, show_progress=False)
    assert other.seen == [[3]]  # another part (weights, depth, precision) never reads these


def test_an_interrupted_pass_keeps_its_finished_shards(tmp_path):
    sequences = [[i, i + 1] for i in range(6)]
    with pytest.raises(KeyboardInterrupt):
        FeatureStore(tmp_path, "k", shard_size=2).build(sequences, Counting(fail_after=2), batch_size=2,
                                                        show_progress=False)
    assert len(list((tmp_path / "k").glob("shard-*.safetensors"))) == 1
    rest = Counting()
    features = FeatureStore(tmp_path, "k", shard_size=2).build(sequences, rest, batch_size=2, show_progress=False)
    assert len(rest.seen) == 4
    assert [t.tolist() for t in features] == [t.tolist() for t in fake_features(sequences)]


def test_stored_dtype_and_sequence_keys(tmp_path):
    features = FeatureStore(tmp_path, "k").build([[1, 2, 3]], fake_features, 1, dtype=torch.bfloat16,
                                                 show_progress=False)
    assert features[0].dtype == torch.bfloat16
    assert sequence_key([1, 2]) != sequence_key([2, 1]) != sequence_key([1, 2, 0])
    assert sequence_key([1, 2]) == sequence_key((1, 2))


def stored_tensors(folder):
    """Every tensor of a store folder's shards by name, and the shards' header links."""
    from safetensors import safe_open

    tensors, links = {}, {}
    for shard in folder.glob("shard-*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            tensors.update({key: handle.get_tensor(key) for key in handle.keys()})  # noqa: SIM118
            links.update(handle.metadata() or {})
    return tensors, links


@pytest.mark.parametrize("lazy", [False, True])
def test_a_prompt_shared_by_several_sequences_is_stored_once_and_read_back_whole(tmp_path, lazy):
    p, q = [7, 8, 9], [4, 5]
    sequences = [p + [1], p + [2, 3], q + [6], [10, 11], p + [12], q]
    starts = [3, 3, 2, 0, 3, 2]  # [10, 11] has no prompt; q alone has no response: both kept whole
    seen = Counting()
    features = FeatureStore(tmp_path, "k", shard_size=2).build(sequences, seen, batch_size=2, show_progress=False,
                                                               starts=starts, lazy=lazy)
    expected = [t.tolist() for t in fake_features(sequences)]
    assert [t.tolist() for t in features] == expected
    tensors, links = stored_tensors(tmp_path / "k")
    prompts = {key for key in tensors if key.startswith(PROMPT_PREFIX)}
    assert prompts == {prompt_state_key(p), prompt_state_key(q)}  # each prompt once, whatever its shard
    assert tensors[prompt_state_key(p)].tolist() == expected[0][:3]
    assert tensors[sequence_key(p + [2, 3])].tolist() == expected[1][3:]  # the response's states only
    assert links == {sequence_key(s): prompt_state_key(s[:n]) for s, n in zip(sequences[:5], starts)
                     if 0 < n < len(s)}
    # rows stored: p once for its three responses (q once for its one, and q alone whole): 2 * 3 fewer
    assert sum(t.shape[0] for t in tensors.values()) == sum(map(len, sequences)) - 2 * len(p)
    # a second run that does not know the starts (a padded reader) finds every sequence, computes nothing
    again = FeatureStore(tmp_path, "k").build(sequences, Counting(fail_after=0), 4, show_progress=False)
    assert [t.tolist() for t in again] == expected


def test_pooled_features_and_unknown_starts_are_stored_whole(tmp_path):
    def pooled(chunk):
        return [torch.tensor([float(sum(ids)), float(len(ids))]) for ids in chunk]

    sequences = [[1, 2, 3], [1, 2, 4]]
    FeatureStore(tmp_path, "pooled").build(sequences, pooled, 2, show_progress=False, starts=[2, 2])
    tensors, links = stored_tensors(tmp_path / "pooled")
    assert links == {} and set(tensors) == {sequence_key(s) for s in sequences}
    with pytest.raises(ValueError, match="1 response starts for 2 sequences"):
        FeatureStore(tmp_path, "x").build(sequences, fake_features, 2, show_progress=False, starts=[1])


def test_an_encoder_keeps_whole_sequences_in_the_store(tmp_path):
    # a bidirectional encoder's prompt states depend on the response: never stored once for two sequences
    from smorm.models.backbone import load_backbone
    from smorm.models.cached_scoring import CachedTrunkScorer
    from smorm.models.reward_model import RewardModel, RewardModelConfig

    backbone = load_backbone("minilm-l6")
    assert not backbone.is_decoder
    model = RewardModel(backbone.model, backbone.tokenizer, RewardModelConfig(
        backbone="minilm-l6", heads={"single": {"kind": "linear"}}, max_length=64, is_decoder=False)).eval()
    prompt = [101, 2054, 2003]
    sequences = [prompt + [1037, 102], prompt + [3899, 102]]
    scorer = CachedTrunkScorer(model, top_k=2, store_root=tmp_path)
    scorer.score_token_ids(sequences, batch_size=2, response_starts=[3, 3])
    tensors, links = stored_tensors(next(tmp_path.iterdir()))
    assert links == {} and {t.shape[0] for t in tensors.values()} == {5}


def test_the_part_key_sees_the_lower_layers_and_ignores_the_trained_top(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    part, weights = cached_part(model, "top_k", 1)
    assert part == "lower:1"
    names = [f".{name}" for name, _ in weights]
    assert any(".layers.0." in n for n in names) and not any(".layers.1." in n for n in names)
    assert any("embed_tokens" in n for n in names)
    assert not any(n.endswith(".norm.weight") and "layers" not in n for n in names)  # the final norm trains
    key = part_key("llama", part, "fp32", torch.float32, weights)
    assert key == part_key("llama", part, "fp32", torch.float32, weights)
    assert key != part_key("llama", part, "bf16", torch.float32, weights)
    with torch.no_grad():
        model.base_model.layers[1].mlp.up_proj.weight.add_(1.0)  # the trained top changes: same features
        assert part_key("llama", part, "fp32", torch.float32, cached_part(model, "top_k", 1)[1]) == key
        model.base_model.layers[0].mlp.up_proj.weight[3, 5] += 1e-3  # one lower weight: new features
    assert part_key("llama", part, "fp32", torch.float32, cached_part(model, "top_k", 1)[1]) != key


def test_weights_digest_sees_one_changed_value_in_a_sampled_tensor():
    big = torch.zeros(10_000)
    before = weights_digest([("w", big)], samples=10_000)
    big[1234] = 1.0
    assert weights_digest([("w", big)], samples=10_000) != before
    assert weights_digest([("w", torch.zeros(3))]) != weights_digest([("v", torch.zeros(3))])


def test_sorm_finds_the_sequences_smorm_cached(tiny_llama_dir, tmp_path):
    """Two methods on the same pairs: the second run computes only what the first did not have."""
    smorm = RunConfig.model_validate(tiny_config(tmp_path / "smorm", tiny_llama_dir, trunk="top_k", steps=1))
    first = Trainer(smorm, show_progress=False)
    first.setup()
    stored = FeatureStore(first.cache_dir.parent, first.cache_dir.name).index()
    assert len([k for k in stored if not k.startswith(PROMPT_PREFIX)]) == len(set(map(tuple, first.data.all_sequences())))

    sorm_tree = tiny_config(tmp_path / "sorm", tiny_llama_dir, trunk="top_k", steps=1)
    sorm_tree["method"] = "sorm"
    sorm_tree["data"]["ratings"] = []
    sorm_tree["losses"] = [{"name": "bt"}]
    sorm_tree["model"]["heads"] = {"single": {"kind": "linear"}}
    sorm = RunConfig.model_validate(sorm_tree)
    second = Trainer(sorm, show_progress=False)
    calls: list[int] = []
    original = FeatureStore.build

    def build(self, sequences, compute, *args, **kwargs):
        def counted(chunk):
            calls.append(len(chunk))
            return compute(chunk)
        return original(self, sequences, counted, *args, **kwargs)

    FeatureStore.build = build  # type: ignore[method-assign]
    try:
        second.setup()
    finally:
        FeatureStore.build = original  # type: ignore[method-assign]
    assert second.cache_dir == first.cache_dir
    assert calls == []
    for i, ids in enumerate(second.data.all_sequences()):
        j = [tuple(s) for s in first.data.all_sequences()].index(tuple(ids))
        assert torch.equal(second.features[i], first.features[j])


def test_cached_trunk_scorer_scores_as_the_full_forward_and_computes_the_lower_layers_once(tiny_llama_dir, tmp_path):
    import copy

    from smorm.models.cached_scoring import CachedTrunkScorer

    model = make_model(tiny_llama_dir)
    sequences = [[5, 6, 7, 8, 9], [5, 6, 7], [11, 12, 13, 14, 15, 16, 17], [5, 6, 7]]
    full = model.score_token_ids(sequences, batch_size=2)
    scorer = CachedTrunkScorer(copy.deepcopy(model), top_k=1, store_root=tmp_path)
    cached = scorer.score_token_ids(sequences, batch_size=3)
    torch.testing.assert_close(cached.single, full.single, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cached.attributes, full.attributes, rtol=1e-5, atol=1e-5)
    stored = list(tmp_path.glob("*/shard-*.safetensors"))
    assert len(stored) == 1  # 3 distinct sequences in one shard
    # another model with the same lower layers (a second run) finds them; its own top layer differs
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.base_model.layers[1].mlp.down_proj.weight.mul_(2.0)
    again = CachedTrunkScorer(other, top_k=1, store_root=tmp_path).score_token_ids(sequences[:2])
    assert list(tmp_path.glob("*/shard-*.safetensors")) == stored
    torch.testing.assert_close(again.single, other.score_token_ids(sequences[:2]).single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(again.single, full.single[:2])


def test_weights_digest_reads_large_tensors_inside_their_bounds():
    big = torch.zeros(28_311_552)  # SmolLM2's embedding: float spacing once rounded past the last index
    big[-1] = 1.0
    assert weights_digest([("w", big)]) != weights_digest([("w", torch.zeros(28_311_552))])


def test_a_backbone_loaded_with_its_lm_head_finds_the_same_features(tiny_llama_dir):
    """GRM keeps the LM head (a CausalLM wrapper, weights named model.*): same lower layers, same key."""
    from smorm.models.backbone import load_backbone
    from smorm.models.reward_model import RewardModel, RewardModelConfig

    plain = make_model(tiny_llama_dir)
    loaded = load_backbone(str(tiny_llama_dir), with_lm_head=True)
    config = RewardModelConfig(backbone=str(tiny_llama_dir), attributes=["a"], heads={"single": {"kind": "linear"}},
                               max_length=64, with_lm_head=True)
    with_head = RewardModel(loaded.model, loaded.tokenizer, config)
    assert with_head.backbone.get_output_embeddings() is not None
    for trunk, top_k in (("top_k", 1), ("frozen", 0)):
        (part_a, weights_a), (part_b, weights_b) = cached_part(plain, trunk, top_k), cached_part(with_head, trunk, top_k)
        assert part_a == part_b
        assert part_key("llama", part_a, "fp32", torch.float32, weights_a) == part_key(
            "llama", part_b, "fp32", torch.float32, weights_b)


def test_a_plan_chooses_the_chunks_and_must_name_every_sequence(tmp_path):
    seen = Counting()
    sequences = [[1, 2], [3], [4, 5, 6]]
    FeatureStore(tmp_path, "k").build(sequences, seen, 8, show_progress=False, plan=lambda ids: [[2, 0], [1]])
    assert seen.seen == [[4, 5, 6], [1, 2], [3]]
    with pytest.raises(ValueError, match="every missing sequence exactly once"):
        FeatureStore(tmp_path, "other").build(sequences, Counting(), 8, show_progress=False, plan=lambda ids: [[0]])


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_lower_pass_stores_the_padded_states_and_computes_each_prompt_once(tiny_llama_dir, tmp_path,
                                                                                 implementation):
    import copy

    from smorm.models import packing
    from smorm.models.cached_scoring import CachedTrunkScorer

    model = make_model(tiny_llama_dir)
    model.base_model.config._attn_implementation = implementation
    prompt = [5, 6, 7, 8, 9, 10]
    sequences = [prompt + [20, 21], prompt + [22], [11, 12, 13, 14], prompt + [23, 24, 25], [30, 31]]
    starts = [6, 6, 2, 6, 0]
    padded = CachedTrunkScorer(copy.deepcopy(model), top_k=1, store_root=tmp_path / "padded")
    padded_out = padded.score_token_ids(sequences, batch_size=4)
    rows: list = []
    real = packing.pack_layout

    def recording(layout, pad_id):
        rows.append(real(layout, pad_id))
        return rows[-1]

    packing.pack_layout = recording
    try:
        packed = CachedTrunkScorer(copy.deepcopy(model), top_k=1, store_root=tmp_path / "packed")
        packed_out = packed.score_token_ids(sequences, batch_size=4, response_starts=starts)
    finally:
        packing.pack_layout = real
    torch.testing.assert_close(packed_out.single, padded_out.single, rtol=1e-4, atol=1e-4)
    # the states stored are the padded pass's, sequence by sequence
    read = [FeatureStore(tmp_path / name, next((tmp_path / name).iterdir()).name).build(
        sequences, Counting(fail_after=0), 4, show_progress=False) for name in ("padded", "packed")]
    for a, b in zip(*read, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
    # the prompt ran once for its three responses: 2 * 6 tokens fewer than the sequences hold
    assert sum(r.num_tokens for r in rows) == sum(map(len, sequences)) - 2 * len(prompt)
