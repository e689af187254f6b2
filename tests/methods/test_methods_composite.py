"""Ensembles (mean / min of k members) and Baseline SM (SORM F and MORM L averaged), checked against
each member's own scores combined by hand; folder format errors; the CLI commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from smorm.cli import app
from smorm.models.composite import (
    COMPOSITE_NAME,
    CompositeScorer,
    write_baseline_sm,
    write_ensemble,
)
from smorm.models.reward_model import RewardModel, RewardModelConfig
from smorm.models.scorers import load_scorer
from tests.train.helpers import tiny_config

PROMPTS = ["How do I boil an egg?", "Name a prime number.", "Say hello politely."]
RESPONSES = ["Put it in boiling water for 8 minutes.", "8.", "Hello, nice to meet you!"]
ATTRIBUTES = ["helpfulness", "verbosity"]
SMORM_HEADS = {"single": {"kind": "linear"}, "multi": {"kind": "linear", "out": 2}}


def make_member(folder: Path, backbone_dir: Path, heads: dict, seed: int, mode: str, attributes=ATTRIBUTES) -> Path:
    """A model folder with seeded random heads on the tiny Llama (the backbone saved by reference)."""
    from transformers import AutoModel, AutoTokenizer

    config = RewardModelConfig(backbone=str(backbone_dir), attributes=list(attributes) if "multi" in heads else [],
                               heads=heads, mode=mode, max_length=64)
    torch.manual_seed(seed)
    model = RewardModel(AutoModel.from_pretrained(backbone_dir), AutoTokenizer.from_pretrained(backbone_dir), config)
    model.backbone.requires_grad_(False)
    model.save_pretrained(folder)
    return folder


def own_rewards(folder: Path, mode: str) -> list[float]:
    """A member's rewards from its own RewardModel, loaded on its own."""
    return RewardModel.from_pretrained(folder).score(PROMPTS, RESPONSES, mode=mode).reward


