"""RewardModel: heads, pooling at the last real token, modes, save/load."""

from __future__ import annotations

import json
import math

import pytest
import torch

from smorm.models.pooling import last_token_index, pool_last_token
from smorm.models.reward_model import RewardModel, RewardModelConfig, reward_for_mode
from smorm.types import RewardOutput

ATTRS = ["helpfulness", "correctness", "verbosity"]


def make_model(tiny_llama_dir, heads=None, attributes=ATTRS) -> RewardModel:
    from smorm.models.backbone import load_backbone

    backbone = load_backbone(str(tiny_llama_dir))
    config = RewardModelConfig(
        backbone=str(tiny_llama_dir),
        attributes=list(attributes),
        heads=heads or {"single": {"kind": "linear"}, "multi": {"kind": "linear"}},
        max_length=64,
    )
    torch.manual_seed(0)
    return RewardModel(backbone.model, backbone.tokenizer, config).eval()


def pad(rows: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent padding helper (not the package's collator)."""
    longest = max(map(len, rows))
    ids = torch.full((len(rows), longest), pad_id)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, row in enumerate(rows):
        if side == "right":
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        else:
            ids[i, longest - len(row) :] = torch.tensor(row)
            mask[i, longest - len(row) :] = 1
    return ids, mask


def test_last_token_index_either_padding_side():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]
    hidden = torch.arange(3 * 5 * 2, dtype=torch.float).reshape(3, 5, 2)
    pooled = pool_last_token(hidden, mask)
    assert torch.equal(pooled, torch.stack([hidden[0, 2], hidden[1, 4], hidden[2, 4]]))


def test_head_init_variance_is_one_over_d_plus_one(tiny_llama_dir):
    from smorm.models.heads import LinearHead

    torch.manual_seed(0)
    head = LinearHead(4095, 64)
    # N(0, 1/(d+1)) with d = 4095: variance 1/4096
    assert head.weight.var().item() == pytest.approx(1 / 4096, rel=0.05)
    assert head.proj.bias is None


def test_modes_are_f_l_and_their_mean():
    out = RewardOutput(single=torch.tensor([1.0, -2.0]), attributes=torch.tensor([[0.2, 0.4], [1.0, 0.0]]),
                       pooled=torch.zeros(2, 3))
    assert reward_for_mode(out, "F").tolist() == [1.0, -2.0]
    assert reward_for_mode(out, "L").tolist() == pytest.approx([0.3, 0.5])
    assert reward_for_mode(out, "M").tolist() == pytest.approx([(1.0 + 0.3) / 2, (-2.0 + 0.5) / 2])
    with pytest.raises(ValueError, match="unknown mode"):
        reward_for_mode(out, "X")
    with pytest.raises(ValueError, match="multi-attribute head"):
        reward_for_mode(RewardOutput(single=out.single, attributes=None, pooled=out.pooled), "L")


def test_one_forward_gives_every_head(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    ids, mask = pad([[5, 6, 7, 8], [9, 10]], model.tokenizer.pad_token_id, "right")
    out = model(input_ids=ids, attention_mask=mask)
    assert out.single.shape == (2,)
    assert out.attributes.shape == (2, len(ATTRS))
    assert out.pooled.shape == (2, model.hidden_size)
    # the single head really is w_S^T f at the pooled feature
    expected = out.pooled @ model.heads["single"].weight[0]
    assert torch.allclose(out.single, expected, atol=1e-6)


def test_same_scores_alone_batched_and_either_padding(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    tok = model.tokenizer
    prompt = [{"role": "user", "content": "What is the capital of France?"}]
    texts = ["Paris.", "It is Paris, a city on the Seine with about two million people.", "Lyon"]
    rows = []
    for text in texts:
        enc = tok.apply_chat_template(prompt + [{"role": "assistant", "content": text}], tokenize=True)
        rows.append(list(enc["input_ids"]))
    alone = []
    for row in rows:
        ids, mask = pad([row], tok.pad_token_id, "right")
        out = model(input_ids=ids, attention_mask=mask)
        alone.append((out.single[0].item(), out.attributes[0].tolist()))
    for side in ("right", "left"):
        ids, mask = pad(rows, tok.pad_token_id, side)
        out = model(input_ids=ids, attention_mask=mask)
        for i, (single, attrs) in enumerate(alone):
            assert math.isclose(out.single[i].item(), single, abs_tol=1e-4), side
            assert out.attributes[i].tolist() == pytest.approx(attrs, abs=1e-4)


def test_save_and_load_round_trip_gives_identical_scores(tiny_llama_dir, tmp_path):
    model = make_model(tiny_llama_dir)
    model.config.rating_scales = {"helpsteer": {"helpfulness": [0.0, 4.0]}}
    folder = model.save_pretrained(tmp_path / "rm")
    assert (folder / "heads.safetensors").is_file() and (folder / "smorm_config.json").is_file()
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))
    loaded = RewardModel.from_pretrained(folder)
    assert loaded.config.attributes == ATTRS
    assert loaded.config.rating_scales == {"helpsteer": {"helpfulness": [0.0, 4.0]}}
    ids, mask = pad([[5, 6, 7, 8], [9, 10]], model.tokenizer.pad_token_id, "right")
    a, b = model(input_ids=ids, attention_mask=mask), loaded(input_ids=ids, attention_mask=mask)
    assert torch.equal(a.single, b.single) and torch.equal(a.attributes, b.attributes)


def test_delta_save_stores_only_trained_backbone_tensors(tiny_llama_dir, tmp_path):
    from smorm.models.trunk import apply_trunk_mode

    model = make_model(tiny_llama_dir)
    apply_trunk_mode(model, "top_k", top_k=1)
    with torch.no_grad():
        for parameter in model.backbone.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01)
    folder = model.save_pretrained(tmp_path / "rm")
    assert (folder / "backbone_delta.safetensors").is_file() and not (folder / "backbone").exists()
    loaded = RewardModel.from_pretrained(folder)
    ids, mask = pad([[5, 6, 7, 8]], model.tokenizer.pad_token_id, "right")
    assert torch.equal(model(input_ids=ids, attention_mask=mask).single,
                       loaded(input_ids=ids, attention_mask=mask).single)


