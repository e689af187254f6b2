"""SmormRewardFunction on every kind of scorer: a gated model (mode G), a Hugging Face classifier, a composite.

Expected rewards come from ``RewardModel.score`` (smorm models) or from the classifier's own forward on
text rendered with the tokenizer's chat template (Hugging Face), never from the function under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from smorm.integrations.trl import SmormRewardFunction
from tests.rlhf.rlhf_helpers import (
    GATED_HEADS,
    direct_hf_rewards,
    model_rewards,
    save_hf_classifier,
    save_reward_model,
)

PROMPTS = ["What is 2 + 2?", "Name a colour.", "Say hello."]
COMPLETIONS = ["4", "Blue, like the sky.", "Hello! How can I help?"]


@pytest.fixture(scope="module")
def gated_dir(tmp_path_factory, tiny_llama_dir):
    return save_reward_model(tmp_path_factory.mktemp("gated") / "model", tiny_llama_dir, seed=21, heads=GATED_HEADS,
                             mode="G")


def test_gated_model_gives_mode_g(gated_dir):
    from smorm.models.reward_model import RewardModel

    model = RewardModel.from_pretrained(gated_dir)
    expected = {mode: model_rewards(gated_dir, PROMPTS, COMPLETIONS, mode) for mode in ("G", "M")}
    assert not np.allclose(expected["G"], expected["M"], atol=1e-3)
    chat_prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    chat_completions = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    assert SmormRewardFunction(model)(PROMPTS, COMPLETIONS) == pytest.approx(expected["G"], abs=1e-5)  # default G
    assert SmormRewardFunction(model, mode="G")(chat_prompts, chat_completions) == pytest.approx(expected["G"], abs=1e-5)
    assert SmormRewardFunction(model, mode="M")(PROMPTS, COMPLETIONS) == pytest.approx(expected["M"], abs=1e-5)
    assert SmormRewardFunction(gated_dir, mode="G")(PROMPTS, COMPLETIONS) == pytest.approx(expected["G"], abs=1e-5)


def test_hugging_face_classifier_folder_and_object(tmp_path, tiny_tokenizer):
    from smorm.models.hf_scorer import load_hf_reward_model

    folder = save_hf_classifier(tmp_path / "hf", tiny_tokenizer, seed=22)
    expected = direct_hf_rewards(folder, PROMPTS, COMPLETIONS)
    assert SmormRewardFunction(folder)(PROMPTS, COMPLETIONS) == pytest.approx(expected, abs=1e-4)
    loaded = SmormRewardFunction(load_hf_reward_model(str(folder)), mode="F")
    assert loaded(PROMPTS, COMPLETIONS) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="mode L needs the multi-attribute head"):
        SmormRewardFunction(folder, mode="L")(PROMPTS, COMPLETIONS)


def test_composite_folder(tmp_path, gated_dir, tiny_llama_dir):
    from smorm.models.composite import write_ensemble

    other = save_reward_model(tmp_path / "other", tiny_llama_dir, seed=23, heads=GATED_HEADS, mode="G")
    write_ensemble(tmp_path / "ens", [gated_dir, other], combine="min")
    expected = np.minimum(model_rewards(gated_dir, PROMPTS, COMPLETIONS, "G"),
                          model_rewards(other, PROMPTS, COMPLETIONS, "G"))
    assert SmormRewardFunction(tmp_path / "ens")(PROMPTS, COMPLETIONS) == pytest.approx(expected, abs=1e-5)
