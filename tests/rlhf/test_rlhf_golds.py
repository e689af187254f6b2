"""The lab with every kind of judge: a gated smorm model (mode G) and a Hugging Face sequence classifier,
each as proxy and as gold, in `smorm bon` and in the RL gold tracker.

Expected scores are computed independently of the lab: ``RewardModel.score`` for smorm models, and the
classifier's own forward on text rendered with the tokenizer's chat template for the HF model.
"""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from smorm.cli import app
from tests.rlhf.rlhf_helpers import (
    GATED_HEADS,
    direct_hf_rewards,
    model_rewards,
    save_hf_classifier,
    save_reward_model,
    write_prompts,
)

NUM_PROMPTS, POOL = 3, 4


@pytest.fixture(scope="module")
def judges(tmp_path_factory, tiny_llama_dir, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("judges")
    bench = folder / "bench.jsonl"
    bench.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "yes " * (i + 1), "rejected": "no"}) + "\n"
                             for i in range(4)))
    return {
        "gated": save_reward_model(folder / "gated", tiny_llama_dir, seed=31, heads=GATED_HEADS, mode="G"),
        "bt": save_reward_model(folder / "bt", tiny_llama_dir, seed=32, heads={"single": {"kind": "linear"}}),
        "hf": save_hf_classifier(folder / "hf", tiny_tokenizer, seed=33),
        "prompts": write_prompts(folder / "prompts.jsonl"),
        "bench": bench,
        "folder": folder,
    }


