"""The TRL reward function: both dataset formats, local model and server URL give RewardModel.score."""

from __future__ import annotations

import math

import pytest

from smorm.integrations.trl import SmormRewardFunction, score_url, smorm_reward_function, to_prompt_response
from smorm.serve import ServeSettings, create_app
from smorm.serve.loadtest import free_port

PROMPTS = ["What is 2 + 2?", "Name a colour.", "Say hello."]
COMPLETIONS = ["4", "Blue, like the sky.", "Hello! How can I help?"]


def test_formats_become_prompt_messages_and_response_text():
    assert to_prompt_response("Hi", "Hello") == ([{"role": "user", "content": "Hi"}], "Hello")
    conversational = to_prompt_response(
        [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
        [{"role": "assistant", "content": "Hello"}],
    )
    assert conversational == ([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}], "Hello")
    # Multi-turn completions (tool use): earlier turns join the prompt, the last reply is scored.
    prompt, response = to_prompt_response(
        [{"role": "user", "content": "Weather?"}],
        [{"role": "assistant", "content": "Let me check."}, {"role": "user", "content": "ok"},
         {"role": "assistant", "content": [{"type": "text", "text": "Sunny"}, {"type": "text", "text": "."}]}],
    )
    assert [m["content"] for m in prompt] == ["Weather?", "Let me check.", "ok"] and response == "Sunny."
    with pytest.raises(ValueError, match=r"completions\[0\]: the last message is 'user'"):
        to_prompt_response("Hi", [{"role": "user", "content": "?"}])
    with pytest.raises(ValueError, match=r"prompts\[0\]"):
        to_prompt_response(42, "x")


def test_local_reward_function_in_both_formats(reward_model):
    expected_f = reward_model.score(PROMPTS, COMPLETIONS, mode="F").reward
    expected_l = reward_model.score(PROMPTS, COMPLETIONS, mode="L").reward
    reward = smorm_reward_function(reward_model, mode="F")
    assert reward.__name__ == "smorm_F"
    plain = reward(prompts=PROMPTS, completions=COMPLETIONS, completion_ids=[[1]] * 3, trainer_state=None)
    chat = reward(prompts=[[{"role": "user", "content": p}] for p in PROMPTS],
                  completions=[[{"role": "assistant", "content": c}] for c in COMPLETIONS])
    assert plain == pytest.approx(expected_f, abs=1e-6) and chat == pytest.approx(expected_f, abs=1e-6)
    assert all(isinstance(x, float) for x in plain)
    named = SmormRewardFunction(reward_model, mode="L", name="helpful_rm")
    assert named.__name__ == "helpful_rm"
    assert named(PROMPTS, COMPLETIONS) == pytest.approx(expected_l, abs=1e-6)
    assert named([], []) == []
    with pytest.raises(ValueError, match="3 prompts but 2 completions"):
        named(PROMPTS, COMPLETIONS[:2])


def test_reward_function_loads_a_folder(reward_model_dir, reward_model):
    reward = SmormRewardFunction(reward_model_dir.parent)  # the run folder holding model/
    assert reward(PROMPTS, COMPLETIONS) == pytest.approx(reward_model.score(PROMPTS, COMPLETIONS).reward, abs=1e-6)


def test_remote_reward_function_equals_local(reward_model, threaded_server):
    expected = reward_model.score(PROMPTS * 3, COMPLETIONS * 3, mode="M").reward
    app = create_app(reward_model, ServeSettings(token="tok", max_items=4))
    with threaded_server(app, free_port()) as server:
        remote = SmormRewardFunction(url=server.url, mode="M", token="tok", request_items=4)
        got = remote(prompts=[[{"role": "user", "content": p}] for p in PROMPTS * 3],
                     completions=[[{"role": "assistant", "content": c}] for c in COMPLETIONS * 3])
        unauthorised = SmormRewardFunction(url=server.url + "/score", token="wrong")
        with pytest.raises(RuntimeError, match="answered 401"):
            unauthorised(PROMPTS, COMPLETIONS)
    assert got == pytest.approx(expected, abs=1e-5)  # 9 items sent as requests of at most 4


def test_constructor_checks():
    with pytest.raises(ValueError, match="exactly one"):
        SmormRewardFunction()
    with pytest.raises(ValueError, match="http"):
        SmormRewardFunction(url="file:///etc/passwd")
    assert score_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000/score"
    assert score_url("http://127.0.0.1:8000/score") == "http://127.0.0.1:8000/score"


@pytest.mark.slow
def test_grpo_in_trl_calls_the_remote_reward_function(reward_model, tiny_llama_dir, threaded_server, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    app = create_app(reward_model, ServeSettings(max_items=8))
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS + ["Count to three."]]
    with threaded_server(app, free_port()) as server:
        reward = SmormRewardFunction(url=server.url, mode="M", name="smorm_remote_M")
        args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
                          max_completion_length=8, max_steps=1, logging_steps=1, report_to=[], save_strategy="no",
                          use_cpu=True, seed=0)
        trainer = GRPOTrainer(model=str(tiny_llama_dir), reward_funcs=[reward], args=args,
                              train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]))
        trainer.train()
        served = app.state.batcher.stats.sequences
    logged = [entry for entry in trainer.state.log_history if "rewards/smorm_remote_M/mean" in entry]
    assert logged and all(math.isfinite(entry["rewards/smorm_remote_M/mean"]) for entry in logged)
    assert served >= 4  # the completions were scored by the server
