"""RewardModel: heads, pooling at the last real token, modes, save/load."""

from __future__ import annotations

import math

import pytest
import torch

from smorm.models.reward_model import (
    RewardModel,
    RewardModelConfig,
    last_token_index,
    pool_last_token,
    reward_for_mode,
)
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
        for name, parameter in model.backbone.named_parameters():
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