@pytest.fixture(scope="module")
def smorm_members(tiny_llama_dir, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("members")
    return [make_member(root / f"seed-{s}", tiny_llama_dir, SMORM_HEADS, s, "M") for s in range(3)]


def test_mean_ensemble_is_the_mean_of_the_members_in_every_mode(smorm_members, tmp_path):
    write_ensemble(tmp_path / "ens", smorm_members, combine="mean")
    scorer = load_scorer(tmp_path / "ens")
    assert isinstance(scorer, CompositeScorer)
    assert set(scorer.heads) == {"single", "multi"} and scorer.config.mode == "M"
    assert scorer.config.attributes == ATTRIBUTES and scorer.config.max_length == 64
    for mode in ("F", "L", "M"):
        members = [own_rewards(m, mode) for m in smorm_members]
        expected = [(a + b + c) / 3 for a, b, c in zip(*members)]
        assert scorer.score(PROMPTS, RESPONSES, mode=mode).reward == pytest.approx(expected, abs=1e-5)
    rows = scorer.score(PROMPTS, RESPONSES).rows()
    assert rows[0]["mode"] == "M" and set(rows[0]["attributes"]) == set(ATTRIBUTES)


@pytest.mark.parametrize("mode", ["F", "M"])
def test_min_ensemble_is_the_smallest_member_reward(smorm_members, tmp_path, mode):
    write_ensemble(tmp_path / "ens", smorm_members, combine="min", mode=mode)
    scorer = load_scorer(tmp_path / "ens")
    members = [own_rewards(m, mode) for m in smorm_members]
    expected = [min(a, b, c) for a, b, c in zip(*members)]
    assert scorer.heads == ("single",) and scorer.config.mode == "F"
    assert scorer.score(PROMPTS, RESPONSES).reward == pytest.approx(expected, abs=1e-5)
    # the members really disagree, so min differs from mean here
    assert expected != pytest.approx([(a + b + c) / 3 for a, b, c in zip(*members)], abs=1e-4)


def test_baseline_sm_is_the_mean_of_sorm_f_and_morm_l(tiny_llama_dir, tmp_path):
    sorm = make_member(tmp_path / "sorm", tiny_llama_dir, {"single": {"kind": "linear"}}, 0, "F")
    morm = make_member(tmp_path / "morm", tiny_llama_dir, {"multi": {"kind": "linear", "out": 2}}, 1, "L")
    write_baseline_sm(tmp_path / "sm", sorm, morm)
    scorer = load_scorer(tmp_path / "sm")
    assert scorer.heads == ("single", "multi") and scorer.config.mode == "M"
    f = own_rewards(sorm, "F")
    morm_model = RewardModel.from_pretrained(morm)
    attributes = morm_model.score(PROMPTS, RESPONSES, mode="L").attributes
    l_by_hand = [(h + v) / 2 for h, v in zip(attributes["helpfulness"], attributes["verbosity"])]
    expected = [(a + b) / 2 for a, b in zip(f, l_by_hand)]
    assert scorer.score(PROMPTS, RESPONSES).reward == pytest.approx(expected, abs=1e-5)
    assert scorer.score(PROMPTS, RESPONSES, mode="F").reward == pytest.approx(f, abs=1e-6)
    assert scorer.score(PROMPTS, RESPONSES, mode="L").reward == pytest.approx(l_by_hand, abs=1e-6)
    # two forward passes, one per member: the pooled feature is both members' side by side
    output = scorer.score_token_ids([[5, 6, 7], [8, 9]])
    assert output.pooled.shape == (2, 2 * morm_model.hidden_size)


def test_members_must_share_a_tokenizer(smorm_members, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(smorm_members[1], other)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(other)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tokenizer.save_pretrained(other)
    with pytest.raises(ValueError, match="must share one tokenizer"):
        write_ensemble(tmp_path / "ens", [smorm_members[0], other])
    # a composite whose member changed tokenizer after it was written is refused when loaded
    write_ensemble(tmp_path / "ok", [smorm_members[0], smorm_members[2]])
    spec = json.loads((tmp_path / "ok" / COMPOSITE_NAME).read_text())
    spec["members"][1] = str(other)
    (tmp_path / "ok" / COMPOSITE_NAME).write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="must share one tokenizer"):
        load_scorer(tmp_path / "ok")


def test_folder_errors_name_the_file_and_field(smorm_members, tiny_llama_dir, tmp_path):
    with pytest.raises(ValueError, match=rf"{COMPOSITE_NAME}: field 'combine' must be one of"):
        write_ensemble(tmp_path / "a", smorm_members, combine="median")
    with pytest.raises(ValueError, match="at least 2 members"):
        write_ensemble(tmp_path / "b", smorm_members[:1])
    with pytest.raises(FileNotFoundError, match="not a smorm model or run folder"):
        write_ensemble(tmp_path / "c", [smorm_members[0], tmp_path / "nowhere"])
    sorm_only = make_member(tmp_path / "sorm", tiny_llama_dir, {"single": {"kind": "linear"}}, 0, "F")
    with pytest.raises(ValueError, match="member 'morm' .* has no multi head"):
        write_baseline_sm(tmp_path / "d", sorm_only, sorm_only)
    with pytest.raises(ValueError, match="no multi head for mode L"):
        write_ensemble(tmp_path / "e", [sorm_only, smorm_members[0]], combine="min", mode="L")
    with pytest.raises(ValueError, match="same single/multi heads"):
        write_ensemble(tmp_path / "f", [sorm_only, smorm_members[0]], combine="mean", mode="F")
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / COMPOSITE_NAME).write_text('{"kind": "ensemble",\n "combine": }')
    with pytest.raises(ValueError, match=rf"{COMPOSITE_NAME}:2: not JSON"):
        load_scorer(tmp_path / "g")
    assert not (tmp_path / "a" / COMPOSITE_NAME).exists()  # nothing is written when a check fails


def test_a_composite_moves_with_its_members(smorm_members, tmp_path):
    root = tmp_path / "bundle"
    members = [shutil.copytree(m, root / "members" / m.name) for m in smorm_members[:2]]
    write_ensemble(root / "ens", members)
    assert json.loads((root / "ens" / COMPOSITE_NAME).read_text())["members"][0] == "../members/seed-0"
    shutil.move(root, tmp_path / "moved")
    moved = [own_rewards(tmp_path / "moved" / "members" / m.name, "F") for m in smorm_members[:2]]
    scorer = load_scorer(tmp_path / "moved" / "ens")
    assert scorer.score(PROMPTS, RESPONSES, mode="F").reward == pytest.approx(
        [(a + b) / 2 for a, b in zip(*moved)], abs=1e-5)


def test_plain_folders_load_as_reward_models(smorm_members):
    assert isinstance(load_scorer(smorm_members[0]), RewardModel)


# ---------------------------------------------------------------- commands


def write_jsonl(path: Path) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in zip(PROMPTS, RESPONSES)))
    return path