def run_bon_cli(tiny_llama_dir, judges, out, proxies, gold, pool=None):
    args = ["bon", "--policy", str(tiny_llama_dir), "--gold", gold, "--prompts", str(judges["prompts"]),
            "--num-prompts", str(NUM_PROMPTS), "--n", str(POOL), "--max-new-tokens", "6", "--out", str(out),
            "--bench", f"pairs:{judges['bench']}", "--bench-sample", "4"]
    for proxy in proxies:
        args += ["--proxy", proxy]
    if pool is not None:
        args += ["--pool", str(pool)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with open(out / "bon.csv") as handle:
        rows = list(csv.DictReader(handle))
    return rows, json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def labs(judges, tiny_llama_dir):
    """Two `smorm bon` runs on one pool: the HF classifier as gold, then the gated model as gold."""
    hf_out, gated_out = judges["folder"] / "gold-hf", judges["folder"] / "gold-gated"
    hf_gold = run_bon_cli(tiny_llama_dir, judges, hf_out, [str(judges["gated"]), f"{judges['gated']}:F"],
                          str(judges["hf"]))
    gated_gold = run_bon_cli(tiny_llama_dir, judges, gated_out, [str(judges["bt"]), str(judges["hf"])],
                             str(judges["gated"]), pool=hf_out / "pool.jsonl")
    return {"hf": (hf_out, *hf_gold), "gated": (gated_out, *gated_gold)}


def pool_texts(pool_file):
    from smorm.rlhf.generate import read_pool

    entries = read_pool(pool_file)
    assert len(entries) == NUM_PROMPTS and all(len(e.responses) == POOL for e in entries)
    return entries, [e.prompt for e in entries for _ in e.responses], [r for e in entries for r in e.responses]


def check_top_pick(rows, label, proxy, gold):
    """At n = N the proxy's pick is its argmax: gold and proxy score minus the pool mean, averaged."""
    mine = [r for r in rows if r["proxy"] == label]
    assert len(mine) == POOL and float(mine[0]["gold_score"]) == pytest.approx(0.0, abs=1e-9)
    best = proxy.argmax(axis=1)
    rows_ = np.arange(NUM_PROMPTS)
    assert float(mine[-1]["gold_score"]) == pytest.approx(np.mean(gold[rows_, best] - gold.mean(axis=1)), abs=1e-4)
    assert float(mine[-1]["proxy_score"]) == pytest.approx(np.mean(proxy[rows_, best] - proxy.mean(axis=1)), abs=1e-4)


def test_hugging_face_gold_and_gated_proxies(labs, judges):
    out, rows, summary = labs["hf"]
    entries, prompts, responses = pool_texts(out / "pool.jsonl")
    shape = (NUM_PROMPTS, POOL)
    gold = direct_hf_rewards(judges["hf"], prompts, responses).reshape(shape)
    gated_g = model_rewards(judges["gated"], prompts, responses, "G").reshape(shape)
    gated_f = model_rewards(judges["gated"], prompts, responses, "F").reshape(shape)
    assert not np.allclose(gated_g, gated_f, atol=1e-3)
    assert sorted({r["proxy"] for r in rows}) == ["gated", "gated:F"]
    check_top_pick(rows, "gated", gated_g, gold)  # the gated model's default mode is G
    check_top_pick(rows, "gated:F", gated_f, gold)
    judged = {row["judge"]: row for row in summary["judges"]["rows"]}
    assert judged["hf"]["role"] == "gold" and judged["hf"]["mode"] == "F" and judged["hf"]["scores"]
    assert judged["gated"]["mode"] == "G" and judged["gated"]["scores"]


def test_gated_gold_and_hugging_face_proxy(labs, judges):
    out, rows, summary = labs["gated"]
    _, prompts, responses = pool_texts(labs["hf"][0] / "pool.jsonl")
    shape = (NUM_PROMPTS, POOL)
    gold = model_rewards(judges["gated"], prompts, responses, "G").reshape(shape)
    check_top_pick(rows, "bt", model_rewards(judges["bt"], prompts, responses, "F").reshape(shape), gold)
    check_top_pick(rows, "hf", direct_hf_rewards(judges["hf"], prompts, responses).reshape(shape), gold)
    assert summary["judges"]["rows"][-1] == {**summary["judges"]["rows"][-1], "judge": "gated", "mode": "G"}


def test_gated_scores_are_cached_with_the_g_reward(labs, judges, monkeypatch):
    import smorm.rlhf.scorers
    from smorm.rlhf.scorers import pool_scores

    def refuse(*args, **kwargs):
        raise AssertionError("the lab's cached scores must be read, not recomputed")

    out = labs["hf"][0]
    entries, prompts, responses = pool_texts(out / "pool.jsonl")
    monkeypatch.setattr(smorm.rlhf.scorers, "load_scorer", refuse)
    cached = pool_scores(judges["gated"], entries, out / "pool.jsonl", out / "scores")
    assert cached.default_mode == "G" and cached.gate_weights.shape == (NUM_PROMPTS, POOL, 2)
    assert np.ptp(cached.gate_weights[..., 0]) > 1e-3  # the gate reads the prompt: its weights vary
    np.testing.assert_allclose(cached.reward("G").reshape(-1), model_rewards(judges["gated"], prompts, responses, "G"),
                               atol=1e-5)


def test_gold_tracker_scores_with_a_gated_or_hugging_face_gold(judges, tmp_path):
    """The RL callback, fed the batch a gated proxy just rewarded, logs the HF gold's and the gated gold's scores."""
    from smorm.models.scorers import load_scorer
    from smorm.rlhf.rl import ProxyReward, gold_tracker

    prompts = ["Say hi.", "Name a fruit.", "Say hi.", "Name a fruit."]
    completions = ["hello", "apple", "hi!", "a pear, I think"]
    proxy = ProxyReward(load_scorer(judges["gated"]), name="proxy")  # default mode G
    expected_proxy = model_rewards(judges["gated"], prompts, completions, "G")
    assert proxy(prompts, completions) == pytest.approx(expected_proxy, abs=1e-5)
    golds = {"hf": (judges["hf"], None, direct_hf_rewards(judges["hf"], prompts, completions)),
             "gated": (judges["gated"], "G", expected_proxy)}
    for name, (folder, mode, expected_gold) in golds.items():
        out = tmp_path / name
        out.mkdir()
        tracker = gold_tracker(proxy, load_scorer(folder), mode, every=1, out_dir=out, log=lambda _: None)
        tracker.on_step_end(None, SimpleNamespace(global_step=1), None)
        assert tracker.rows[0]["gold"] == pytest.approx(expected_gold.mean(), abs=1e-5)
        samples = [json.loads(line) for line in (out / "rl_samples.jsonl").read_text().splitlines()]
        assert [s["gold"] for s in samples] == pytest.approx(expected_gold, abs=1e-5)
        assert [s["proxy"] for s in samples] == pytest.approx(expected_proxy, abs=1e-5)


@pytest.mark.slow
def test_rloo_with_a_gated_proxy_and_a_hugging_face_gold(judges, tiny_llama_dir, tmp_path):
    out = tmp_path / "rl"
    result = CliRunner().invoke(app, [
        "rl", "--policy", str(tiny_llama_dir), "--reward", str(judges["gated"]), "--gold", str(judges["hf"]),
        "--precision", "fp32",
        "--prompts", str(judges["prompts"]), "--num-prompts", "4", "--steps", "2", "--num-generations", "2",
        "--prompts-per-step", "2", "--max-completion-length", "6", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    samples = [json.loads(line) for line in (out / "rl_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and {s["step"] for s in samples} == {0, 1}
    prompts, completions = [s["prompt"] for s in samples], [s["completion"] for s in samples]
    assert [s["gold"] for s in samples] == pytest.approx(direct_hf_rewards(judges["hf"], prompts, completions),
                                                         abs=1e-4)
    assert [s["proxy"] for s in samples] == pytest.approx(model_rewards(judges["gated"], prompts, completions, "G"),
                                                          abs=1e-4)



def test_help_says_gold_and_proxy_may_be_gated_or_hugging_face():
    for command, option in (("bon", "--proxy"), ("bon", "--gold"), ("rl", "--reward"), ("rl", "--gold")):
        text = CliRunner().invoke(app, [command, "--help"]).output
        text = " ".join(text.replace("│", " ").split())  # unwrap rich's box
        start = text.index(option + " ")
        help_text = text[start : text.index("[required]", start)]
        assert "G for a gated model" in help_text, (command, option)
        assert "Hugging Face sequence classifier folder" in help_text, (command, option)
