"""`smorm serve` on every scorer `load_scorer` opens: composites (Baseline SM, ensembles) and a Hugging Face classifier.

Expected rewards are computed without the server and without the composite code: each member's own
``RewardModel.score`` (combined here by hand: a mean, a min, Baseline SM's average) or the classifier's
own forward on text rendered with its tokenizer's chat template.
"""

from __future__ import annotations

import numpy as np
import pytest

from smorm.models.scorers import load_scorer
from smorm.serve import ServeSettings, create_app
from tests.rlhf.rlhf_helpers import (
    ATTRIBUTES,
    GATED_HEADS,
    direct_hf_rewards,
    model_rewards,
    save_hf_classifier,
    save_reward_model,
)

# Each within the members' max_length (96 byte tokens), so no scoring path truncates.
ITEMS = [
    {"prompt": "What is 2 + 2?", "response": "4"},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A colour?"},
                  {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another?"}],
     "response": "Green."},
    {"prompt": "Say nothing.", "response": ""},
    {"prompt": "The sea?", "response": "Wide and deep."},
]
PROMPTS = [item.get("prompt", item.get("messages")) for item in ITEMS]
RESPONSES = [item["response"] for item in ITEMS]


def rendered_queries(tokenizer) -> list[str]:
    """Each item as one full text, rendered with the scorer's chat template (what OpenRLHF posts)."""
    return [tokenizer.apply_chat_template(
        (p if isinstance(p, list) else [{"role": "user", "content": p}]) + [{"role": "assistant", "content": r}],
        tokenize=False) for p, r in zip(PROMPTS, RESPONSES, strict=True)]


def served(path, **settings):
    """A client of the app serving whatever is at ``path``, opened by the one loader as `smorm serve` does."""
    from fastapi.testclient import TestClient

    return TestClient(create_app(load_scorer(path), ServeSettings(**settings)))


def post_score(client, mode: str | None = None) -> dict:
    answer = client.post("/score", json={"items": ITEMS, **({"mode": mode} if mode else {})})
    assert answer.status_code == 200, answer.text
    return answer.json()


def rewards_of(body: dict) -> list[float]:
    return [row["reward"] for row in body["results"]]


@pytest.fixture(scope="module")
def gated_members(tmp_path_factory, tiny_llama_dir):
    folder = tmp_path_factory.mktemp("gated-members")
    return [save_reward_model(folder / f"seed-{seed}" / "model", tiny_llama_dir, seed=seed, heads=GATED_HEADS, mode="G")
            for seed in (31, 32)]


def test_baseline_sm_serves_the_sorm_the_morm_and_their_mean(tmp_path, tiny_llama_dir):
    from smorm.models.composite import write_baseline_sm
    from smorm.models.reward_model import RewardModel

    sorm = save_reward_model(tmp_path / "sorm", tiny_llama_dir, seed=33, heads={"single": {"kind": "linear"}})
    morm = save_reward_model(tmp_path / "morm", tiny_llama_dir, seed=34, heads={"multi": {"kind": "linear"}})
    write_baseline_sm(tmp_path / "baseline", sorm, morm)
    sorm_f = model_rewards(sorm, PROMPTS, RESPONSES, "F")
    morm_scores = RewardModel.from_pretrained(morm).score(PROMPTS, RESPONSES, mode="L")
    morm_l = np.asarray(morm_scores.reward)
    expected = {"F": sorm_f, "L": morm_l, "M": 0.5 * (sorm_f + morm_l)}
    assert not np.allclose(expected["F"], expected["L"], atol=1e-3)  # the modes tell the members apart

    with served(tmp_path / "baseline") as client:
        info = client.get("/info").json()
        default = post_score(client)
        by_mode = {mode: post_score(client, mode) for mode in ("F", "L")}
        gated = client.post("/score", json={"items": ITEMS, "mode": "G"})
    assert info["scorer"] == "CompositeScorer" and info["composite"]["kind"] == "baseline_sm"
    assert set(info["composite"]["members"]) == {"sorm", "morm"}
    assert info["modes"] == ["F", "L", "M"] and info["default_mode"] == "M"
    assert info["attributes"] == ATTRIBUTES
    assert default["mode"] == "M"
    assert rewards_of(default) == pytest.approx(expected["M"], abs=1e-5)
    for mode, body in by_mode.items():
        assert rewards_of(body) == pytest.approx(expected[mode], abs=1e-5)
    for i, row in enumerate(default["results"]):
        assert row["F"] == pytest.approx(expected["F"][i], abs=1e-5)
        for name in ATTRIBUTES:  # the attributes are the MORM's own
            assert row["attributes"][name] == pytest.approx(morm_scores.attributes[name][i], abs=1e-5)
    assert gated.status_code == 422 and "available: F, L, M" in gated.json()["detail"]


