"""``smorm study`` end to end on a tiny random Llama: every (method, seed) trains once, scores once,
Baseline SM is its two members combined, the sweep's own point reuses the method's runs, and a
second call trains and scores nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from smorm.study.runner import SCORES_NAME, load_study, plan_runs, run_study
from tests.train.helpers import tiny_config

SORM = {"method": "sorm", "model": {"heads": {"single": {"kind": "linear"}}, "mode": "F"},
        "losses": [{"name": "bt"}], "data": {"ratings": []}}
MORM = {"method": "morm", "model": {"heads": {"multi": {"kind": "linear"}}, "mode": "L"},
        "losses": [{"name": "regression"}], "data": {"pairs": []}}


def study_file(tmp_path, tiny_llama_dir, shared_data, **extra):
    base = tiny_config(tmp_path / "data", tiny_llama_dir, trunk="top_k", steps=2)
    base.pop("output_dir")
    study = {
        "output_dir": str(tmp_path / "study"),
        "base": base,
        "methods": [{"name": "SORM", "config": SORM}, {"name": "MORM", "config": MORM},
                    {"name": "SMORM", "config": {}, "modes": ["F", "L", "M"]},
                    {"name": "Baseline SM", "baseline_sm": ["SORM", "MORM"], "modes": ["F", "L", "M"]}],
        "seeds": [0, 1],
        "benches": [{"kind": "reward-bench", "path": str(shared_data / "eval/reward-bench/filtered-first500.jsonl"),
                     "sample": 12},
                    {"kind": "rm-bench", "path": str(shared_data / "eval/rm-bench/chat_filtered.json"), "limit": 3}],
        "comparisons": [{"a": "SMORM/F", "b": "SORM/F"}, {"a": "SMORM/M", "b": "Baseline SM/M"}],
        "sweep": {"method": "SMORM", "weights": [0.5, 1.0], "seeds": [0]},
        "bootstrap": 200, "eval_batch_size": 4, "eval_precision": "fp32",
        **extra,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_study_trains_each_run_once_and_compares_paired(tiny_llama_dir, shared_data, tmp_path):
    path = study_file(tmp_path, tiny_llama_dir, shared_data)
    out = run_study(path, show_progress=False)
    results = json.loads((out / "study.json").read_text())
    runs = sorted(p.name for p in (out / "runs").iterdir())
    # 3 trained methods x 2 seeds + the sweep's w=0.5 on seed 0; w=1 is SMORM's own run
    assert runs == ["morm-s0", "morm-s1", "smorm-s0", "smorm-s1", "smorm-w=0.5-s0", "sorm-s0", "sorm-s1"]
    table = results["table"]
    assert {"SORM/F", "MORM/L", "SMORM/F", "SMORM/L", "SMORM/M", "Baseline SM/M", "SMORM@w=0.5/F",
            "SMORM@w=1/M", "longer wins", "shorter wins"} <= set(table)
    columns = results["columns"]
    assert "reward-bench:filtered-first500.jsonl acc" in columns
    assert {f"rm-bench:chat_filtered.json {c}" for c in ("easy", "normal", "hard", "avg")} <= set(columns)
    smorm_f = table["SMORM/F"]["reward-bench:filtered-first500.jsonl acc"]
    assert smorm_f["seeds"] == 2 and smorm_f["items"] == 12 and len(smorm_f["per_seed"]) == 2
    assert smorm_f["ci"][0] <= smorm_f["mean"] <= smorm_f["ci"][1]
    # the sweep point at the method's own weight is the method's runs (seed 0)
    assert table["SMORM@w=1/F"]["reward-bench:filtered-first500.jsonl acc"]["per_seed"][0] == smorm_f["per_seed"][0]
    assert set(results["differences"]) == {"SMORM/F − SORM/F", "SMORM/M − Baseline SM/M"}
    md = (out / "study.md").read_text()
    assert "Paired differences" in md and "longer wins" in md and "Weight sweep" in md

    # Baseline SM's M is what the composite of its two members scores (the standardised mean)
    from smorm.models.composite import write_baseline_sm
    from smorm.models.scorers import load_scorer
    from smorm.study.runner import mode_rewards

    study, base_dir = load_study(path)
    plan = plan_runs(study, base_dir)
    scores = {(r.label, r.seed): r.folder / SCORES_NAME for r in plan if r.config is not None}
    baseline = next(r for r in plan if r.label == "Baseline SM" and r.seed == 1)
    combined = mode_rewards(baseline, scores)["M"]
    folder = write_baseline_sm(tmp_path / "bsm", out / "runs" / "sorm-s1", out / "runs" / "morm-s1")
    composite = load_scorer(folder.parent)
    from smorm.data.formatting import Formatter
    from smorm.eval.runner import load_benchmarks
    from smorm.models.reward_model import reward_for_mode
    from smorm.study.runner import bench_specs

    loaded = load_benchmarks(bench_specs(study, base_dir))
    formatter = Formatter(composite.tokenizer, composite.config.max_length)
    ids = [formatter.encode(p, r).input_ids for p, r in loaded.table.items]
    direct = reward_for_mode(composite.score_token_ids(ids, batch_size=4), "M").double().numpy()
    np.testing.assert_allclose(combined, direct, rtol=1e-4, atol=1e-4)

    # a second call trains and scores nothing
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob(f"*/{SCORES_NAME}")}
    models = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/model/heads.safetensors")}
    run_study(path, show_progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert {p: p.stat().st_mtime_ns for p in models} == models


def test_a_bad_study_is_refused_before_anything_trains(tiny_llama_dir, shared_data, tmp_path):
    path = study_file(tmp_path, tiny_llama_dir, shared_data, comparisons=[{"a": "SMORM/F", "b": "NOPE/F"}])
    with pytest.raises(ValueError, match="NOPE/F"):
        load_study(path)
    bad = study_file(tmp_path, tiny_llama_dir, shared_data)
    tree = yaml.safe_load(bad.read_text())
    tree["methods"][2]["config"] = {"train": {"lr": "fast"}}
    bad.write_text(yaml.safe_dump(tree))
    study, base_dir = load_study(bad)
    with pytest.raises(ValueError, match="methods.SMORM"):
        plan_runs(study, base_dir, where=str(bad))
    assert not (tmp_path / "study" / "runs").exists()


def test_cli_refuses_a_bad_study_with_its_file_and_field(tiny_llama_dir, shared_data, tmp_path):
    from typer.testing import CliRunner

    from smorm.cli import app

    path = study_file(tmp_path, tiny_llama_dir, shared_data, seeds=[0, 0])
    result = CliRunner().invoke(app, ["study", str(path)])
    assert result.exit_code == 2
    assert "seeds must differ" in result.output and "study.yaml" in result.output


def test_a_method_may_run_a_subset_of_the_seeds_and_is_compared_only_on_equal_seeds(tiny_llama_dir, shared_data,
                                                                                    tmp_path):
    screened = {"name": "SMORM-1", "config": {}, "seeds": [0]}
    path = study_file(tmp_path, tiny_llama_dir, shared_data, sweep=None,
                      methods=[{"name": "SORM", "config": SORM}, {"name": "MORM", "config": MORM, "seeds": [1]},
                               {"name": "SMORM", "config": {}}, screened],
                      comparisons=[{"a": "SMORM/M", "b": "SORM/F"}])
    study, base_dir = load_study(path)
    runs = [(run.label, run.seed) for run in plan_runs(study, base_dir)]
    assert runs == [("SORM", 0), ("SMORM", 0), ("SMORM-1", 0), ("SORM", 1), ("MORM", 1), ("SMORM", 1)]
    unequal = study_file(tmp_path, tiny_llama_dir, shared_data, sweep=None,
                         methods=[{"name": "SORM", "config": SORM}, screened],
                         comparisons=[{"a": "SMORM-1/M", "b": "SORM/F"}])
    with pytest.raises(ValueError, match=r"different seeds \(\[0\] vs \[0, 1\]\)"):
        load_study(unequal)
    outside = study_file(tmp_path, tiny_llama_dir, shared_data, sweep=None, comparisons=[],
                         methods=[{"name": "SORM", "config": SORM, "seeds": [2]}])
    with pytest.raises(ValueError, match=r"methods.SORM.seeds: \[2\] must be seeds of the study"):
        load_study(outside)
