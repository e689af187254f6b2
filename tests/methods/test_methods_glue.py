"""GRM's response log-probabilities (train glue) against a full-vocabulary forward summed by hand."""

from __future__ import annotations

import pytest
import torch

from smorm.models.reward_model import RewardModel, RewardModelConfig
from smorm.train.losses_glue import response_logps


def test_response_logps_match_the_causal_lm_summed_by_hand(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    backbone = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = RewardModelConfig(backbone=str(tiny_llama_dir), heads={"single": {"kind": "linear"}}, with_lm_head=True)
    model = RewardModel(backbone, AutoTokenizer.from_pretrained(tiny_llama_dir), config)
    pad = model.tokenizer.pad_token_id
    input_ids = torch.tensor([[5, 9, 14, 22, 31, 40], [7, 8, 11, 13, pad, pad]])
    attention_mask = (input_ids != pad).long()
    prompt_lengths = [2, 3]  # responses: tokens 2..5 of row 0, tokens 3..3 of row 1
    with torch.no_grad():
        hidden = model(input_ids=input_ids, attention_mask=attention_mask, return_hidden=True).extra["hidden"]
        logps, counts = response_logps(model, hidden, input_ids, attention_mask, prompt_lengths)
        log_probs = torch.log_softmax(backbone(input_ids=input_ids, attention_mask=attention_mask).logits.double(), -1)
    expected = []
    for row, (start, length) in enumerate(zip(prompt_lengths, attention_mask.sum(-1).tolist())):
        # token t is predicted by position t-1
        expected.append(sum(float(log_probs[row, t - 1, input_ids[row, t]]) for t in range(start, length)))
    assert counts.tolist() == [4, 1]
    assert logps.tolist() == pytest.approx(expected, abs=1e-4)


def test_response_logps_need_the_lm_head(tiny_llama_dir):
    from transformers import AutoModel, AutoTokenizer

    config = RewardModelConfig(backbone=str(tiny_llama_dir), heads={"single": {"kind": "linear"}})
    model = RewardModel(AutoModel.from_pretrained(tiny_llama_dir), AutoTokenizer.from_pretrained(tiny_llama_dir),
                        config)
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="with_lm_head: true"):
        response_logps(model, torch.zeros(1, 3, 32), ids, torch.ones_like(ids), [1])


def test_chunked_checkpointed_lm_head_gives_the_same_values_and_gradients(tiny_llama_dir, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import smorm.train.losses_glue as glue

    backbone = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = RewardModelConfig(backbone=str(tiny_llama_dir), heads={"single": {"kind": "linear"}}, with_lm_head=True)
    model = RewardModel(backbone, AutoTokenizer.from_pretrained(tiny_llama_dir), config)
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 32)
    input_ids = torch.tensor([[5, 9, 14, 22, 31, 40], [7, 8, 11, 13, 17, 19]])
    mask = torch.ones_like(input_ids)
    results = []
    for chunk in (512, 2):  # one chunk of 7 response tokens, then four chunks
        monkeypatch.setattr(glue, "LM_CHUNK_TOKENS", chunk)
        states = hidden.clone().requires_grad_(True)
        logps, _ = response_logps(model, states, input_ids, mask, [2, 3])
        (logps * torch.tensor([1.0, -2.0])).sum().backward()
        results.append((logps.detach(), states.grad, model.backbone.lm_head.weight.grad.clone()))
        model.zero_grad()
    (v1, g1, w1), (v2, g2, w2) = results
    assert torch.allclose(v1, v2, atol=1e-6) and torch.allclose(g1, g2, atol=1e-6) and torch.allclose(w1, w2, atol=1e-6)
    assert g1[0, 0].abs().sum() == 0 and g1[0, 1].abs().sum() > 0  # only positions predicting a response token
