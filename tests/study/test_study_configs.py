"""Every shipped study config plans: each method's run config validates and its data loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from smorm.study.runner import bench_specs, load_study, plan_runs
from smorm.train.prepare import load_training_data

STUDIES = sorted((Path(__file__).resolve().parents[2] / "configs" / "study").glob("*.yaml"))


def test_there_is_a_cpu_study():
    assert "cpu" in {p.stem for p in STUDIES}


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_study_config_plans_and_its_data_and_benchmarks_exist(path, shared_data):
    study, base_dir = load_study(path)
    runs = plan_runs(study, base_dir, where=str(path))
    labels = {run.label for run in runs}
    assert {m.name for m in study.methods} <= labels
    assert len(study.seeds) >= 3
    first_seed = [run for run in runs if run.config is not None and run.seed == study.seeds[0] and "@w=" not in run.label]
    for run in first_seed:
        loaded = load_training_data(run.config)
        assert loaded.pairs or loaded.ratings, run.label
    for spec in bench_specs(study, base_dir):
        assert Path(spec.path).is_file(), spec.path
