"""Uncertainty-weighted ensembles (``combine: uwo``, Coste et al. 2024 Sec. 3): mean - λ · variance.

Expected values are worked out by hand or with numpy (``np.mean`` / ``np.var``, population variance)
from each member's own rewards, never through :func:`smorm.models.composite.uwo_rewards`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from smorm.cli import app
from smorm.models.composite import COMPOSITE_NAME, combine_ensemble, uwo_rewards, write_ensemble
from smorm.models.scorers import available_modes, load_scorer
from smorm.types import RewardOutput
from tests.rlhf.rlhf_helpers import model_rewards, save_reward_model
from tests.train.helpers import tiny_config

PROMPTS = [
    "Name a fruit.",
    "Say hi.",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
]
RESPONSES = ["apple", "hi there, how are you?", "4"]


def test_uwo_by_hand():
    # columns: (1, 3, 5): mean 3, population variance (4 + 0 + 4) / 3 = 8/3; (2, 2, 8): mean 4, variance 8
    rewards = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]])
    assert uwo_rewards(rewards, 0.5).tolist() == pytest.approx([3 - 0.5 * 8 / 3, 4 - 0.5 * 8])
    assert uwo_rewards(rewards, 0.0).tolist() == pytest.approx([3.0, 4.0])  # λ = 0: the plain mean
    # members that agree pay no penalty whatever λ is
    assert uwo_rewards(torch.tensor([[1.5], [1.5]]), 100.0).tolist() == pytest.approx([1.5])


@pytest.mark.parametrize("mode", ["F", "L", "M"])
def test_combine_ensemble_uwo_in_every_mode(mode):
    """Each member's reward in ``mode`` first (F: single; L: mean attribute; M: their mean), then UWO."""
    rng = np.random.default_rng(0)
    singles = rng.normal(size=(3, 4))  # [k, N]
    attributes = rng.normal(size=(3, 4, 2))  # [k, N, K]
    outputs = [
        RewardOutput(single=torch.tensor(s), attributes=torch.tensor(a), pooled=torch.zeros(4, 5))
        for s, a in zip(singles, attributes)
    ]
    member = {"F": singles, "L": attributes.mean(axis=-1), "M": 0.5 * (singles + attributes.mean(axis=-1))}[
        mode
    ]
    expected = np.mean(member, axis=0) - 0.7 * np.var(member, axis=0)
    combined = combine_ensemble(outputs, "uwo", mode=mode, uwo_lambda=0.7)
    np.testing.assert_allclose(combined.single.numpy(), expected, atol=1e-12)
    assert combined.attributes is None and combined.pooled.shape == (4, 15)
    with pytest.raises(ValueError, match="'uwo_lambda' must be a number"):
        combine_ensemble(outputs, "uwo", mode=mode)


@pytest.fixture(scope="module")
def members(tmp_path_factory, tiny_llama_dir):
    folder = tmp_path_factory.mktemp("uwo-members")
    return [save_reward_model(folder / f"seed-{s}", tiny_llama_dir, seed=20 + s, mode="M") for s in range(3)]


@pytest.mark.parametrize("mode", ["F", "L", "M"])
def test_uwo_ensemble_folder_round_trip(members, tmp_path, mode):
    write_ensemble(tmp_path / "ens", members, combine="uwo", mode=mode, uwo_lambda=0.25)
    stored = json.loads((tmp_path / "ens" / COMPOSITE_NAME).read_text())
    assert stored["combine"] == "uwo" and stored["uwo_lambda"] == 0.25 and stored["mode"] == mode
    scorer = load_scorer(tmp_path / "ens")
    assert scorer.heads == ("single",) and available_modes(scorer) == ["F"] and scorer.config.mode == "F"
    rewards = np.stack([model_rewards(m, PROMPTS, RESPONSES, mode) for m in members])  # [k, N]
    expected = rewards.mean(axis=0) - 0.25 * rewards.var(axis=0)
    assert np.var(rewards, axis=0).min() > 1e-4  # the members disagree, so the penalty is not 0
    np.testing.assert_allclose(scorer.score(PROMPTS, RESPONSES).reward, expected, atol=1e-5)


