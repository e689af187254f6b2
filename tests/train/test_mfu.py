"""``train_summary.json``'s MFU: real tokens counted from the batches, FLOPs and MFU from them.

The expected token counts are those of the training data encoded here with the project's
formatter, independently of the trainer's counter; the peak is the conftest's ``SMORM_PEAK_FLOPS``.
"""

from __future__ import annotations

import json
import logging

import pytest

from smorm.data.formatting import Formatter
from smorm.models.backbone import load_backbone
from smorm.train.config import RunConfig
from smorm.train.mfu import lm_tokens
from smorm.train.trainer import Trainer
from tests.models.test_flops import backbone_config, llama_layer_weights
from tests.train.helpers import PAIRS, RATINGS, tiny_config

PEAK = 1e12  # tests/conftest.py


def encoded_data(tiny_llama_dir, max_length: int = 48):
    """``[(chosen, rejected)]`` and ``[rated]`` sequences, as the trainer formats them."""
    formatter = Formatter(load_backbone(str(tiny_llama_dir)).tokenizer, max_length)
    pairs = [formatter.encode_pair([{"role": "user", "content": p}], c, r) for p, c, r in PAIRS]
    rated = [formatter.encode([{"role": "user", "content": p}], r) for p, r, _ in RATINGS]
    return pairs, rated


def one_epoch(tmp_path, tiny_llama_dir, trunk: str = "full", **train) -> dict:
    # 8 pairs in batches of 4: 2 steps; all 5 rated responses in every step
    config = tiny_config(tmp_path, tiny_llama_dir, trunk=trunk, max_steps=None, epochs=1, rating_batch_size=5,
                         **train)
    trainer = Trainer(RunConfig.model_validate(config), show_progress=False)
    trainer.setup()
    result = trainer.train()
    on_disk = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert on_disk["compute"] == json.loads(json.dumps(result.summary["compute"]))
    return on_disk


def weights_by_hand(tiny_llama_dir) -> tuple[int, int]:
    config = backbone_config(tiny_llama_dir)
    heads = config["hidden_size"] * (1 + 2)  # single, and multi over helpfulness and verbosity
    return llama_layer_weights(config), heads


def test_full_run_counts_the_real_tokens_and_its_mfu(tiny_llama_dir, tmp_path, caplog):
    pairs, rated = encoded_data(tiny_llama_dir)
    steps = 2
    tokens = (sum(len(c.input_ids) + len(r.input_ids) for c, r in pairs)
              + steps * sum(len(x.input_ids) for x in rated))
    rows = steps * (len(PAIRS) + len(RATINGS))
    with caplog.at_level(logging.INFO, logger="smorm"):
        summary = one_epoch(tmp_path, tiny_llama_dir, shared_prompt=False)
    train = summary["compute"]["train"]
    layer, heads = weights_by_hand(tiny_llama_dir)
    assert (train["tokens"], train["rows"], train["lm_tokens"]) == (tokens, rows, 0)
    assert train["model_flops"] == 6 * 2 * layer * tokens + 6 * heads * rows
    assert train["seconds"] > 0
    assert train["flops_per_s"] == pytest.approx(train["model_flops"] / train["seconds"])
    assert train["mfu"] == pytest.approx(train["model_flops"] / train["seconds"] / PEAK)
    assert summary["mfu"] == train["mfu"]
    assert summary["compute"]["peak"] == {"flops_per_s": PEAK, "source": "env", "dtype": "float32",
                                          "device": summary["compute"]["peak"]["device"], "devices": 1}
    assert "caching" not in summary["compute"]
    assert any(record.getMessage().startswith("MFU ") for record in caplog.records)


def test_a_shared_prompt_counts_once(tiny_llama_dir, tmp_path):
    pairs, rated = encoded_data(tiny_llama_dir)

    def packed(c, r) -> int:  # prompt ⊕ chosen ⊕ rejected when both start with the same prompt
        start = c.response_start
        shared = start == r.response_start and c.input_ids[:start] == r.input_ids[:start]
        return len(c.input_ids) + len(r.input_ids) - (start if shared else 0)

    assert all(c.response_start == r.response_start for c, r in pairs)  # this data shares every prompt
    tokens = sum(packed(c, r) for c, r in pairs) + 2 * sum(len(x.input_ids) for x in rated)
    train = one_epoch(tmp_path, tiny_llama_dir, shared_prompt=True)["compute"]["train"]
    layer, heads = weights_by_hand(tiny_llama_dir)
    assert train["tokens"] == tokens
    assert train["model_flops"] == 6 * 2 * layer * tokens + 6 * heads * 2 * (len(PAIRS) + len(RATINGS))


def packed_tokens(sequences: dict[tuple[int, ...], int]) -> int:
    """Tokens of distinct sequences ``{ids: response_start}`` when the sequences that share a prompt
    run as one unit: each prompt once, then every response (a sequence without both is whole)."""
    by_prompt: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    total = 0
    for ids, start in sequences.items():
        if 0 < start < len(ids):
            by_prompt.setdefault(ids[:start], []).append(ids)
        else:
            total += len(ids)
    return total + sum(len(prompt) + sum(len(ids) - len(prompt) for ids in members)
                       for prompt, members in by_prompt.items())


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("trunk", ["top_k", "frozen"])
def test_the_caching_pass_counts_its_own_tokens(tiny_llama_dir, tmp_path, trunk, shared):
    pairs, rated = encoded_data(tiny_llama_dir)
    starts = {tuple(s.input_ids): s.response_start for c, r in pairs for s in (c, r)}
    starts.update({tuple(x.input_ids): x.response_start for x in rated})
    every = set(starts)
    if shared:  # training: each pair's prompt once; the caching pass: each distinct prompt once
        assert all(c.response_start == r.response_start for c, r in pairs)
        sequence_tokens = sum(len(c.input_ids) + len(r.input_ids) - c.response_start for c, r in pairs)
        cached_tokens = packed_tokens(starts)
        assert cached_tokens < sum(map(len, every))
    else:
        sequence_tokens = sum(len(c.input_ids) + len(r.input_ids) for c, r in pairs)
        cached_tokens = sum(map(len, every))
    step_tokens = sequence_tokens + 2 * sum(len(x.input_ids) for x in rated)
    rows = 2 * (len(PAIRS) + len(RATINGS))
    compute = one_epoch(tmp_path, tiny_llama_dir, trunk=trunk, shared_prompt=shared)["compute"]
    layer, heads = weights_by_hand(tiny_llama_dir)
    caching, train = compute["caching"], compute["train"]
    # top_k = 1 of 2 layers: the caching pass runs layer 0, training layer 1; frozen: all, then the heads
    assert (caching["sequences"], caching["tokens"]) == (len(every), cached_tokens)
    assert caching["model_flops"] == 2 * {"top_k": 1, "frozen": 2}[trunk] * layer * caching["tokens"]
    assert caching["mfu"] == pytest.approx(caching["model_flops"] / caching["seconds"] / PEAK)
    if trunk == "top_k":
        assert train["tokens"] == step_tokens
        assert train["model_flops"] == 6 * layer * step_tokens + 6 * heads * rows
    else:
        assert train["tokens"] == 0
        assert train["model_flops"] == 6 * heads * rows


def test_lm_tokens_are_the_predicted_response_tokens():
    # positions max(start, 1) .. len - 1 predict a response token: 5 - 2 = 3 and 4 - 1 = 3 (start 0 -> 1)
    assert lm_tokens([[1] * 5], [[1] * 4], [2], [0], [0]) == 3 + 3
