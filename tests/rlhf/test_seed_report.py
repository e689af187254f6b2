"""seed_report: differences of multi-seed proxies on one Best-of-N pool, against numbers worked by hand."""

from __future__ import annotations

import json
import math

import pytest

from smorm.rlhf.seed_report import curve_name, main, parse_group, seed_rows


def curve(label: str, by_prompt_at_4: list[float]) -> dict:
    # grid n = 1, 4; the gold score is 0 at n = 1 by construction
    return {"proxy": label, "n": [1, 4], "kl": [0.0, math.log(4) - 3 / 4],
            "gold_by_prompt": [[0.0, v] for v in by_prompt_at_4]}


CURVES = [
    curve("bt", [0.0, 0.3, 0.6]), curve("bt-s1", [0.3, 0.0, 0.0]),
    curve("x:F", [0.5, 0.5, 0.8]), curve("x-s1:F", [0.4, 0.1, 0.4]),
]


def test_two_seeds_by_hand():
    rows = seed_rows(CURVES, {"bt": ["bt", "bt-s1"], "x": ["x:F", "x-s1:F"]}, "bt", [4])
    ref, row = rows
    assert ref["group"] == "bt" and "diff" not in ref
    assert ref["gold"] == pytest.approx((0.0 + 0.3 + 0.6 + 0.3) / 6)
    # seed 0: x - bt = [0.5, 0.2, 0.2] -> 0.3; seed 1: [0.1, 0.1, 0.4] -> 0.2
    assert row["per_seed"] == pytest.approx([0.3, 0.2])
    assert row["diff"] == pytest.approx(0.25)
    assert row["sem_seeds"] == pytest.approx(0.05)  # sd of (0.3, 0.2) = 0.0707, / sqrt 2
    t1 = math.tan(math.pi * (0.975 - 0.5))  # Student t, 1 dof, is Cauchy: 12.706
    assert row["interval"] == pytest.approx([0.25 - t1 * 0.05, 0.25 + t1 * 0.05])
    # seed-averaged per prompt: [0.3, 0.15, 0.3]; sd 0.0866, / sqrt 3 = 0.05
    assert row["sem_prompts"] == pytest.approx(0.05)
    assert row["gold"] == pytest.approx(2.7 / 6)
    assert row["n"] == 4 and row["seeds"] == 2 and row["prompts"] == 3
    assert row["established"] is False  # the interval holds 0


def test_three_seeds_established():
    bt = [curve(f"bt-s{k}", [0.0, 0.1, 0.2]) for k in range(3)]
    x = [curve(f"x-s{k}", [d, 0.1 + d, 0.2 + d]) for k, d in enumerate([1.0, 1.1, 0.9])]
    groups = {"bt": [c["proxy"] for c in bt], "x": [c["proxy"] for c in x]}
    (_, row), = [seed_rows(bt + x, groups, "bt", [3])]  # nearest grid point: 4
    assert row["n"] == 4 and row["diff"] == pytest.approx(1.0)
    assert row["sem_seeds"] == pytest.approx(0.1 / math.sqrt(3))
    t2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # Student t, 2 dof, closed form: 4.303
    assert row["interval"] == pytest.approx([1.0 - t2 * 0.1 / math.sqrt(3), 1.0 + t2 * 0.1 / math.sqrt(3)])
    assert row["sem_prompts"] == pytest.approx(0.0, abs=1e-12)  # the same shift on every prompt
    assert row["established"] is True


def test_names_and_errors(tmp_path):
    assert curve_name("runs/syn/noise-0.25/smorm-s1:F") == "smorm-s1:F"
    assert curve_name("runs/syn/noise-0.25/bt/model") == "bt"
    assert curve_name("bt") == "bt"
    assert parse_group("bt=bt, bt-s1") == ("bt", ["bt", "bt-s1"])
    with pytest.raises(ValueError, match="NAME=MEMBER"):
        parse_group("bt")
    with pytest.raises(ValueError, match=r"names curves \['y'\]"):
        seed_rows(CURVES, {"bt": ["bt", "bt-s1"], "x": ["x:F", "y"]}, "bt", [4])
    with pytest.raises(ValueError, match="paired member by member"):
        seed_rows(CURVES, {"bt": ["bt", "bt-s1"], "x": ["x:F"]}, "bt", [4])
    with pytest.raises(ValueError, match="--reference"):
        seed_rows(CURVES, {"x": ["x:F"]}, "bt", [4])


def test_cli_writes_the_report(tmp_path):
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"curves": CURVES}))
    main([str(summary), "--group", "bt=bt,bt-s1", "--group", "x=x:F,x-s1:F", "--n", "4"])
    report = json.loads((tmp_path / "seed_report.json").read_text())
    assert report["rows"][1]["diff"] == pytest.approx(0.25)
    text = (tmp_path / "seed_report.md").read_text()
    assert "| x | 4 (0.64) | +0.450 | +0.300, +0.200 | +0.250 | 0.050 |" in text
    with pytest.raises(SystemExit):
        main([str(summary), "--group", "bt=bt,nope"])
