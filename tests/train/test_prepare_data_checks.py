"""A loss left with no data after reading and skipping is a config error, before any model loads;
data sources take a seeded ``sample``."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from smorm.cli import app
from smorm.data import DataError, DataSpec, load_pairs
from smorm.train.config import RunConfig
from smorm.train.prepare import load_training_data
from tests.train.helpers import tiny_config, write_config


def break_every_line(path, field: str) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in row.items() if k != field}) + "\n" for row in rows))


def skipping_config(tmp_path, backbone, losses: list[str]) -> dict:
    config = tiny_config(tmp_path, backbone)
    config["data"]["on_error"] = "skip"
    config["losses"] = [{"name": name} for name in losses]
    if "regression" not in losses:
        config["data"]["ratings"] = []
    return config


def test_a_pair_loss_with_every_pair_skipped_names_loss_source_and_skips(tiny_llama_dir, tmp_path):
    config = skipping_config(tmp_path, tiny_llama_dir, ["bt"])
    pairs = tmp_path / "data" / "pairs.jsonl"
    break_every_line(pairs, "rejected")
    with pytest.raises(DataError) as info:
        load_training_data(RunConfig.model_validate(config))
    assert str(info.value) == (
        "loss 'bt' needs preference pairs, but no record of data.pairs is left after reading: "
        f"pairs ({pairs}): 8 read, 0 kept, skipped missing field (rejected): 8"
    )


def test_a_rating_loss_with_every_rating_skipped_fails_while_pairs_are_fine(tiny_llama_dir, tmp_path):
    config = skipping_config(tmp_path, tiny_llama_dir, ["bt", "regression"])
    ratings = tmp_path / "data" / "ratings.jsonl"
    break_every_line(ratings, "response")
    with pytest.raises(DataError, match=re.escape(
        f"loss 'regression' needs rated responses, but no record of data.ratings is left after reading: "
        f"ratings ({ratings}): 5 read, 0 kept, skipped missing field (response): 5"
    )):
        load_training_data(RunConfig.model_validate(config))
    break_every_line(tmp_path / "data" / "pairs.jsonl", "chosen")  # now both are empty: pairs are named first
    with pytest.raises(DataError, match="^loss 'bt' needs preference pairs"):
        load_training_data(RunConfig.model_validate(config))


def test_every_source_is_listed_when_none_has_a_record_left(tiny_llama_dir, tmp_path):
    config = skipping_config(tmp_path, tiny_llama_dir, ["bt"])
    pairs = tmp_path / "data" / "pairs.jsonl"
    other = tmp_path / "data" / "more.jsonl"
    other.write_text(json.dumps({"prompt": "q", "chosen": "same", "rejected": "same"}) + "\n")
    break_every_line(pairs, "rejected")
    config["data"]["pairs"].append({"path": str(other), "format": "pairs"})
    with pytest.raises(DataError) as info:
        load_training_data(RunConfig.model_validate(config))
    assert str(info.value).endswith(
        f"pairs ({pairs}): 8 read, 0 kept, skipped missing field (rejected): 8; "
        f"more ({other}): 1 read, 0 kept, skipped identical chosen and rejected: 1"
    )


def test_smorm_validate_fails_on_it(tiny_llama_dir, tmp_path):
    config = skipping_config(tmp_path, tiny_llama_dir, ["bt"])
    break_every_line(tmp_path / "data" / "pairs.jsonl", "rejected")
    result = CliRunner().invoke(app, ["validate", str(write_config(tmp_path, config))])
    assert result.exit_code == 2
    assert "loss 'bt' needs preference pairs" in result.output and "missing field (rejected): 8" in result.output


def test_training_fails_on_it_before_the_backbone_loads(tiny_llama_dir, tmp_path, monkeypatch):
    import smorm.train.trainer as trainer

    def no_model(*args, **kwargs):
        raise AssertionError("the backbone was loaded before the data check")

    monkeypatch.setattr(trainer, "build_model", no_model)
    config = skipping_config(tmp_path, tiny_llama_dir, ["bt"])
    break_every_line(tmp_path / "data" / "pairs.jsonl", "rejected")
    with pytest.raises(DataError, match="^loss 'bt' needs preference pairs"):
        trainer.train(RunConfig.model_validate(config), show_progress=False)


def test_a_source_sample_is_passed_through_and_is_exclusive_with_limit(tiny_llama_dir, tmp_path):
    config = tiny_config(tmp_path, tiny_llama_dir)
    config["data"]["pairs"][0].update(sample=3, seed=5)
    loaded = load_training_data(RunConfig.model_validate(config))
    path = config["data"]["pairs"][0]["path"]
    expected, _ = load_pairs(DataSpec(path=path, format="pairs", sample=3, seed=5))
    assert [p.chosen for p in loaded.pairs] == [p.chosen for p in expected] and len(loaded.pairs) == 3
    config["data"]["pairs"][0]["limit"] = 3
    with pytest.raises(ValueError, match="give limit .* or sample .*, not both"):
        RunConfig.model_validate(config)


def test_data_rating_scale_reaches_the_regression_targets(tmp_path):
    # tiny_config's ratings declare helpfulness and verbosity on [0, 4]; the first record is (4, 2)
    config = tiny_config(tmp_path, tmp_path / "no-backbone-needed")
    assert RunConfig.model_validate(config).data.rating_scale == "unit"
    unit = load_training_data(RunConfig.model_validate(config))
    assert unit.ratings[0].ratings == {"helpfulness": 1.0, "verbosity": 0.5}  # 4/4, 2/4
    assert unit.rating_scales["ratings"] == {"helpfulness": [0.0, 4.0], "verbosity": [0.0, 4.0]}
    config["data"]["rating_scale"] = "raw"
    raw = load_training_data(RunConfig.model_validate(config))
    assert raw.ratings[0].ratings == {"helpfulness": 4.0, "verbosity": 2.0}
    assert raw.rating_scales["ratings"] == {}
    config["data"]["rating_scale"] = "minmax"
    with pytest.raises(ValueError, match="rating_scale"):
        RunConfig.model_validate(config)
