"""Shared-prompt packing gives the scores and gradients of separate prompt+response sequences."""

from __future__ import annotations

import pytest
import torch

from smorm.models.packing import gather_segments, pack_rows, packed_hidden_states
from smorm.models.reward_model import pool_last_token
from tests.models.test_reward_model import make_model, pad


def test_mask_lets_each_response_see_the_prompt_and_itself_only():
    packed = pack_rows([[1, 2]], [[[3, 4], [5]]], pad_id=0)
    m = packed.attention_mask[0, 0].int().tolist()
    assert packed.position_ids[0].tolist() == [0, 1, 2, 3, 2]
    assert packed.last_index.tolist() == [[3, 4]]
    assert m == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 0, 0, 1],  # the second response does not see the first
    ]


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_scores_and_gradients_equal_two_sequence_forward(tiny_llama_dir, implementation):
    model = make_model(tiny_llama_dir)
    model.base_model.config._attn_implementation = implementation
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    chosen = [[20, 21, 22], [23]]
    rejected = [[30, 31], [32, 33, 34, 35]]

    packed = pack_rows(prompts, [[c, r] for c, r in zip(chosen, rejected)], model.tokenizer.pad_token_id)
    pooled = gather_segments(packed_hidden_states(model.base_model, packed), packed)  # [2, 2, d]
    packed_out = model.heads_forward(pooled.reshape(-1, pooled.shape[-1]))
    packed_scores = packed_out.single.reshape(2, 2)
    packed_scores.sum().backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    rows = [p + c for p, c in zip(prompts, chosen)] + [p + r for p, r in zip(prompts, rejected)]
    ids, mask = pad(rows, model.tokenizer.pad_token_id, "right")
    separate = model(input_ids=ids, attention_mask=mask).single  # [chosen0, chosen1, rejected0, rejected1]
    separate.sum().backward()
    separate_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    expected = torch.stack([separate[:2], separate[2:]], dim=1)
    assert torch.allclose(packed_scores, expected, atol=1e-4)
    assert packed_grads.keys() == separate_grads.keys()
    for name in packed_grads:
        assert torch.allclose(packed_grads[name], separate_grads[name], atol=1e-4), name
    # and the packed rows hold exactly the prompt once plus both responses
    assert packed.num_tokens == sum(len(p) + len(c) + len(r) for p, c, r in zip(prompts, chosen, rejected))
    assert packed.num_tokens == int(mask.sum()) - sum(len(p) for p in prompts)


def test_pooling_helper_agrees_with_reward_model_pooling(tiny_llama_dir):
    model = make_model(tiny_llama_dir)
    ids, mask = pad([[5, 6, 7]], model.tokenizer.pad_token_id, "right")
    hidden = model.encode(ids, mask)
    packed = pack_rows([[5, 6]], [[[7]]], model.tokenizer.pad_token_id)
    packed_pooled = gather_segments(packed_hidden_states(model.base_model, packed), packed)[:, 0]
    assert torch.allclose(packed_pooled, pool_last_token(hidden, mask), atol=1e-5)


def test_units_fill_rows_first_fit_decreasing():
    from smorm.models.packing import fill_rows

    # capacity 7 (the longest unit), longest first: 7 alone; 5 + 2; 4 + 3; then 1 fits nowhere but a new row
    assert fill_rows([5, 7, 2, 4, 3, 1]) == [[1], [0, 2], [3, 4], [5]]
    assert fill_rows([5, 7, 2], padding_free=False) == [[0], [1], [2]]
    assert fill_rows([]) == []


def test_block_diagonal_mask_and_restarting_positions():
    from smorm.models.packing import Unit, pack_units

    # unit 0: prompt [1, 2] with responses [3] and [4] (4 tokens); unit 1: no prompt, response [7];
    # unit 2 (5 tokens) sets the capacity: it takes a row alone, units 0 and 1 share the other
    units = [Unit([1, 2], [[3], [4]]), Unit([], [[7]]), Unit([20, 21, 22], [[23], [24]])]
    packed, slots, rows = pack_units(units, pad_id=0)
    assert rows == [[2], [0, 1]] and slots == [[(1, 0), (1, 1)], [(1, 2)], [(0, 0), (0, 1)]]
    assert packed.input_ids.tolist() == [[20, 21, 22, 23, 24], [1, 2, 3, 4, 7]]
    assert packed.position_ids[1].tolist() == [0, 1, 2, 2, 0]
    assert packed.last_index[1].tolist() == [2, 3, 4] and packed.prompt_last[1].tolist() == [1, 1, 4]
    assert packed.attention_mask[1, 0].int().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 0, 1, 0],
        [0, 0, 0, 0, 1],  # the second unit sees nothing of the first
    ]
    # off: one unit per row
    assert pack_units(units, pad_id=0, padding_free=False)[2] == [[0], [1], [2]]


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_padding_free_rows_give_the_padded_scores_and_gradients(tiny_llama_dir, implementation):
    """Several pairs and rated responses per row: the scores and gradients of separate sequences."""
    from smorm.models.packing import Unit, pack_units, slot_tensor

    model = make_model(tiny_llama_dir)
    model.base_model.config._attn_implementation = implementation
    units = [Unit([5, 6, 7, 8, 9, 10], [[20, 21, 22], [30, 31]]), Unit([11, 12, 13], [[23], [32, 33, 34, 35]]),
             Unit([14, 15], [[40, 41]]), Unit([], [[50, 51, 52]]), Unit([16], [[60]])]
    packed, slots, rows = pack_units(units, model.tokenizer.pad_token_id)
    assert len(rows) < len(units)  # several units share a row
    flat = [slot for unit_slots in slots for slot in unit_slots]
    packed_scores = model(packed=packed, packed_slots=slot_tensor(flat)).single
    packed_scores.sum().backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    sequences = [u.prompt + r for u in units for r in u.responses]
    ids, mask = pad(sequences, model.tokenizer.pad_token_id, "right")
    separate = model(input_ids=ids, attention_mask=mask).single
    separate.sum().backward()
    assert torch.allclose(packed_scores, separate, atol=1e-4)
    for name, grad in packed_grads.items():
        assert torch.allclose(grad, dict(model.named_parameters())[name].grad, atol=1e-4), name
    assert packed.num_tokens == sum(len(u) for u in units)
