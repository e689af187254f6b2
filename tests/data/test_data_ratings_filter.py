"""D_M filtered to the prompts of D_S (000 Sec. 3), and the config keys of ranked sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smorm.data.run_data import SHARED_PROMPTS_DROP, load_run_data
from smorm.data.spec import DataSpec
from smorm.run_config import RunConfig
from smorm.settings import validate_settings


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_shared_prompts_keeps_the_rated_responses_whose_prompt_is_in_d_s(tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "How do I boil an egg?", "chosen": "c", "rejected": "r"},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
         "chosen": "red", "rejected": "r"},
    ])
    ratings = write_jsonl(tmp_path / "ratings.jsonl", [
        {"prompt": "how do I  boil an EGG?\n", "response": "a", "helpfulness": 3},  # same after normalising
        {"prompt": "How do I fry an egg?", "response": "b", "helpfulness": 2},       # not in D_S
        {"prompt": "Name a colour.", "response": "blue", "helpfulness": 4},        # D_S has a system turn too
        {"prompt": [{"role": "system", "content": "Be  brief."}, {"role": "user", "content": "name a colour."}],
         "response": "green", "helpfulness": 1},
    ])
    spec = DataSpec(str(ratings), format="ratings", options={"scales": {"helpfulness": [0, 4]}})
    loaded = load_run_data([DataSpec(str(pairs), format="pairs")], [spec], ratings_filter="shared_prompts")
    assert [r.response for r in loaded.ratings] == ["a", "green"]
    ratings_report = next(r for r in loaded.reports if r["kind"] == "ratings")
    assert ratings_report["kept"] == 2 and ratings_report["skipped"] == {SHARED_PROMPTS_DROP: 2}
    total = next(r for r in loaded.reports if r["kind"] == "ratings_filter")
    assert (total["kept"], total["skipped"], total["d_s_prompts"]) == (2, {SHARED_PROMPTS_DROP: 2}, 2)
    assert "case-folded" in total["prompts_compared_as"]
    unfiltered = load_run_data([DataSpec(str(pairs), format="pairs")], [spec])
    assert len(unfiltered.ratings) == 4 and not any(r["kind"] == "ratings_filter" for r in unfiltered.reports)
    with pytest.raises(ValueError, match="data.ratings_filter must be one of"):
        load_run_data([], [spec], ratings_filter="shared")


def test_helpsteer2_binarized_and_helpsteer2_share_every_prompt(shared_data):
    # 000 Table 5's setup: D_S = HelpSteer2 binarized, D_M = HelpSteer2; the filter keeps the rated
    # responses of the 29 prompts that gave a pair and drops the 21 prompts whose two responses tie.
    path = str(shared_data / "ratings/helpsteer/helpsteer2-train-first100.jsonl")
    loaded = load_run_data([DataSpec(path, format="helpsteer", ranking={})], [DataSpec(path, format="helpsteer")],
                           ratings_filter="shared_prompts")
    assert len(loaded.pairs) == 29 and len(loaded.ratings) == 58
    assert next(r for r in loaded.reports if r["kind"] == "ratings_filter")["skipped"] == {SHARED_PROMPTS_DROP: 42}


BASE = {"model": {"heads": {"single": {}, "multi": {}}}, "losses": [{"name": "bt"}]}


def config(data: dict, **extra) -> RunConfig:
    return validate_settings(RunConfig, {**BASE, "data": data, **extra}, where="run.yaml")


def test_ranking_and_filter_keys_are_typed_and_bad_values_name_the_field():
    ok = config({"pairs": [{"path": "h.jsonl", "ranking": {"into": "list", "score": {"helpfulness": 1, "correctness": 0.5}}}],
                 "ratings_filter": "shared_prompts"})
    spec = ok.data.pairs[0].to_spec()
    assert spec.ranking.into == "list" and spec.ranking.score == {"helpfulness": 1.0, "correctness": 0.5}
    assert ok.data.ratings_filter == "shared_prompts" and config({"pairs": [{"path": "p"}]}).data.ratings_filter == "none"
    cases = [
        ({"pairs": [{"path": "p", "ranking": {"into": "lists"}}]}, r"run.yaml: data.pairs.0.ranking.into: Input should be 'pairs' or 'list'"),
        ({"pairs": [{"path": "p", "ranking": {"max_pairs_per_prompt": 0}}]}, r"data.pairs.0.ranking.max_pairs_per_prompt"),
        ({"pairs": [{"path": "p", "ranking": {"into": "list", "max_pairs_per_prompt": 4}}]}, "into: list keeps each list whole"),
        ({"pairs": [{"path": "p", "ranking": {"scores": "helpfulness"}}]}, r"data.pairs.0.ranking.scores: Extra inputs"),
        ({"pairs": [{"path": "p"}], "ratings": [{"path": "r", "ranking": {}}]}, r"ratings.0 \(r\): ranking makes a source D_S pairs"),
        ({"pairs": [{"path": "p"}], "ratings_filter": "shared"}, r"data.ratings_filter: Input should be 'none' or 'shared_prompts'"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            config(data)
    with pytest.raises(ValueError, match=r"balance_sources draws pairs one at a time and would split the ranked lists "
                                         r"of data.pairs.0 \(p\)"):
        config({"pairs": [{"path": "p", "ranking": {"into": "list"}}]}, train={"balance_sources": True})