def test_from_pretrained_rejects_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a smorm model folder"):
        RewardModel.from_pretrained(tmp_path)


# ---------------------------------------------------------------- gate head (mode G)

GATED_HEADS = {"single": {"kind": "linear"}, "multi": {"kind": "linear"},
               "gate": {"kind": "gate", "hidden_sizes": [16, 16], "dropout": 0.0, "beta_init": 100.0}}


def gated_model(tiny_llama_dir) -> RewardModel:
    model = make_model(tiny_llama_dir, heads=GATED_HEADS)
    with torch.no_grad():  # a non-trivial debias transform, so the test sees it applied
        model.heads["gate"].debias.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-0.3, 0.2, 0.0]]))
    return model


def encoded_rows(model: RewardModel, texts: list[str]) -> tuple[list[list[int]], list[int]]:
    from smorm.data.formatting import Formatter

    formatter = Formatter(model.tokenizer, 128)  # long enough that no prompt is cut
    encoded = [formatter.encode([{"role": "user", "content": "Name a fruit."}], t) for t in texts]
    return [e.input_ids for e in encoded], [e.response_start for e in encoded]


def test_gate_reads_the_prompt_token_and_weighs_debiased_attributes(tiny_llama_dir):
    model = gated_model(tiny_llama_dir)
    rows, starts = encoded_rows(model, ["An apple.", "Bananas are yellow and sweet."])
    ids, mask = pad(rows, model.tokenizer.pad_token_id, "right")
    out = model(input_ids=ids, attention_mask=mask, prompt_last_index=torch.tensor(starts) - 1)
    # independently: the hidden state at the prompt's last token, the softmax MLP, r @ T, times β
    hidden = model.encode(ids, mask)
    prompt = torch.stack([hidden[i, s - 1] for i, s in enumerate(starts)])
    gate = model.heads["gate"]
    weights = torch.softmax(gate.mlp(prompt), dim=-1)
    debiased = out.attributes @ gate.debias
    assert torch.allclose(out.gate_weights, weights, atol=1e-6)
    assert torch.allclose(out.gate_weights.sum(-1), torch.ones(2), atol=1e-6)
    assert torch.allclose(out.extra["gate"], 100.0 * (weights * debiased).sum(-1), atol=1e-4)
    assert torch.equal(reward_for_mode(out, "G"), out.extra["gate"])
    # the two rows share the prompt, and a causal backbone's state there has not seen the response
    assert torch.allclose(out.gate_weights[0], out.gate_weights[1], atol=1e-5)