def test_combine_and_score_commands(tiny_llama_dir, tmp_path):
    sorm = make_member(tmp_path / "sorm" / "model", tiny_llama_dir, {"single": {"kind": "linear"}}, 0, "F")
    morm = make_member(tmp_path / "morm" / "model", tiny_llama_dir, {"multi": {"kind": "linear", "out": 2}}, 1, "L")
    runner = CliRunner()
    result = runner.invoke(app, ["combine", "--sorm", str(sorm.parent), "--morm", str(morm.parent),
                                 str(tmp_path / "sm")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["score", str(tmp_path / "sm"), str(write_jsonl(tmp_path / "in.jsonl"))])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    f, l_mean = own_rewards(sorm, "F"), own_rewards(morm, "L")
    assert [r["reward"] for r in rows] == pytest.approx([(a + b) / 2 for a, b in zip(f, l_mean)], abs=1e-5)
    assert [r["F"] for r in rows] == pytest.approx(f, abs=1e-6) and rows[0]["mode"] == "M"
    result = runner.invoke(app, ["combine", "--sorm", str(morm), "--morm", str(morm), str(tmp_path / "bad")])
    assert result.exit_code == 2 and "has no single head" in result.output


def test_ensemble_command_trains_one_member_per_seed(tiny_llama_dir, tmp_path):
    raw = tiny_config(tmp_path, tiny_llama_dir, steps=1)
    raw.update(method="sorm", losses=[{"name": "bt"}], model={"backbone": str(tiny_llama_dir),
                                                             "heads": {"single": {"kind": "linear"}}})
    del raw["data"]["ratings"]
    (tmp_path / "sorm.yaml").write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    args = ["ensemble", str(tmp_path / "sorm.yaml"), "--seeds", "0", "1", "--combine", "min",
            f"output_dir={tmp_path / 'ens'}"]  # the ensemble goes to output_dir + "-ensemble"
    result = runner.invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "ens").exists()
    spec = json.loads((tmp_path / "ens-ensemble" / COMPOSITE_NAME).read_text())
    assert spec["kind"] == "ensemble" and spec["combine"] == "min" and spec["roles"] == ["seed-0", "seed-1"]
    seeds = [json.loads((tmp_path / "ens-ensemble" / f"seed-{s}" / "config.json").read_text())["train"]["seed"]
             for s in (0, 1)]
    assert seeds == [0, 1]
    members = [tmp_path / "ens-ensemble" / f"seed-{s}" / "model" for s in (0, 1)]
    expected = [min(a, b) for a, b in zip(own_rewards(members[0], "F"), own_rewards(members[1], "F"))]
    assert load_scorer(tmp_path / "ens-ensemble").score(PROMPTS, RESPONSES).reward == pytest.approx(expected, abs=1e-5)
    # run again: finished members are not trained again
    again = runner.invoke(app, args)  # it says what it skips, as log messages on stderr
    assert again.exit_code == 0 and again.stderr.count("already trained") == 2
    assert "already trained" not in again.stdout
    bad = runner.invoke(app, ["ensemble", str(tmp_path / "sorm.yaml"), "--seeds", "0", "--quiet"])
    assert bad.exit_code == 2 and "at least 2 seeds" in bad.output


def test_the_evaluator_scores_a_composite_in_every_mode_it_offers(smorm_members, tiny_llama_dir, tmp_path):
    from smorm.eval.runner import BenchSpec, evaluate_model

    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"prompt": p, "chosen": r, "rejected": r[::-1]}) + "\n"
                             for p, r in zip(PROMPTS, RESPONSES)))
    sorm = make_member(tmp_path / "sorm", tiny_llama_dir, {"single": {"kind": "linear"}}, 0, "F")
    morm = make_member(tmp_path / "morm", tiny_llama_dir, {"multi": {"kind": "linear", "out": 2}}, 1, "L")
    write_baseline_sm(tmp_path / "sm", sorm, morm)
    write_ensemble(tmp_path / "min", smorm_members, combine="min", mode="M")
    for folder, modes in ((tmp_path / "sm", ["F", "L", "M"]), (tmp_path / "min", ["F"])):
        report = evaluate_model(load_scorer(folder), [BenchSpec("pairs", str(bench))], show_progress=False)
        assert report["modes"] == modes
        entry = next(iter(report["benchmarks"].values()))
        assert set(entry["modes"]) == set(modes) and entry["items"] == 3
