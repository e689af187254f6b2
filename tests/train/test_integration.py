"""A tiny random Llama trains for a few steps in every trunk mode: every trainable parameter
changes and every logged loss is finite."""

from __future__ import annotations

import json
import math

import pytest
import torch

from smorm.train.batches import step_indices
from smorm.train.config import RunConfig
from smorm.train.trainer import Trainer
from tests.train.helpers import tiny_config


@pytest.mark.parametrize("trunk", ["full", "top_k", "frozen", "lora"])
def test_every_trainable_parameter_changes_and_losses_are_finite(tiny_llama_dir, tmp_path, trunk):
    config = RunConfig.model_validate(tiny_config(tmp_path, tiny_llama_dir, trunk=trunk, steps=3))
    trainer = Trainer(config, show_progress=False)
    trainer.setup()
    # hold the parameter objects: LoRA adapters are merged away when the model is saved
    params = {n: p for n, p in trainer.model_unwrapped.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    assert before, "nothing to train"
    result = trainer.train()
    unchanged = [n for n, p in before.items() if torch.equal(p, params[n].detach())]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3]
    for row in log:
        for key in ("loss", "bt/loss", "regression/loss"):
            assert math.isfinite(row[key]), (key, row)
    assert (result.model_dir / "smorm_config.json").is_file()
    # the saved model scores like the trained one in memory (LoRA merged, top_k delta, frozen reference)
    from smorm.models.reward_model import RewardModel

    trained = trainer.model_unwrapped.eval()
    reloaded = RewardModel.from_pretrained(result.model_dir)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.allclose(trained(input_ids=ids, attention_mask=mask).single,
                              reloaded(input_ids=ids, attention_mask=mask).single, atol=1e-5)
    if trunk == "frozen":
        assert "share no trainable weights" in result.summary["note"]


def test_trunk_modes_train_what_they_say(tiny_llama_dir, tmp_path):
    config = RunConfig.model_validate(tiny_config(tmp_path, tiny_llama_dir, trunk="top_k", steps=1))
    trainer = Trainer(config, show_progress=False)
    trainer.setup()
    trainable = {n for n, p in trainer.model_unwrapped.named_parameters() if p.requires_grad}
    assert not any(".layers.0." in n for n in trainable) and any(".layers.1." in n for n in trainable)
    # the lower-layer cache exists on disk and is reused by a second setup (no recomputation)
    shards = sorted(trainer.cache_dir.glob("shard-*.safetensors"))
    assert shards
    mtimes = [s.stat().st_mtime_ns for s in shards]
    again = Trainer(config, show_progress=False)
    again.setup()
    assert [s.stat().st_mtime_ns for s in shards] == mtimes
    for a, b in zip(trainer.features, again.features):
        assert torch.equal(a, b)


def test_gradient_accumulation_matches_one_big_batch(tiny_llama_dir, tmp_path):
    """2 micro-batches of 2 pairs, accumulated, give the same gradient as 1 batch of 4 (same records).

    Gradients are compared, not weights: Adam's first step is lr * sign(g), which would hide errors.
    """
    import copy

    base = tiny_config(tmp_path / "a", tiny_llama_dir, trunk="frozen", steps=1)
    base["losses"] = [{"name": "bt"}]
    base["data"].pop("ratings")
    base["model"]["heads"] = {"single": {"kind": "linear"}}
    base["train"].update(max_grad_norm=None)
    big = copy.deepcopy(base)
    big["train"].update(pair_batch_size=4, grad_accum=1)
    small = copy.deepcopy(base)
    small["output_dir"] = str(tmp_path / "b" / "run")
    small["train"].update(pair_batch_size=2, grad_accum=2)
    weights = []
    for raw in (big, small):
        trainer = Trainer(RunConfig.model_validate(raw), show_progress=False)
        trainer.setup()
        # make both runs see the same four pairs: 0-3 in one batch vs {0,1} then {2,3}
        from smorm.train import batches

        def fixed(lengths, batch_size, seed):
            return [list(range(i, i + batch_size)) for i in range(0, len(lengths), batch_size)]

        original = batches.grouped_batches
        batches.grouped_batches = fixed
        head = trainer.model_unwrapped.heads["single"].proj.weight
        step = trainer.optimizer.step

        def recording_step(*args, head=head, step=step, **kwargs):
            weights.append(head.grad.detach().clone())
            return step(*args, **kwargs)

        trainer.optimizer.step = recording_step
        batches._epoch_batches.cache_clear()
        try:
            trainer.train()
        finally:
            batches.grouped_batches = original
            batches._epoch_batches.cache_clear()
    assert len(weights) == 2 and weights[0].abs().sum() > 0
    assert torch.allclose(weights[0], weights[1], atol=1e-6)


@pytest.mark.parametrize("trunk, padding_free", [("full", True), ("full", False), ("lora", True), ("top_k", True),
                                                  ("top_k", False)])
