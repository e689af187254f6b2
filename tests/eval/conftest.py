"""Fixtures for the evaluation tests: a tiny smorm model and small benchmark files in the real formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.eval.eval_data import ATTRIBUTES, BAD, GOOD, QUESTIONS, write_jsonl


@pytest.fixture(scope="session")
def tiny_reward_model(tiny_llama_dir):
    """A random RewardModel on the tiny Llama with a single and a two-attribute multi head."""
    import torch

    from smorm.models.backbone import load_backbone
    from smorm.models.reward_model import RewardModel, RewardModelConfig

    backbone = load_backbone(str(tiny_llama_dir))
    config = RewardModelConfig(backbone=str(tiny_llama_dir), attributes=list(ATTRIBUTES),
                               heads={"single": {"kind": "linear"}, "multi": {"kind": "linear"}}, max_length=96)
    torch.manual_seed(0)
    return RewardModel(backbone.model, backbone.tokenizer, config).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_reward_model, tmp_path_factory) -> Path:
    return tiny_reward_model.save_pretrained(tmp_path_factory.mktemp("smorm-model") / "model")


@pytest.fixture(scope="session")
def bench_files(tmp_path_factory) -> dict[str, Path]:
    """Small benchmark files in the released formats: RewardBench jsonl, an RM-Bench folder (one
    file per domain, domain from the file name), generic pairs jsonl and ranked jsonl."""
    folder = tmp_path_factory.mktemp("benchmarks")
    subsets = ["alpacaeval-easy", "alpacaeval-easy", "mt-bench-hard", "mt-bench-hard", "llmbar-natural", "llmbar-natural"]
    reward_bench = write_jsonl(folder / "reward-bench.jsonl", [
        {"prompt": q, "chosen": g, "rejected": b, "subset": s, "id": i}
        for i, (q, g, b, s) in enumerate(zip(QUESTIONS, GOOD, BAD, subsets, strict=True))
    ])
    rm_bench = folder / "rm-bench"
    rm_bench.mkdir()
    items = [
        {"id": i, "prompt": q, "chosen": [g, g + " More detail follows here.", "**" + g + "**\n\n- detail"],
         "rejected": [b, b + " More detail follows here.", "**" + b + "**\n\n- detail"]}
        for i, (q, g, b) in enumerate(zip(QUESTIONS, GOOD, BAD, strict=True))
    ]
    (rm_bench / "chat_filtered.json").write_text(json.dumps(items[:4]))
    (rm_bench / "safety-response_filtered.json").write_text(json.dumps(items[4:]))
    pairs = write_jsonl(folder / "pairs.jsonl", [
        {"prompt": q, "chosen": g, "rejected": b, **({"subset": "odd"} if i % 2 else {})}
        for i, (q, g, b) in enumerate(zip(QUESTIONS, GOOD, BAD, strict=True))
    ])
    ranked = write_jsonl(folder / "ranked.jsonl", [
        {"prompt": q, "responses": [g, b, g + " " + b], "scores": [3, 1, 2]}
        for q, g, b in zip(QUESTIONS, GOOD, BAD, strict=True)
    ] + [{"prompt": QUESTIONS[0], "responses": [GOOD[0], BAD[0]], "best": 0}])
    return {"reward-bench": reward_bench, "rm-bench": rm_bench, "pairs": pairs, "ranked": ranked}
