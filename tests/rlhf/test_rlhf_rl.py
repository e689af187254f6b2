"""RLOO through TRL on a tiny policy: proxy reward function, gold tracked every step, CSV + PNG."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from smorm.cli import app
from smorm.rlhf.rl import ProxyReward
from tests.rlhf.rlhf_helpers import save_reward_model, write_prompts


def test_proxy_reward_takes_plain_and_conversational_inputs(tmp_path, tiny_llama_dir):
    from smorm.models.reward_model import RewardModel

    folder = save_reward_model(tmp_path / "proxy", tiny_llama_dir, seed=4)
    model = RewardModel.from_pretrained(folder)
    reward = ProxyReward(model, mode="M", name="proxy")
    expected = model.score(["Say hi.", "Name a fruit."], ["hi", "apple"], mode="M").reward
    plain = reward(["Say hi.", "Name a fruit."], ["hi", "apple"])
    chat = reward([[{"role": "user", "content": "Say hi."}], [{"role": "user", "content": "Name a fruit."}]],
                  [[{"role": "assistant", "content": "hi"}], [{"role": "assistant", "content": "apple"}]],
                  trainer_state=None)
    assert plain == pytest.approx(expected, abs=1e-6) and chat == pytest.approx(expected, abs=1e-6)
    assert reward.__name__ == "proxy" and reward.last_batch[1] == ["hi", "apple"]
    assert reward.last_batch[0][1] == [{"role": "user", "content": "Name a fruit."}]
    assert reward.last_batch[2].tolist() == pytest.approx(expected, abs=1e-6)


def run_rl_cli(tmp_path, policy, *extra: str):
    """``smorm rl`` on a tiny policy: proxy (mode F) and gold (mode M) are tiny random reward models,
    2 prompts x 2 generations a step, 8-token completions, lr 1e-2; returns (proxy, gold, out)."""
    proxy = save_reward_model(tmp_path / "proxy", policy, seed=1)
    gold = save_reward_model(tmp_path / "gold", policy, seed=2)
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "rl"
    result = CliRunner().invoke(app, [
        "rl", "--policy", str(policy), "--reward", f"{proxy}:F", "--gold", f"{gold}:M", "--prompts", str(prompts),
        "--num-generations", "2", "--prompts-per-step", "2", "--max-completion-length", "8", "--lr", "1e-2",
        "--out", str(out), *extra,
    ])
    assert result.exit_code == 0, result.output
    return proxy, gold, out


@pytest.mark.slow
def test_rloo_run_tracks_the_gold_and_trains_the_policy(tmp_path, tiny_llama_dir):
    import torch
    from safetensors.torch import load_file

    proxy, gold, out = run_rl_cli(tmp_path, tiny_llama_dir, "--num-prompts", "6", "--steps", "3", "--save-policy")
    with open(out / "rl.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    for row in rows:
        assert all(math.isfinite(float(row[k])) for k in ("proxy", "gold", "proxy_sem", "gold_sem"))
        assert int(row["samples"]) == 4  # 2 prompts x 2 generations
    assert (out / "rl.png").stat().st_size > 0
    samples = [json.loads(line) for line in (out / "rl_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 12 and {s["step"] for s in samples} == {0, 1, 2}
    step0 = [s for s in samples if s["step"] == 0]
    assert sum(s["gold"] for s in step0) / 4 == pytest.approx(float(rows[0]["gold"]), abs=1e-4)
    from smorm.models.reward_model import RewardModel

    gold_model, proxy_model = RewardModel.from_pretrained(gold), RewardModel.from_pretrained(proxy)
    last = samples[-1]
    assert gold_model.score([last["prompt"]], [last["completion"]], mode="M").reward[0] == pytest.approx(
        last["gold"], abs=1e-4)
    assert proxy_model.score([last["prompt"]], [last["completion"]], mode="F").reward[0] == pytest.approx(
        last["proxy"], abs=1e-4)
    before = {k: v for k, v in load_file(next(tiny_llama_dir.glob("*.safetensors"))).items()}
    after = load_file(next((out / "policy").glob("*.safetensors")))
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert changed, "RLOO did not change any policy weight"


def test_running_mean_by_hand():
    import numpy as np

    from smorm.rlhf.plots import running_mean

    np.testing.assert_allclose(running_mean(np.array([1.0, 2.0, 3.0, 6.0]), 2), [1.0, 1.5, 2.5, 4.5])
    np.testing.assert_allclose(running_mean(np.array([4.0, 0.0]), 1), [4.0, 0.0])


def test_early_late_change_by_hand():
    from smorm.rlhf.rl import early_late_change

    rows = [{"proxy": p, "gold": g} for p, g in zip([0, 2, 5, 5, 5, 5, 5, 5, 4, 6], [1] * 8 + [0, 2])]
    change = early_late_change(rows)  # window = 10 // 5 = 2 steps
    assert change["proxy"]["first"] == 1.0 and change["proxy"]["last"] == 5.0
    assert change["proxy"]["change"] == 4.0
    # s.e.m. of [0, 2] and of [4, 6] is 1 each -> the change's is sqrt(2)
    assert change["proxy"]["change_sem"] == pytest.approx(math.sqrt(2))
    assert change["gold"]["change"] == 0.0 and change["gold"]["first_sem"] == 0.0
    assert early_late_change(rows[:1]) == {}


@pytest.mark.slow
def test_rl_eval_on_fixed_prompts_is_paired_against_step_0(tmp_path, tiny_llama_dir):
    from smorm.models.reward_model import RewardModel
    from smorm.rlhf.generate import load_policy, sample_responses
    from smorm.rlhf.settings import SamplingConfig

    _, gold, out = run_rl_cli(tmp_path, tiny_llama_dir, "--num-prompts", "4", "--eval-prompts", "2",
                              "--steps", "2", "--seed", "3")
    with open(out / "rl_eval.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [0, 1, 2] and all(int(r["samples"]) == 2 for r in rows)
    assert float(rows[0]["gold"]) == 0.0 and float(rows[0]["proxy"]) == 0.0  # the change from itself
    samples = [json.loads(line) for line in (out / "rl_eval_samples.jsonl").read_text().splitlines()]
    by_step = {step: [s for s in samples if s["step"] == step] for step in (0, 1, 2)}
    eval_prompts = [s["prompt"] for s in by_step[0]]
    assert all([s["prompt"] for s in by_step[k]] == eval_prompts for k in (1, 2))  # the same prompts each time
    summary = json.loads((out / "rl_summary.json").read_text())
    trained = {json.dumps(s["prompt"]) for s in map(json.loads, (out / "rl_samples.jsonl").read_text().splitlines())}
    assert not trained & {json.dumps(p) for p in eval_prompts}  # held out from training
    assert summary["prompts"]["eval_prompts"] == 2
    # step 0 is the initial policy: its completions are reproducible from the seeded sampler alone
    model, tokenizer, _ = load_policy(str(tiny_llama_dir))
    texts = [t[0][0] for t in sample_responses(model, tokenizer, eval_prompts, SamplingConfig(
        num_samples=1, max_new_tokens=8, temperature=1.0, seed=3))]
    assert texts == [s["completion"] for s in by_step[0]]
    gold_model = RewardModel.from_pretrained(gold)
    for step in (1, 2):  # the change is per prompt from step 0, scored by the gold's mode M
        now = gold_model.score(eval_prompts, [s["completion"] for s in by_step[step]], mode="M").reward
        first = gold_model.score(eval_prompts, texts, mode="M").reward
        diff = np.asarray(now) - np.asarray(first)
        assert float(rows[step]["gold"]) == pytest.approx(float(diff.mean()), abs=1e-4)
        assert float(rows[step]["gold_sem"]) == pytest.approx(float(diff.std(ddof=1) / math.sqrt(2)), abs=1e-4)
    assert (out / "rl_eval.png").stat().st_size > 0
