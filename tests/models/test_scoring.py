"""Shared-prompt packing in scoring: the same outputs as unpacked scoring, in input order."""

from __future__ import annotations

import pytest
import torch

from smorm.models import packing, scoring
from smorm.models.scoring import sequence_units, shared_prompt_groups, unit_batches
from tests.models.test_reward_model import GATED_HEADS, make_model

PROMPT_A = [5, 6, 7, 8, 9, 10, 11, 12]
PROMPT_B = [40, 41, 42]
PROMPT_C = [60, 61, 62, 63, 64]


def spy_pack_rows(monkeypatch) -> list[int]:
    """Record the real-token count of every packed batch."""
    tokens: list[int] = []
    real = packing.pack_layout

    def recording(rows, pad_id):
        packed = real(rows, pad_id)
        tokens.append(packed.num_tokens)
        return packed

    monkeypatch.setattr(packing, "pack_layout", recording)
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


def test_units_share_a_prompt_and_spread_when_too_long():
    sequences = [[1, 2, 3, 10, 11], [1, 2, 3, 12], [1, 2, 3, 13, 14, 15], [7, 8, 9], [4, 5]]
    starts = [3, 3, 3, 1, 2]  # the last one has no response tokens: left to the padded path
    units, members, single = sequence_units(sequences, starts, batch_size=4)
    # the longest sequence is 6 tokens, sqrt(4) * 6 = 12 bounds a unit: the shared prompt takes all three
    assert [(u.prompt, u.responses) for u in units] == [([1, 2, 3], [[10, 11], [12], [13, 14, 15]]), ([7], [[8, 9]])]
    assert members == [[0, 1, 2], [3]] and single == [4]
    # batch_size 1: a unit holds at most 6 tokens, so the group spreads over two units, each with the prompt
    units, members, _ = sequence_units(sequences, starts, batch_size=1)
    assert [u.responses for u in units[:2]] == [[[10, 11], [12]], [[13, 14, 15]]] and members[:2] == [[0, 1], [2]]


def test_unit_batches_fill_the_token_budget_longest_first():
    # lengths 4, 6, 2, 5 with 12 tokens per batch: [6, 5] (11), then [4, 2] (6)
    assert unit_batches([4, 6, 2, 5], token_budget=12) == [[1, 3], [0, 2]]
    # a unit longer than the budget goes alone
    assert unit_batches([20, 3], token_budget=10) == [[0], [1]]


def test_unit_batches_cap_attention_scores_at_a_padded_batch():
    # batch_size 4 of sequences up to 6 tokens: 24 tokens and 4 * 6**2 = 144 scores per padded batch.
    # A 12-token shared-prompt unit sets rows 12 wide: 12 * 12 = 144 scores already, so it goes alone;
    # the 3-token units after it fill the 24 tokens (8 * 3 tokens in rows 3 wide: 8 * 9 = 72 scores).
    lengths = [3, 12, 3, 3, 3, 3, 3, 3, 3]
    assert unit_batches(lengths, token_budget=24, longest=6) == [[1], [0, 2, 3, 4, 5, 6, 7, 8]]
    # by tokens alone the wide unit takes four more: 12 * 24 = 288 scores, twice a padded batch's
    assert unit_batches(lengths, token_budget=24) == [[1, 0, 2, 3, 4], [5, 6, 7, 8]]


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
    # prompt A (8 tokens) and B (3) were each encoded once: 2 * 8 + 1 * 3 tokens fewer than unpacked,
    # and the unique-prompt sequences went into the same padding-free rows
    assert sum(tokens) == sum(map(len, sequences)) - 2 * len(PROMPT_A) - len(PROMPT_B)


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


def test_all_unique_prompts_score_as_unpacked(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    sequences, starts = [PROMPT_A + [20], PROMPT_B + [21, 22]], [len(PROMPT_A), len(PROMPT_B)]
    packed = model.score_token_ids(sequences, response_starts=starts, pack=True)
    assert torch.allclose(packed.single, model.score_token_ids(sequences, response_starts=starts).single, atol=1e-5)


def test_packing_nothing_or_only_prompts_falls_back_to_padded(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    empty = model.score_token_ids([], response_starts=[], pack=True)
    assert empty.pooled.shape[0] == 0
    # no sequence has response tokens: every one goes through the padded path
    sequences = [[5, 6, 7], [8, 9]]
    packed = model.score_token_ids(sequences, response_starts=[3, 2], pack=True)
    assert torch.equal(packed.single, model.score_token_ids(sequences, response_starts=[3, 2]).single)