def test_gate_without_a_prompt_index_is_a_clear_error(tiny_llama_dir):
    model = gated_model(tiny_llama_dir)
    ids, mask = pad([[5, 6, 7, 8]], model.tokenizer.pad_token_id, "right")
    with pytest.raises(ValueError, match="prompt_last_index"):
        model(input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match="response_starts"):
        model.score_token_ids([[5, 6, 7, 8]])
    with pytest.raises(ValueError, match="inside each row"):
        model(input_ids=ids, attention_mask=mask, prompt_last_index=torch.tensor([4]))
    with pytest.raises(ValueError, match="gate head"):
        reward_for_mode(RewardOutput(single=None, attributes=torch.zeros(1, 2), pooled=torch.zeros(1, 3)), "G")


def test_gate_is_the_same_for_either_padding_side_and_alone(tiny_llama_dir):
    model = gated_model(tiny_llama_dir)
    rows, starts = encoded_rows(model, ["Kiwi.", "A ripe mango from the market, cut in slices."])
    alone = [model(input_ids=torch.tensor([r]), attention_mask=torch.ones(1, len(r), dtype=torch.long),
                   prompt_last_index=torch.tensor([s - 1])).extra["gate"].item() for r, s in zip(rows, starts)]
    for side in ("right", "left"):
        ids, mask = pad(rows, model.tokenizer.pad_token_id, side)
        out = model(input_ids=ids, attention_mask=mask, prompt_last_index=torch.tensor(starts) - 1)
        assert out.extra["gate"].tolist() == pytest.approx(alone, abs=1e-3), side


def test_score_gives_g_and_weights_and_save_load_keeps_them(tiny_llama_dir, tmp_path):
    model = gated_model(tiny_llama_dir)
    model.config.mode = "G"
    prompts = ["Name a fruit.", "Say hi."]
    responses = ["A pear.", "Hello there!"]
    before = model.score(prompts, responses)
    rows = before.rows()
    assert before.mode == "G" and [r["G"] for r in rows] == pytest.approx(before.reward)
    for row in rows:
        assert set(row["gate_weights"]) == set(ATTRS)
        assert sum(row["gate_weights"].values()) == pytest.approx(1.0, abs=1e-6)
    folder = model.save_pretrained(tmp_path / "gated")
    config = json.loads((folder / "smorm_config.json").read_text())
    assert config["heads"]["gate"] == GATED_HEADS["gate"] and config["mode"] == "G"
    loaded = RewardModel.from_pretrained(folder)
    assert torch.equal(loaded.heads["gate"].debias, model.heads["gate"].debias)
    assert loaded.heads["gate"].beta.item() == model.heads["gate"].beta.item()
    after = loaded.score(prompts, responses)
    assert after.reward == before.reward and after.gate_weights == before.gate_weights


def test_gate_needs_a_multi_head(tiny_llama_dir):
    with pytest.raises(ValueError, match="no multi head"):
        make_model(tiny_llama_dir, heads={"single": {"kind": "linear"}, "gate": {"kind": "gate"}})
    with pytest.raises(ValueError, match="unknown option"):
        make_model(tiny_llama_dir, heads={"multi": {"kind": "linear"}, "gate": {"kind": "gate", "width": 3}})


