"""docs/reward-hacking.md says which mode the gold scores in; the gold's config must say the same."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_the_documented_gold_mode_is_the_configs_mode():
    # the doc's commands pass `--gold runs/rlhf/gold` without :MODE, so the gold scores in its model.mode
    doc = (REPO / "docs" / "reward-hacking.md").read_text()
    config = yaml.safe_load((REPO / "configs" / "rlhf" / "gold-small.yaml").read_text())
    mode = config["model"]["mode"]
    assert "--gold runs/rlhf/gold " in doc and "--gold runs/rlhf/gold:" not in doc
    stated = set(re.findall(r"read in mode ([FLMG])", doc)) | set(re.findall(r"\| gold \(mode ([FLMG])\)", doc))
    assert stated == {mode}, (stated, mode)
    assert yaml.safe_load((REPO / "configs" / "gold.yaml").read_text())["model"]["mode"] == mode
