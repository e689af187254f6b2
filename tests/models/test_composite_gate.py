"""Composites of gated members (mode G): response_starts reach every member, G is combined reward by reward.

Expected values come from scoring each member alone with ``RewardModel.score``.
"""

from __future__ import annotations

import numpy as np
import pytest

from smorm.models.composite import score_responses, write_baseline_sm, write_ensemble
from smorm.models.scorers import load_scorer
from tests.rlhf.rlhf_helpers import GATED_HEADS, model_rewards, save_reward_model

PROMPTS = ["Say hi.", "Name a fruit.", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]]
RESPONSES = ["hi there", "apple", "4"]


@pytest.fixture(scope="module")
def members(tmp_path_factory, tiny_llama_dir):
    folder = tmp_path_factory.mktemp("gated-members")
    return {
        "a": save_reward_model(folder / "a", tiny_llama_dir, seed=11, heads=GATED_HEADS, mode="G"),
        "b": save_reward_model(folder / "b", tiny_llama_dir, seed=12, heads=GATED_HEADS, mode="G"),
        "plain": save_reward_model(folder / "plain", tiny_llama_dir, seed=13, mode="M"),
    }


def test_mean_ensemble_of_gated_members_gives_the_mean_g(members, tmp_path):
    write_ensemble(tmp_path / "ens", [members["a"], members["b"]], combine="mean")
    scorer = load_scorer(tmp_path / "ens")
    assert "gate" in scorer.heads and scorer.config.mode == "G"
    expected = {mode: (model_rewards(members["a"], PROMPTS, RESPONSES, mode)
                       + model_rewards(members["b"], PROMPTS, RESPONSES, mode)) / 2 for mode in ("G", "F", "M")}
    assert not np.allclose(expected["G"], expected["M"], atol=1e-3)  # G is its own reward, not M
    for mode in ("G", "F", "M"):
        got = scorer.score(PROMPTS, RESPONSES, mode=mode).reward
        np.testing.assert_allclose(got, expected[mode], atol=1e-5)
    np.testing.assert_allclose(scorer.score(PROMPTS, RESPONSES).reward, expected["G"], atol=1e-5)


def test_min_ensemble_in_mode_g(members, tmp_path):
    write_ensemble(tmp_path / "ens-min", [members["a"], members["b"]], combine="min", mode="G")
    scorer = load_scorer(tmp_path / "ens-min")
    expected = np.minimum(model_rewards(members["a"], PROMPTS, RESPONSES, "G"),
                          model_rewards(members["b"], PROMPTS, RESPONSES, "G"))
    np.testing.assert_allclose(scorer.score(PROMPTS, RESPONSES).reward, expected, atol=1e-5)


def test_baseline_sm_with_a_gated_morm(members, tmp_path):
    write_baseline_sm(tmp_path / "bsm", sorm=members["plain"], morm=members["a"])
    scorer = load_scorer(tmp_path / "bsm")
    expected = (model_rewards(members["plain"], PROMPTS, RESPONSES, "F")
                + model_rewards(members["a"], PROMPTS, RESPONSES, "L")) / 2
    np.testing.assert_allclose(scorer.score(PROMPTS, RESPONSES).reward, expected, atol=1e-5)


def test_score_token_ids_without_response_starts_names_the_fix(members, tmp_path):
    write_ensemble(tmp_path / "ens2", [members["a"], members["b"]])
    scorer = load_scorer(tmp_path / "ens2")
    with pytest.raises(ValueError, match="pass response_starts"):
        scorer.score_token_ids([[1, 2, 3]])
    output = score_responses(scorer, PROMPTS, RESPONSES)
    assert output.extra["gate"].shape == (3,)


def test_a_member_without_a_gate_cannot_join_a_mode_g_ensemble(members, tmp_path):
    with pytest.raises(ValueError, match="member 'member-1' has no multi and gate head for mode G"):
        write_ensemble(tmp_path / "mixed", [members["a"], members["plain"]], mode="G")
    write_ensemble(tmp_path / "mixed-m", [members["a"], members["plain"]], mode="M")
    scorer = load_scorer(tmp_path / "mixed-m")
    assert "gate" not in scorer.heads  # not every member has a gate
    expected = (model_rewards(members["a"], PROMPTS, RESPONSES, "M")
                + model_rewards(members["plain"], PROMPTS, RESPONSES, "M")) / 2
    np.testing.assert_allclose(scorer.score(PROMPTS, RESPONSES).reward, expected, atol=1e-5)
