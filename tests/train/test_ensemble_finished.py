"""When a run folder counts as finished with a config (ensembles and studies skip it)."""

from __future__ import annotations

import json

import pytest

from smorm.train.config import RunConfig
from smorm.train.ensemble import finished
from tests.train.helpers import tiny_config


def fake_finished_run(tmp_path, tiny_llama_dir, saved_tree):
    config = RunConfig.model_validate(tiny_config(tmp_path, tiny_llama_dir))
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "smorm_config.json").write_text("{}")
    (run / "config.json").write_text(json.dumps(saved_tree(config)))
    return config


def test_a_run_saved_before_a_key_was_added_is_still_finished(tmp_path, tiny_llama_dir):
    def without_new_key(config):
        tree = json.loads(config.model_dump_json())
        del tree["train"]["cache_dtype"]  # as a run saved before the key existed (its default unchanged)
        return tree

    assert finished(fake_finished_run(tmp_path, tiny_llama_dir, without_new_key))


def test_a_run_of_another_config_is_refused_and_a_missing_model_is_not_finished(tmp_path, tiny_llama_dir):
    def other_lr(config):
        tree = json.loads(config.model_dump_json())
        tree["train"]["lr"] = 0.5
        return tree

    config = fake_finished_run(tmp_path, tiny_llama_dir, other_lr)
    with pytest.raises(ValueError, match="different config"):
        finished(config)
    (tmp_path / "run" / "model" / "smorm_config.json").unlink()
    assert not finished(config)