def test_encoder_gate_reads_a_prompt_only_pass(tiny_tokenizer):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=4, intermediate_size=64, pad_token_id=tiny_tokenizer.pad_token_id))
    config = RewardModelConfig(backbone="tiny-bert", attributes=ATTRS, is_decoder=False, max_length=64,
                               heads={"multi": {"kind": "linear"}, "gate": {"kind": "gate", "hidden_sizes": [8]}})
    model = RewardModel(bert, tiny_tokenizer, config).eval()
    rows, starts = encoded_rows(model, ["Fig.", "Grapes grow in bunches on vines."])
    out = model.score_token_ids(rows, response_starts=starts)
    # every state of an encoder sees the response, so the prompt feature comes from ids[:start] alone
    for i, (row, start) in enumerate(zip(rows, starts)):
        alone = model.encode(torch.tensor([row[:start]]), torch.ones(1, start, dtype=torch.long))[0, -1]
        assert torch.allclose(out.extra["prompt_pooled"][i], alone, atol=1e-5)
    assert torch.allclose(out.gate_weights[0], out.gate_weights[1], atol=1e-5)
    ids, mask = pad(rows, model.tokenizer.pad_token_id, "right")
    with pytest.raises(ValueError, match="encoder"):
        model(input_ids=ids, attention_mask=mask, prompt_last_index=torch.tensor(starts) - 1)


def shifted_state(model: RewardModel, by: float) -> dict[str, torch.Tensor]:
    """The model's own tensors plus ``by``: what a gather would return, told apart from the module's."""
    return {k: v.detach().clone() + by for k, v in model.state_dict().items()}


def test_save_with_a_given_state_dict_writes_those_tensors_not_the_modules(tiny_llama_dir, tmp_path):
    # ZeRO-3/FSDP: the module holds shards, the gathered full state dict is passed in and saved
    model = make_model(tiny_llama_dir)
    given = shifted_state(model, 0.01)
    folder = model.save_pretrained(tmp_path / "rm", state_dict=given)
    loaded = RewardModel.from_pretrained(folder)
    assert loaded.state_dict().keys() == given.keys()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, given[name]), name
    reference = make_model(tiny_llama_dir)
    reference.load_state_dict(given)
    ids, mask = pad([[5, 6, 7, 8], [9, 10]], model.tokenizer.pad_token_id, "right")
    a, b = reference(input_ids=ids, attention_mask=mask), loaded(input_ids=ids, attention_mask=mask)
    assert torch.equal(a.single, b.single) and torch.equal(a.attributes, b.attributes)
    assert not torch.equal(model(input_ids=ids, attention_mask=mask).single, b.single)


def test_delta_save_with_a_given_state_dict_takes_the_trained_tensors_from_it(tiny_llama_dir, tmp_path):
    from smorm.models.trunk import apply_trunk_mode

    model = make_model(tiny_llama_dir)
    apply_trunk_mode(model, "top_k", top_k=1)
    given = shifted_state(model, 0.01)
    folder = model.save_pretrained(tmp_path / "rm", state_dict=given)
    assert (folder / "backbone_delta.safetensors").is_file()
    loaded = RewardModel.from_pretrained(folder)
    trained = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    loaded_state = loaded.backbone.state_dict()
    for name in trained:
        assert torch.equal(loaded_state[name], given[f"backbone.{name}"]), name
    # the frozen lower layers come from the base backbone, as in any delta save
    frozen = next(n for n, p in model.backbone.named_parameters() if not p.requires_grad)
    assert torch.equal(loaded_state[frozen], model.backbone.state_dict()[frozen])


def test_save_refuses_a_state_dict_that_lacks_a_tensor(tiny_llama_dir, tmp_path):
    model = make_model(tiny_llama_dir)
    given = shifted_state(model, 0.0)
    del given["heads.single.proj.weight"]
    with pytest.raises(ValueError, match="lacks 1 heads tensor"):
        model.save_pretrained(tmp_path / "rm", state_dict=given)
    given = {k.removeprefix("backbone."): v for k, v in shifted_state(model, 0.0).items()}  # wrong prefix
    with pytest.raises(ValueError, match="backbone tensor"):
        model.save_pretrained(tmp_path / "rm", state_dict=given)
    assert not (tmp_path / "rm").exists()