def test_mean_ensemble_serves_every_mode_as_the_members_mean(tmp_path, gated_members):
    from smorm.models.composite import write_ensemble
    from smorm.models.reward_model import RewardModel

    write_ensemble(tmp_path / "ens", gated_members, combine="mean")
    expected = {mode: np.mean([model_rewards(m, PROMPTS, RESPONSES, mode) for m in gated_members], axis=0)
                for mode in ("F", "L", "M", "G")}
    assert not np.allclose(expected["G"], expected["M"], atol=1e-3)
    queries = rendered_queries(RewardModel.from_pretrained(gated_members[0]).tokenizer)

    with served(tmp_path / "ens") as client:
        info = client.get("/info").json()
        by_mode = {mode: post_score(client, mode) for mode in ("F", "L", "M", "G")}
        default = post_score(client)
        rewards = client.post("/get_reward", json={"query": queries})
    assert info["modes"] == ["F", "L", "M", "G"] and info["default_mode"] == "G"
    assert info["composite"]["kind"] == "ensemble" and info["composite"]["combine"] == "mean"
    assert list(info["composite"]["members"]) == ["member-0", "member-1"]
    for mode, body in by_mode.items():
        assert body["mode"] == mode
        assert rewards_of(body) == pytest.approx(expected[mode], abs=1e-5), mode
    assert default["mode"] == "G" and rewards_of(default) == pytest.approx(expected["G"], abs=1e-5)
    # Full texts find the prompt/response boundary every member's gate reads.
    assert rewards.status_code == 200, rewards.text
    assert rewards.json()["rewards"] == pytest.approx(expected["G"], abs=1e-5)


def test_min_ensemble_serves_the_members_minimum_and_only_that(tmp_path, gated_members):
    from smorm.models.composite import write_ensemble

    write_ensemble(tmp_path / "ens-min", gated_members, combine="min")
    expected = np.minimum(*(model_rewards(m, PROMPTS, RESPONSES, "G") for m in gated_members))
    with served(tmp_path / "ens-min") as client:
        info = client.get("/info").json()
        body = post_score(client)
        asked_l = client.post("/score", json={"items": ITEMS, "mode": "L"})
    assert info["modes"] == ["F"] and info["heads"] == ["single"]
    assert rewards_of(body) == pytest.approx(expected, abs=1e-5)
    assert asked_l.status_code == 422 and "available: F" in asked_l.json()["detail"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, tiny_tokenizer):
    return save_hf_classifier(tmp_path_factory.mktemp("hf-classifier"), tiny_tokenizer, seed=35)


def test_hugging_face_classifier_is_served_in_mode_f_through_the_command(classifier_dir, tiny_tokenizer,
                                                                        monkeypatch):
    import uvicorn
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from smorm.cli import app

    expected = direct_hf_rewards(classifier_dir, PROMPTS, RESPONSES)
    started = {}
    # `smorm serve` as typed, up to the point where uvicorn would listen; the app it built is kept.
    monkeypatch.setattr(uvicorn, "run", lambda served_app, **options: started.update(app=served_app, **options))
    result = CliRunner().invoke(app, ["serve", str(classifier_dir), "--hf", "--port", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert started["port"] == 0 and started["host"] == "127.0.0.1"

    with TestClient(started["app"]) as client:
        info = client.get("/info").json()
        body = post_score(client)
        asked_m = client.post("/score", json={"items": ITEMS, "mode": "M"})
        rewards = client.post("/get_reward", json={"query": rendered_queries(tiny_tokenizer)})
    assert info["scorer"] == "HFRewardModel" and info["modes"] == ["F"] and info["attributes"] == []
    assert body["mode"] == "F"
    assert rewards_of(body) == pytest.approx(expected, abs=1e-4)
    assert all(row["F"] == row["reward"] and "attributes" not in row for row in body["results"])
    assert asked_m.status_code == 422
    assert asked_m.json()["detail"] == "mode 'M' is not available for this model (HFRewardModel); available: F"
    assert rewards.json()["rewards"] == pytest.approx(expected, abs=1e-4)


def test_a_default_mode_the_scorer_lacks_is_refused_at_start(classifier_dir):
    with pytest.raises(ValueError, match=r"mode 'L' is not available for this model \(HFRewardModel\); available: F"):
        create_app(load_scorer(classifier_dir), ServeSettings(mode="L"))