def test_shared_prompt_packing_gives_the_same_gradients(tiny_llama_dir, tmp_path, trunk, padding_free):
    """train.shared_prompt packs each pair's prompt once (and, padding-free, several pairs and rated
    responses per row; under top_k also in the caching pass): the first step's gradients are unchanged."""
    grads, tokens = [], []
    for shared in (False, True):
        raw = tiny_config(tmp_path / str(shared), tiny_llama_dir, trunk=trunk, steps=1)
        raw["train"].update(shared_prompt=shared, padding_free=padding_free, max_grad_norm=None,
                            cache_dir=str(tmp_path / f"store-{shared}"))
        trainer = Trainer(RunConfig.model_validate(raw), show_progress=False)
        trainer.setup()
        assert trainer.packing is shared
        # packing groups batches by packed width; use one grouping so both runs see the same pairs
        trainer.plan.pair_lengths = [len(c) for c in trainer.data.chosen]
        model = trainer.model_unwrapped
        step = trainer.optimizer.step

        def recording_step(*args, model=model, step=step, **kwargs):
            grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
            return step(*args, **kwargs)

        trainer.optimizer.step = recording_step
        indices = step_indices(trainer.plan, 0, raw["train"].get("seed", 42), 0, trainer.data.chosen,
                               trainer.data.rating_ids)
        if shared:
            packed = trainer._packed_inputs(indices)["packed"]
            tokens.append((packed.num_tokens, packed.input_ids.numel()))
        if trunk == "top_k":  # the caching pass: packed states equal the padded pass's
            tokens.append([trainer.features[i].clone() for i in range(len(trainer.features))])
        trainer.train()
    plain, packed_grads = grads
    assert plain.keys() == packed_grads.keys() and len(plain) > 1
    for name in plain:
        assert torch.allclose(plain[name], packed_grads[name], atol=1e-4), name
    if trunk == "top_k":
        padded_states, (real, slots), packed_states = tokens
        assert len(padded_states) == len(packed_states)
        for a, b in zip(padded_states, packed_states, strict=True):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
    else:
        (real, slots), = tokens
    if padding_free:
        assert 1 - real / slots < 0.2  # several units per row: little padding left


def test_grm_trains_on_cached_lower_layers(tiny_llama_dir, tmp_path, caplog):
    """GRM's LM regulariser under top_k: the top layers run from cached states, the token ids come along;
    the shared prompt (on by default) falls back to padded batches with a message."""
    tree = tiny_config(tmp_path, tiny_llama_dir, trunk="top_k", steps=2)
    tree["method"] = "grm_sft"
    tree["model"].update(heads={"single": {"kind": "linear"}}, mode="F", with_lm_head=True)
    tree["data"]["ratings"] = []
    tree["losses"] = [{"name": "grm_sft", "options": {"alpha": 0.5, "beta": 0.1}}]
    trainer = Trainer(RunConfig.model_validate(tree), show_progress=False)
    with caplog.at_level("INFO", logger="smorm"):
        trainer.setup()
    assert trainer.packing is False
    assert any("auto -> off" in r.getMessage() and "GRM" in r.getMessage() for r in caplog.records)
    top = {n: p.detach().clone() for n, p in trainer.model_unwrapped.named_parameters() if ".layers.1." in n}
    trainer.train()
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(row["grm_sft/loss"]) for row in log)
    assert any(key.startswith("grm_sft/") and key != "grm_sft/loss" for key in log[0])
    changed = [n for n, p in trainer.model_unwrapped.named_parameters() if n in top and not torch.equal(p, top[n])]
    assert changed


def test_an_encoder_falls_back_to_padded_batches_with_a_message(tiny_tokenizer, caplog):
    from types import SimpleNamespace

    from transformers import BertConfig, BertModel

    from smorm.models.reward_model import RewardModel, RewardModelConfig

    bert = BertModel(BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=4, intermediate_size=64, pad_token_id=tiny_tokenizer.pad_token_id))
    model = RewardModel(bert, tiny_tokenizer, RewardModelConfig(backbone="tiny-bert", attributes=["a"], is_decoder=False,
                                                                heads={"single": {"kind": "linear"}}))
    for wanted, level in (("auto", "INFO"), (True, "WARNING")):
        stub = SimpleNamespace(config=SimpleNamespace(train=SimpleNamespace(shared_prompt=wanted)), model=model,
                               _loss_needs=[{"pairs"}], is_main=True)
        caplog.clear()
        with caplog.at_level("INFO", logger="smorm"):
            assert Trainer._resolve_packing(stub) is False
        assert [r.levelname for r in caplog.records] == [level] and "not a causal model" in caplog.text
    stub.config.train.shared_prompt = False
    assert Trainer._resolve_packing(stub) is False