def test_uwo_field_errors_name_the_file_and_field(members, tmp_path):
    for value, message in (
        (None, "must be a number >= 0"),
        (-0.1, "must be a finite number >= 0"),
        (math.nan, "must be a finite number >= 0"),
        (True, "must be a number >= 0"),
    ):
        with pytest.raises(ValueError, match=rf"{COMPOSITE_NAME}: field 'uwo_lambda' {message}"):
            write_ensemble(tmp_path / "bad", members, combine="uwo", uwo_lambda=value)
    with pytest.raises(ValueError, match="field 'uwo_lambda' is only read by combine 'uwo', not 'mean'"):
        write_ensemble(tmp_path / "bad", members, combine="mean", uwo_lambda=0.5)
    assert not (tmp_path / "bad").exists()
    # a hand-edited file is checked when it is read
    write_ensemble(tmp_path / "ens", members[:2], combine="uwo", uwo_lambda=1.0)
    spec = json.loads((tmp_path / "ens" / COMPOSITE_NAME).read_text())
    (tmp_path / "ens" / COMPOSITE_NAME).write_text(json.dumps({**spec, "uwo_lambda": "big"}))
    with pytest.raises(ValueError, match=rf"ens/{COMPOSITE_NAME}: field 'uwo_lambda' must be a number"):
        load_scorer(tmp_path / "ens")


def test_a_composite_written_before_uwo_still_loads(members, tmp_path):
    write_ensemble(tmp_path / "ens", members[:2], combine="min", mode="F")
    path = tmp_path / "ens" / COMPOSITE_NAME
    spec = json.loads(path.read_text())
    del spec["uwo_lambda"]  # the field did not exist in files written before it
    path.write_text(json.dumps(spec))
    expected = np.minimum(
        model_rewards(members[0], PROMPTS, RESPONSES, "F"), model_rewards(members[1], PROMPTS, RESPONSES, "F")
    )
    np.testing.assert_allclose(
        load_scorer(tmp_path / "ens").score(PROMPTS, RESPONSES).reward, expected, atol=1e-5
    )


def test_ensemble_command_writes_uwo(tiny_llama_dir, tmp_path):
    raw = tiny_config(tmp_path, tiny_llama_dir, steps=1)
    raw.update(
        method="sorm",
        losses=[{"name": "bt"}],
        model={"backbone": str(tiny_llama_dir), "heads": {"single": {"kind": "linear"}}},
    )
    del raw["data"]["ratings"]
    (tmp_path / "sorm.yaml").write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    base = [
        "ensemble",
        str(tmp_path / "sorm.yaml"),
        "--seeds",
        "0",
        "1",
        "--quiet",
        f"output_dir={tmp_path / 'e'}",
    ]
    # λ missing: refused before any member is trained
    refused = runner.invoke(app, [*base, "--combine", "uwo"])
    assert refused.exit_code == 2 and "'uwo_lambda' must be a number" in refused.output
    assert not (tmp_path / "e-ensemble").exists()
    result = runner.invoke(app, [*base, "--combine", "uwo", "--uwo-lambda", "2"])
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "e-ensemble" / COMPOSITE_NAME).read_text())
    assert spec["combine"] == "uwo" and spec["uwo_lambda"] == 2.0
    rewards = np.stack(
        [
            model_rewards(tmp_path / "e-ensemble" / f"seed-{s}" / "model", PROMPTS, RESPONSES, "F")
            for s in (0, 1)
        ]
    )
    expected = rewards.mean(axis=0) - 2.0 * rewards.var(axis=0)
    np.testing.assert_allclose(
        load_scorer(tmp_path / "e-ensemble").score(PROMPTS, RESPONSES).reward, expected, atol=1e-5
    )
