"""Configs: every shipped file loads and validates (with its data); overrides; clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smorm.losses import get_loss
from smorm.settings import set_dotted
from smorm.train.config import RunConfig, load_config
from smorm.train.prepare import load_training_data

REPO = Path(__file__).resolve().parents[2]
CONFIG_ROOT = REPO / "configs"
# Folders of YAML that are not smorm run configs, each checked by its own test instead:
# configs/accelerate/ holds `accelerate launch --config_file` files (tests/train/test_accelerate_configs.py),
# configs/study/ study configs (tests/study/test_study_configs.py), configs/synthetic/ synthetic-gold
# recipes (tests/rlhf/test_synthetic.py).
NOT_RUN_CONFIGS = {CONFIG_ROOT / "accelerate", CONFIG_ROOT / "study", CONFIG_ROOT / "synthetic"}
CONFIGS = sorted(p for p in CONFIG_ROOT.rglob("*")
                 if p.suffix in {".yaml", ".yml"} and p.parent not in NOT_RUN_CONFIGS)


def test_there_are_configs_in_every_subfolder_scanned():
    # Walked independently of CONFIGS: every folder under configs/ that holds a YAML file must be
    # among the scanned files' folders, at any depth, or named in NOT_RUN_CONFIGS; and the known
    # nested ones are there. A name in NOT_RUN_CONFIGS that holds no YAML is stale and fails too.
    folders_with_yaml = {Path(root) for root, _, files in os.walk(CONFIG_ROOT)
                         if any(name.endswith((".yaml", ".yml")) for name in files)}
    assert folders_with_yaml == {p.parent for p in CONFIGS} | NOT_RUN_CONFIGS
    assert not NOT_RUN_CONFIGS & {p.parent for p in CONFIGS}
    assert {CONFIG_ROOT, CONFIG_ROOT / "methods", CONFIG_ROOT / "rlhf"} <= folders_with_yaml
    assert {p.stem for p in CONFIGS} >= {"smorm", "sorm", "morm", "demo", "bsr", "gold-small"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_ROOT)))
def test_every_shipped_config_loads_and_its_data_validates(path, shared_data):
    config = load_config(path)
    for source in config.data.pairs + config.data.ratings:
        assert Path(source.path).exists(), source.path
    for bench in config.eval.benches:
        assert Path(bench.path).exists(), bench.path
    loaded = load_training_data(config)
    needs = set().union(*(get_loss(loss.name).needs for loss in config.losses))
    if "pairs" in needs:
        assert loaded.pairs, f"{path.name}: its losses need pairs and none were loaded"
    if "ratings" in needs:
        assert loaded.ratings and loaded.attributes, f"{path.name}: its losses need ratings and none were loaded"
    source_reports = [report for report in loaded.reports if report["kind"] in ("pairs", "ratings")]
    assert len(source_reports) == len(config.data.pairs) + len(config.data.ratings)
    for report in source_reports:
        assert report["kept"] > 0, f"{path.name}: {report['path']} gave no records"


def test_overrides_use_dotted_paths_and_yaml_values(tmp_path):
    config = load_config(REPO / "configs" / "smorm.yaml",
                         ["train.lr=1e-4", "data.pairs.0.limit=7", "train.precision=fp32", "model.mode=L"])
    assert config.train.lr == 1e-4 and config.data.pairs[0].limit == 7
    assert config.train.precision == "fp32" and config.model.mode == "L"
    tree: dict = {"a": [{"b": 1}]}
    set_dotted(tree, "a.0.b", 2)
    set_dotted(tree, "c.d", 3)
    assert tree == {"a": [{"b": 2}], "c": {"d": 3}}


def test_unknown_loss_names_suggest_near_names():
    with pytest.raises(ValueError, match="did you mean 'bt'"):
        RunConfig.model_validate({"data": {"pairs": [{"path": "x"}]}, "losses": [{"name": "btt"}]})


def test_unknown_fields_and_bad_values_are_rejected():
    with pytest.raises(ValueError, match="lrr"):
        RunConfig.model_validate({"train": {"lrr": 1}})
    with pytest.raises(ValueError, match="trunk"):
        RunConfig.model_validate({"train": {"trunk": "half"}})


def test_losses_must_have_their_data():
    with pytest.raises(ValueError, match="data.ratings is empty"):
        RunConfig.model_validate({"data": {"pairs": [{"path": "x"}]},
                                  "losses": [{"name": "bt"}, {"name": "regression"}]})


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_odin_and_grm_setups_are_checked_before_training():
    pairs = {"pairs": [{"path": "x"}]}
    with pytest.raises(ValueError, match="'length' head"):
        RunConfig.model_validate({"data": pairs, "losses": [{"name": "odin"}], "model": {"heads": {"single": {}}}})
    with pytest.raises(ValueError, match="with_lm_head"):
        RunConfig.model_validate({"data": pairs, "losses": [{"name": "grm_sft"}]})
    with pytest.raises(ValueError, match="not frozen"):
        RunConfig.model_validate({"data": pairs, "losses": [{"name": "grm_dpo"}],
                                  "model": {"with_lm_head": True}, "train": {"trunk": "frozen"}})
    RunConfig.model_validate({"data": pairs, "losses": [{"name": "grm_dpo"}],  # top_k runs it from cached states
                              "model": {"with_lm_head": True}, "train": {"trunk": "top_k"}})
