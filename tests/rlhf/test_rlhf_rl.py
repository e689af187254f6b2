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
        "--precision", "fp32", "--out", str(out), *extra,
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


def _settings(tmp_path, **kw):
    from smorm.rlhf.settings import RLSettings

    return RLSettings(reward=str(tmp_path / "proxy"), gold=str(tmp_path / "gold"), out_dir=tmp_path / "rl", **kw)


def test_prompt_sets_hold_the_fixed_id_and_ood_prompts_out_of_training(tmp_path):
    from smorm.rlhf.generate import prompt_key
    from smorm.rlhf.rl import rl_prompt_sets

    train = write_prompts(tmp_path / "train.jsonl", [f"train {i}" for i in range(6)] + ["shared"])
    eval_id = write_prompts(tmp_path / "id.jsonl", ["shared", "id 1", "id 2"])
    ood = write_prompts(tmp_path / "ood.jsonl", ["ood 1", "ood 2", "ood 3", "ood 4"])
    settings = _settings(tmp_path, prompts=str(train), num_prompts=7, eval_file=str(eval_id), ood_file=str(ood),
                         eval_prompts=3)
    prompts, sets, report = rl_prompt_sets(settings, tmp_path / "proxy")
    text = lambda records: [r.prompt[-1]["content"] for r in records]  # noqa: E731
    assert text(sets["id"]) == ["shared", "id 1", "id 2"]
    assert len(sets["ood"]) == 3 and set(text(sets["ood"])) < {"ood 1", "ood 2", "ood 3", "ood 4"}
    assert text(prompts) == [f"train {i}" for i in range(6)]  # "shared" is an evaluation prompt: dropped
    assert report["dropped_as_eval_prompts"] == 1 and report["training_prompts"] == 6
    assert report["eval_sets"]["id"]["prompts"] == 3 and report["eval_sets"]["ood"]["prompts"] == 3
    held = {prompt_key(p.prompt) for v in sets.values() for p in v}
    assert not held & {prompt_key(p.prompt) for p in prompts}
    # without an eval_file the in-distribution set is the last eval_prompts of the training sample
    prompts, sets, report = rl_prompt_sets(_settings(tmp_path, prompts=str(train), num_prompts=4, eval_prompts=2),
                                           tmp_path / "proxy")
    assert text(sets["id"]) == ["train 5", "shared"] and text(prompts) == [f"train {i}" for i in range(4)]
    assert "ood" not in sets and report["eval_sets"]["id"]["kind"] == "carved out of the training sample"
    with pytest.raises(ValueError, match="too few"):
        rl_prompt_sets(_settings(tmp_path, prompts=str(train), num_prompts=1, eval_prompts=7), tmp_path / "proxy")


def test_rloo_config_carries_precision_schedule_and_epochs(tmp_path):
    from smorm.rlhf.rl import rloo_config

    settings = _settings(tmp_path, lr_scheduler="linear", num_iterations=4, prompts_per_step=3, num_generations=2,
                         steps=5, device="cpu")
    config = rloo_config(settings, bf16=True)
    assert config.bf16 and config.num_iterations == 4 and config.lr_scheduler_type.value == "linear"
    assert config.per_device_train_batch_size == 6 and config.max_steps == 5 and config.use_cpu
    default = rloo_config(_settings(tmp_path, device="cpu"))
    assert not default.bf16 and default.lr_scheduler_type.value == "constant" and default.num_iterations == 1


def test_the_proxy_scores_under_bf16_autocast_when_asked(tmp_path, tiny_llama_dir):
    from smorm.models.composite import score_responses
    from smorm.models.reward_model import RewardModel, reward_for_mode

    model = RewardModel.from_pretrained(save_reward_model(tmp_path / "proxy", tiny_llama_dir, seed=4))
    prompts = [[{"role": "user", "content": "Say hi."}], [{"role": "user", "content": "Name a fruit."}]]
    fp32 = reward_for_mode(score_responses(model, prompts, ["hi", "apple"]), "F").tolist()
    bf16 = reward_for_mode(score_responses(model, prompts, ["hi", "apple"], autocast_bf16=True), "F").tolist()
    assert ProxyReward(model, mode="F", autocast_bf16=True)(prompts, ["hi", "apple"]) == pytest.approx(bf16, abs=1e-6)
    assert ProxyReward(model, mode="F")(prompts, ["hi", "apple"]) == pytest.approx(fp32, abs=1e-6)
    assert bf16 != pytest.approx(fp32, abs=1e-7)  # the autocast really ran: bf16 rounding moves the scores


@pytest.mark.slow
def test_rl_tracks_fixed_id_and_ood_sets_and_evaluates_the_last_step(tmp_path, tiny_llama_dir):
    ood = write_prompts(tmp_path / "ood.jsonl", ["Write a haiku.", "Count to three.", "Name a colour."])
    _, _, out = run_rl_cli(tmp_path, tiny_llama_dir, "--num-prompts", "4", "--eval-prompts", "2", "--steps", "3",
                           "--eval-every", "2", "--ood-file", str(ood))
    for name in ("rl_eval", "rl_eval_ood"):
        with open(out / f"{name}.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert [int(r["step"]) for r in rows] == [0, 2, 3]  # every 2 steps, and the last
        assert all(float(r["seconds"]) >= 0 for r in rows) and (out / f"{name}.png").stat().st_size > 0
    ood_rows = list(csv.DictReader(open(out / "rl_eval_ood.csv")))
    assert all(int(r["samples"]) == 2 for r in ood_rows)  # at most eval_prompts of the file
    samples = [json.loads(line) for line in (out / "rl_eval_ood_samples.jsonl").read_text().splitlines()]
    assert {s["prompt"][-1]["content"] for s in samples} < {"Write a haiku.", "Count to three.", "Name a colour."}
    summary = json.loads((out / "rl_summary.json").read_text())
    final = summary["eval_final"]["ood"]
    assert final["step"] == 3 and final["gold"] == pytest.approx(float(ood_rows[-1]["gold"]), abs=1e-6)
    assert final["proxy_z"] == pytest.approx(final["proxy"] / final["proxy_sem"])
    assert summary["cost"]["seconds_per_step"] > 0 and len(summary["eval_ood_rows"]) == 3
    rows = list(csv.DictReader(open(out / "rl.csv")))
    assert all(float(r["step_time"]) > 0 for r in rows) and float(rows[-1]["elapsed_s"]) >= 0


def test_id_prompts_are_held_out_from_the_named_run_or_the_proxy(tmp_path, monkeypatch):
    import smorm.rlhf.prompts as prompts_module
    from smorm.rlhf.prompts import PromptRecord
    from smorm.rlhf.rl import rl_prompt_sets

    asked = []

    def fake_heldout(runs, count, seed, max_prompt_chars):
        asked.append([str(r) for r in runs])
        return [PromptRecord([{"role": "user", "content": f"p{i}"}]) for i in range(count)], {"kind": "id"}

    monkeypatch.setattr(prompts_module, "heldout_prompts", fake_heldout)
    rl_prompt_sets(_settings(tmp_path, num_prompts=2), tmp_path / "proxy")
    rl_prompt_sets(_settings(tmp_path, num_prompts=2, heldout_from=tmp_path / "bt"), tmp_path / "proxy")
    assert asked == [[str(tmp_path / "proxy")], [str(tmp_path / "bt")]]
