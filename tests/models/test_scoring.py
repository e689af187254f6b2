"""Shared-prompt packing in scoring: the same outputs as unpacked scoring, in input order."""

from __future__ import annotations

import pytest
import torch

from smorm.models import packing, scoring
from smorm.models.scoring import PackedRow, plan_rows, row_batches, shared_prompt_groups
from tests.models.test_reward_model import GATED_HEADS, make_model

PROMPT_A = [5, 6, 7, 8, 9, 10, 11, 12]
PROMPT_B = [40, 41, 42]
PROMPT_C = [60, 61, 62, 63, 64]


def spy_pack_rows(monkeypatch) -> list[int]:
    """Record the real-token count of every packed batch."""
    tokens: list[int] = []
    real = packing.pack_rows

    def recording(prompts, responses, pad_id):
        packed = real(prompts, responses, pad_id)
        tokens.append(packed.num_tokens)
        return packed

    monkeypatch.setattr(packing, "pack_rows", recording)
    return tokens


def mixed_inputs() -> tuple[list[list[int]], list[int]]:
    """Two shared prompts (A: 3 responses, B: 2) interleaved with sequences whose prompt is unique."""
    rows = [
        (PROMPT_A, [20, 21, 22]),
        (PROMPT_C, [70, 71]),  # unique prompt
        (PROMPT_B, [43]),
        (PROMPT_A, [23]),
        ([90, 91], [92, 93, 94, 95]),  # unique prompt
        (PROMPT_B, [44, 45, 46, 47]),
        (PROMPT_A, [24, 25, 26, 27, 28]),
    ]
    return [p + r for p, r in rows], [len(p) for p, _ in rows]


def assert_same_outputs(packed, unpacked, names=("single", "attributes", "pooled")) -> None:
    for name in names:
        assert torch.allclose(getattr(packed, name), getattr(unpacked, name), atol=1e-4), name


def test_groups_split_shared_prompts_from_unique_ones():
    sequences, starts = mixed_inputs()
    groups, single = shared_prompt_groups(sequences, starts)
    assert groups == [[0, 3, 6], [2, 5]] and single == [1, 4]
    # no prompt left (start 0) or no response (start == length) is never grouped
    assert shared_prompt_groups([[1, 2], [1, 2], [1, 2, 3]], [0, 2, 2]) == ([], [0, 1, 2])


def test_rows_respect_the_row_budget_and_batches_the_padded_budgets():
    sequences = [[1, 2, 3, 10, 11], [1, 2, 3, 12], [1, 2, 3, 13, 14, 15]]  # prompt 3, responses 2, 1, 3
    assert plan_rows([[0, 1, 2]], sequences, [3, 3, 3], max_row_tokens=9) == [PackedRow([1, 2, 3], [0, 1, 2])]
    # 3 + 2 + 1 = 6 tokens fit in 7; the third response starts a new row with the prompt again
    assert plan_rows([[0, 1, 2]], sequences, [3, 3, 3], max_row_tokens=7) == [
        PackedRow([1, 2, 3], [0, 1]), PackedRow([1, 2, 3], [2])]
    # widths 6, 5, 4, 2: with 12 token slots, [6, 5] takes 2 * 6 = 12, then [4, 2] takes 2 * 4 = 8
    rows = [PackedRow([], [i]) for i in range(4)]
    assert row_batches(rows, [4, 6, 2, 5], token_budget=12, score_budget=1000) == [[1, 3], [0, 2]]
    # an attention-score budget of 60 allows one row of width 6 (36) but not two (72)
    assert row_batches(rows, [4, 6, 2, 5], token_budget=100, score_budget=60) == [[1], [3, 0], [2]]


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_scores_equal_unpacked_in_input_order(tiny_llama_dir, implementation, monkeypatch):
    model = make_model(tiny_llama_dir)
    model.base_model.config._attn_implementation = implementation
    sequences, starts = mixed_inputs()
    unpacked = model.score_token_ids(sequences, batch_size=3, response_starts=starts)
    tokens = spy_pack_rows(monkeypatch)
    packed = model.score_token_ids(sequences, batch_size=3, response_starts=starts, pack=True)
    assert_same_outputs(packed, unpacked)
    # each sequence scored alone gives the same row: input order is kept
    for i, sequence in enumerate(sequences):
        alone = model.score_token_ids([sequence], response_starts=[starts[i]])
        assert torch.allclose(packed.single[i], alone.single[0], atol=1e-4), i
    # prompt A (8 tokens) and B (3) were each encoded once: 3 * 8 + 2 * 3 tokens fewer than unpacked
    shared = [0, 2, 3, 5, 6]
    assert sum(tokens) == sum(len(sequences[i]) for i in shared) - 2 * len(PROMPT_A) - len(PROMPT_B)


