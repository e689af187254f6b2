"""`smorm gate` end to end on a tiny model: stage 1, debiasing, gate, atomic save, reload, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from smorm.gating.pipeline import GatingOptions, parse_source, run_gating
from smorm.gating.train_gate import GateTrainOptions
from smorm.models.reward_model import RewardModel
from tests.models.test_reward_model import make_model

ATTRS = ["helpfulness", "correctness", "verbosity"]


def write_data(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    topics = ["eggs", "rain", "primes", "Rome", "tea", "maps", "bees", "snow", "clocks", "rivers", "salt", "kites"]
    pairs = [{"prompt": f"Tell me about {t}.", "chosen": f"{t.capitalize()} are interesting; here is a fact about {t}.",
              "rejected": "No."} for t in topics]
    pairs += [{"prompt": f"One word for {t}?", "chosen": t, "rejected": f"I refuse to talk about {t} at length."}
              for t in topics]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    ratings = []
    for i, t in enumerate(topics):
        labels = {"helpfulness": i % 5, "correctness": (i * 3) % 5, "verbosity": (i * 2) % 5}
        if i % 3 == 0:
            del labels["correctness"]  # missing labels are masked, not zero
        ratings.append({"prompt": f"Explain {t}.", "response": f"{t} " * (1 + i % 4), **labels})
    (folder / "ratings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ratings))
    return folder / "pairs.jsonl", folder / "ratings.jsonl"


@pytest.fixture()
def run_folder(tiny_llama_dir, tmp_path) -> Path:
    from smorm.models.trunk import apply_trunk_mode

    model = make_model(tiny_llama_dir, attributes=ATTRS)
    apply_trunk_mode(model, "top_k", top_k=1)  # stored as a delta, like the demo run
    model.save_pretrained(tmp_path / "run" / "model")
    return tmp_path / "run"


def small_options(**changes) -> GatingOptions:
    base = dict(hidden_sizes=[16], dropout=0.0, train=GateTrainOptions(steps=20, batch_size=8, lr=1e-2,
                                                                           val_fraction=0.25, log_every=5))
    return GatingOptions(**{**base, **changes})


@pytest.mark.slow
def test_gate_pipeline_saves_a_model_whose_forward_gives_g(run_folder, tmp_path):
    pairs, ratings = write_data(tmp_path / "data")
    delta_before = (run_folder / "model" / "backbone_delta.safetensors").stat().st_size
    report = run_gating(run_folder, [f"{pairs}:pairs"], small_options(ratings=[f"{ratings}:ratings"]),
                        show_progress=False)
    assert report["pairs"] == 24 and report["saved_to"] == str(run_folder / "model")
    assert report["prompt_cut_away"] == 0  # truncation cuts prompts from the left, keeping their end
    assert [row["rated_rows"] for row in report["stage1"]["attributes"]] == [12, 8, 12]
    debias = {row["attribute"]: row for row in report["debias"]["attributes"]}
    assert debias["verbosity"]["lambda"] == 1.0
    assert report["gated_attributes"] == ["helpfulness", "correctness"]  # debiased verbosity is 0: no expert
    assert report["debias"]["reference_responses"] == 48  # the pairs' responses by default
    assert report["gate"]["beta_initial"] == 100.0 and report["gate"]["beta_final"] != 100.0
    assert report["consistency_max_abs_diff"] < 1e-3
    folder = run_folder / "model"
    assert (folder / "gating.json").is_file()
    config = json.loads((folder / "smorm_config.json").read_text())
    assert config["mode"] == "G" and config["heads"]["gate"]["hidden_sizes"] == [16]
    assert config["backbone_weights"] == "delta"
    assert (folder / "backbone_delta.safetensors").stat().st_size == delta_before  # no bigger than before
    model = RewardModel.from_pretrained(folder)
    scores = model.score(["Tell me about eggs."], ["Eggs are interesting."])
    row = scores.rows()[0]
    assert row["reward"] == row["G"] and sum(row["gate_weights"].values()) == pytest.approx(1.0, abs=1e-6)
    assert row["gate_weights"]["verbosity"] == 0.0
    # the multi head and F/L/M are untouched by the debiasing (it lives in the gate by default)
    assert set(row) >= {"F", "L", "M", "G", "attributes"}

    shards = sorted(Path(report["feature_cache"]).glob("shard-*"))
    stamps = [s.stat().st_mtime_ns for s in shards]
    again = run_gating(run_folder, [f"{pairs}:pairs"], small_options(ratings=[f"{ratings}:ratings"], debias=False),
                       show_progress=False)
    assert again["feature_cache"] == report["feature_cache"]  # features reused: the backbone is unchanged
    assert [s.stat().st_mtime_ns for s in shards] == stamps
    assert "debias" not in again


def test_debias_into_multi_folds_lambda_into_the_head(run_folder, tmp_path):
    pairs, _ = write_data(tmp_path / "data")
    before = RewardModel.from_pretrained(run_folder / "model").heads["multi"].weight.detach().clone()
    report = run_gating(run_folder, [f"{pairs}:pairs"], small_options(debias_into="multi"),
                        out=tmp_path / "run2", show_progress=False)
    assert report["saved_to"] == str(tmp_path / "run2" / "model")
    gated = RewardModel.from_pretrained(tmp_path / "run2" / "model")
    lambdas = torch.tensor([row["lambda"] for row in report["debias"]["attributes"]])
    expected = before - lambdas[:, None] * before[2][None, :]
    assert torch.allclose(gated.heads["multi"].weight, expected, atol=1e-6)
    assert torch.equal(gated.heads["gate"].debias, torch.eye(3))
    assert "gate" not in RewardModel.from_pretrained(run_folder / "model").heads  # --out left RUN alone


def test_cli_gate_writes_out_and_reports(run_folder, tmp_path):
    from typer.testing import CliRunner

    from smorm.cli import app

    pairs, _ = write_data(tmp_path / "data")
    result = CliRunner().invoke(app, [
        "gate", str(run_folder), "--pairs", f"{pairs}:pairs", "--out", str(tmp_path / "out"), "--hidden-sizes", "8",
        "--steps", "5", "--batch-size", "8", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    assert "debias helpfulness: λ =" in result.output and "held-out accuracy G:" in result.output
    assert (tmp_path / "out" / "model" / "gating.json").is_file()
    scored = CliRunner().invoke(app, ["score", str(tmp_path / "out"), str(write_score_input(tmp_path))])
    assert scored.exit_code == 0, scored.output
    row = json.loads(scored.stdout.splitlines()[0])
    assert row["mode"] == "G" and set(row["gate_weights"]) == set(ATTRS)


def write_score_input(folder: Path) -> Path:
    path = folder / "score.jsonl"
    path.write_text(json.dumps({"prompt": "Say hi.", "response": "Hello!"}) + "\n")
    return path


def test_bad_inputs_fail_before_the_model_loads(run_folder, tmp_path, tiny_llama_dir):
    with pytest.raises(ValueError, match="missing.jsonl: no such file"):
        run_gating(run_folder, [str(tmp_path / "missing.jsonl")], small_options(), show_progress=False)
    with pytest.raises(ValueError, match="at least one --pairs"):
        run_gating(run_folder, [], small_options(), show_progress=False)
    sorm = make_model(tiny_llama_dir, heads={"single": {"kind": "linear"}}, attributes=[])
    sorm.save_pretrained(tmp_path / "sorm")
    pairs, _ = write_data(tmp_path / "data")
    with pytest.raises(ValueError, match="no multi head"):
        run_gating(tmp_path / "sorm", [f"{pairs}:pairs"], small_options(), show_progress=False)
    with pytest.raises(ValueError, match="debias_into"):
        GatingOptions(debias_into="nowhere")


def test_sources_read_path_then_format_or_format_then_path():
    assert (parse_source("data/x.jsonl:hh").path, parse_source("data/x.jsonl:hh").format) == ("data/x.jsonl", "hh")
    assert (parse_source("hh:data/x.jsonl").path, parse_source("hh:data/x.jsonl").format) == ("data/x.jsonl", "hh")
    assert parse_source("data/x.jsonl", limit=5).format == "auto" and parse_source("data/x.jsonl", limit=5).limit == 5
