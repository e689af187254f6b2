"""`smorm eval` through typer's CliRunner: tables printed, files written, errors before work starts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from smorm.cli import app
from tests.eval.eval_data import BAD, GOOD, QUESTIONS


def invoke(*args: str):
    return CliRunner().invoke(app, ["eval", *map(str, args)])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_llama_dir) -> Path:
    """A run folder as `smorm train` leaves it (config.json + model/), with untrained heads."""
    from smorm.train.config import RunConfig
    from smorm.train.prepare import load_training_data
    from smorm.train.trainer import build_model
    from tests.train.helpers import tiny_config

    folder = tmp_path_factory.mktemp("eval-run")
    config = RunConfig.model_validate(tiny_config(folder, tiny_llama_dir))
    run = Path(config.output_dir)
    run.mkdir(parents=True)
    (run / "config.json").write_text(config.model_dump_json(indent=2))
    build_model(config, load_training_data(config).attributes).save_pretrained(run / "model")
    return run


def test_eval_prints_table_and_writes_report(tiny_run, bench_files, tmp_path):
    out = tmp_path / "report"
    result = invoke(tiny_run, "--bench", f"pairs:{bench_files['pairs']}", "--bench",
                    f"reward-bench:{bench_files['reward-bench']}", "--sample", 4, "--seed", 1, "--batch-size", 3,
                    "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("benchmark"))
    assert lines[header].split() == ["benchmark", "items", "F", "L", "M", "longer", "wins", "shorter", "wins"]
    assert lines[header + 2].startswith("pairs:pairs.jsonl") and " 4 " in lines[header + 2]
    assert f"report: {out / 'report.md'}" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["batch_size"] == 3 and report["scorer"] == "RewardModel"
    assert report["benchmarks"]["pairs:pairs.jsonl"]["sample"] == 4
    assert report["benchmarks"]["pairs:pairs.jsonl"]["seed"] == 1
    assert all((out / p).is_file() for p in report["plots"]) and len(report["plots"]) == 2 * 3


def test_eval_theory_on_the_runs_own_data(tiny_run):
    result = invoke(tiny_run, "--theory", "--theory-sample", 50, "--quiet")  # no --out: into the run folder
    assert result.exit_code == 0, result.output
    assert "Theorem 1 (000 App. C.2): coupling 1ᵀα" in result.output
    report = json.loads((tiny_run / "report.json").read_text())
    theory = report["theory"]
    # tests/train/helpers.py: 8 pairs; 5 rated responses of which one lacks "verbosity"
    assert theory["sample"] == {"requested": 50, "seed": 0, "pairs": 8, "rated": 4, "pairs_available": 8,
                                "rated_available": 5, "rated_incomplete_dropped": 1}
    assert theory["attributes"] == ["helpfulness", "verbosity"]
    assert theory["coupling_holds"] == (sum(theory["population"]["alpha"].values()) >= 0)
    assert theory["population"]["bound_holds"]  # the population heads must satisfy the bound
    assert theory["trained_heads"] is not None
    assert "## Theorem 1 check" in (tiny_run / "report.md").read_text()
    assert report["benchmarks"] == {}


def test_ensemble_composite_is_scored_through_load_scorer(tiny_run, tmp_path, bench_files):
    from smorm.models.composite import write_ensemble
    from smorm.models.reward_model import RewardModel

    members = []
    for seed in (0, 1):
        model = RewardModel.from_pretrained(tiny_run / "model")
        import torch

        torch.manual_seed(seed)
        for parameter in model.heads.parameters():
            parameter.data.normal_()
        members.append(model.save_pretrained(tmp_path / f"member-{seed}"))
    write_ensemble(tmp_path / "ensemble", members)
    result = invoke(tmp_path / "ensemble", "--bench", f"pairs:{bench_files['pairs']}", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ensemble" / "report.json").read_text())
    assert report["scorer"] == "CompositeScorer"
    loaded = [RewardModel.from_pretrained(m) for m in members]
    chosen = np.mean([m.score(QUESTIONS, GOOD, mode="F", batch_size=1).reward for m in loaded], axis=0)
    rejected = np.mean([m.score(QUESTIONS, BAD, mode="F", batch_size=1).reward for m in loaded], axis=0)
    assert report["benchmarks"]["pairs:pairs.jsonl"]["modes"]["F"]["accuracy"] == np.mean(chosen > rejected)


def test_eval_errors_are_clear_and_early(tiny_run, tiny_model_dir, tmp_path, bench_files):
    result = invoke(tiny_run)
    assert result.exit_code == 2 and "nothing to evaluate" in result.output
    result = invoke(tiny_run, "--bench", "rmbench:x.json")
    assert result.exit_code == 2 and "did you mean 'rm-bench'" in result.output
    result = invoke(tmp_path / "nope", "--bench", f"pairs:{bench_files['pairs']}")
    assert result.exit_code == 2 and "no such run or model folder" in result.output
    result = invoke(tiny_model_dir, "--theory", "--quiet")
    assert result.exit_code == 2 and "config.json" in result.output
    bad = tmp_path / "bad.jsonl"
    shutil.copy(bench_files["pairs"], bad)
    with bad.open("a") as handle:
        handle.write(json.dumps({"prompt": "q", "chosen": "a"}) + "\n")
    result = invoke(tiny_run, "--bench", f"pairs:{bad}", "--out", tmp_path / "never")
    assert result.exit_code == 2 and "bad.jsonl:7" in result.output
    assert not (tmp_path / "never").exists()  # refused before any model work or report


def test_eval_without_bench_uses_the_runs_own_eval_benches(tiny_run, bench_files, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "model", run / "model")
    config = json.loads((tiny_run / "config.json").read_text())
    config["eval"]["benches"] = [{"kind": "pairs", "path": str(bench_files["pairs"]), "name": "own-pairs"}]
    (run / "config.json").write_text(json.dumps(config))
    result = invoke(run, "--quiet", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert list(report["benchmarks"]) == ["own-pairs"]
    # Given --bench, the run's own list is not used.
    result = invoke(run, "--quiet", "--out", tmp_path / "other", "--bench", f"reward-bench:{bench_files['reward-bench']}")
    assert result.exit_code == 0, result.output
    assert list(json.loads((tmp_path / "other" / "report.json").read_text())["benchmarks"]) == [
        "reward-bench:" + bench_files["reward-bench"].name]
    # A run with no benchmarks of its own and no --bench is an error that says where it looked.
    config["eval"]["benches"] = []
    (run / "config.json").write_text(json.dumps(config))
    result = invoke(run, "--quiet")
    assert result.exit_code == 2 and "RUN has no eval.benches in" in result.output