def test_rm_bench_like_prompt_with_six_responses(tiny_llama_dir, monkeypatch):
    model = make_model(tiny_llama_dir)
    prompt = list(range(100, 130))  # 30 prompt tokens, 6 responses of 2..7 tokens
    responses = [list(range(200, 200 + n)) for n in (4, 7, 2, 5, 3, 6)]
    sequences, starts = [prompt + r for r in responses], [len(prompt)] * 6
    unpacked = model.score_token_ids(sequences, response_starts=starts)
    tokens = spy_pack_rows(monkeypatch)
    packed = model.score_token_ids(sequences, response_starts=starts, pack=True)
    assert_same_outputs(packed, unpacked)
    assert tokens == [30 + 27]  # one row: the prompt once and every response
    # batch_size 1 bounds a row by the longest sequence (37 tokens): the group spreads over rows
    tokens.clear()
    narrow = model.score_token_ids(sequences, batch_size=1, response_starts=starts, pack=True)
    assert_same_outputs(narrow, unpacked)
    assert len(tokens) > 1 and all(t <= 37 for t in tokens)


def test_packed_gate_reads_the_prompt_token_of_the_row(tiny_llama_dir):
    model = make_model(tiny_llama_dir, heads=GATED_HEADS)
    with torch.no_grad():
        model.heads["gate"].debias.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-0.3, 0.2, 0.0]]))
    sequences, starts = mixed_inputs()
    unpacked = model.score_token_ids(sequences, response_starts=starts)
    packed = model.score_token_ids(sequences, response_starts=starts, pack=True)
    assert_same_outputs(packed, unpacked, ("single", "attributes", "pooled", "gate_weights"))
    assert packed.extra.keys() == unpacked.extra.keys() == {"gate", "prompt_pooled"}
    for name in ("gate", "prompt_pooled"):
        assert torch.allclose(packed.extra[name], unpacked.extra[name], atol=1e-4), name
    # the three responses to prompt A share one prompt feature, and so one set of gate weights
    assert torch.equal(packed.extra["prompt_pooled"][0], packed.extra["prompt_pooled"][3])
    assert torch.allclose(packed.gate_weights[0], packed.gate_weights[6], atol=1e-6)


def test_prompt_features_without_a_gate(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    sequences, starts = mixed_inputs()
    unpacked = model.score_token_ids(sequences, response_starts=starts, with_prompt_features=True)
    packed = model.score_token_ids(sequences, response_starts=starts, with_prompt_features=True, pack=True)
    assert torch.allclose(packed.extra["prompt_pooled"], unpacked.extra["prompt_pooled"], atol=1e-4)


def test_encoder_falls_back_to_unpacked_scoring(tiny_tokenizer, monkeypatch):
    from transformers import BertConfig, BertModel

    from smorm.models.reward_model import RewardModel, RewardModelConfig

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=4, intermediate_size=64, pad_token_id=tiny_tokenizer.pad_token_id))
    config = RewardModelConfig(backbone="tiny-bert", attributes=["a"], is_decoder=False, max_length=64,
                               heads={"single": {"kind": "linear"}})
    model = RewardModel(bert, tiny_tokenizer, config).eval()
    assert not scoring.can_pack(model)
    sequences, starts = mixed_inputs()
    tokens = spy_pack_rows(monkeypatch)
    packed = model.score_token_ids(sequences, response_starts=starts, pack=True)
    assert tokens == []
    assert torch.equal(packed.single, model.score_token_ids(sequences, response_starts=starts).single)


def test_pack_needs_response_starts(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    with pytest.raises(ValueError, match="pack=True needs response_starts"):
        model.score_token_ids([[1, 2, 3]], pack=True)


def test_all_unique_prompts_score_exactly_as_unpacked(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    sequences, starts = [PROMPT_A + [20], PROMPT_B + [21, 22]], [len(PROMPT_A), len(PROMPT_B)]
    packed = model.score_token_ids(sequences, response_starts=starts, pack=True)
    assert torch.equal(packed.single, model.score_token_ids(sequences, response_starts=starts).single)
