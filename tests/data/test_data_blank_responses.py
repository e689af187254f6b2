"""Blank responses: an error in training data, kept and counted where a spec allows them (benchmarks)."""

from __future__ import annotations

import json
import re

import pytest

from smorm.data import DataError, DataSpec, load_pairs, load_ranked, load_rmbench

ZERO_WIDTH_SPACE = "\u200b"


def write(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize("blank", ["", "   \n", ZERO_WIDTH_SPACE])
def test_training_data_rejects_a_blank_response_naming_file_line_and_field(tmp_path, blank):
    path = write(tmp_path / "pairs.jsonl", [
        {"prompt": "q1", "chosen": "a", "rejected": "b"},
        {"prompt": "q2", "chosen": "a", "rejected": blank},
    ])
    with pytest.raises(DataError, match="^" + re.escape(f"{path}:2: field 'rejected': empty text") + "$"):
        load_pairs(DataSpec(path=path, format="pairs"))
    pairs, report = load_pairs(DataSpec(path=path, format="pairs"), on_error="skip")
    assert len(pairs) == 1 and report.skipped == {"empty text (rejected)": 1} and report.blank_responses == 0


def test_a_spec_that_allows_blank_responses_keeps_and_counts_them(tmp_path):
    path = write(tmp_path / "pairs.jsonl", [
        {"prompt": "q1", "chosen": "a", "rejected": ""},
        {"prompt": "q2", "chosen": ZERO_WIDTH_SPACE, "rejected": "b"},
        {"prompt": "q3", "chosen": "a", "rejected": "b"},
    ])
    pairs, report = load_pairs(DataSpec(path=path, format="pairs", allow_blank_responses=True))
    assert [(p.chosen, p.rejected) for p in pairs] == [("a", ""), (ZERO_WIDTH_SPACE, "b"), ("a", "b")]
    assert report.blank_responses == 2 and report.skipped == {}
    assert "2 blank responses" in report.summary()


def test_reward_bench_format_keeps_blank_responses_too(tmp_path):
    path = write(tmp_path / "rb.jsonl", [
        {"prompt": "q", "chosen": "fine", "rejected": "", "subset": "alpacaeval-easy", "id": 1},
    ])
    pairs, report = load_pairs(DataSpec(path=path, format="reward-bench", allow_blank_responses=True))
    assert pairs[0].rejected == "" and report.blank_responses == 1


def test_a_blank_prompt_is_still_an_error_where_blank_responses_are_allowed(tmp_path):
    path = write(tmp_path / "pairs.jsonl", [{"prompt": ZERO_WIDTH_SPACE, "chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match="^" + re.escape(f"{path}:1: field 'prompt': empty text") + "$"):
        load_pairs(DataSpec(path=path, format="pairs", allow_blank_responses=True))


def test_rm_bench_and_ranked_count_each_blank_response(tmp_path):
    rm_bench = tmp_path / "chat_filtered.json"
    rm_bench.write_text(json.dumps([
        {"id": "chat/1", "prompt": "q", "chosen": ["a", "", "c"], "rejected": ["x", "y", ZERO_WIDTH_SPACE]},
    ]))
    items, report = load_rmbench(DataSpec(path=str(rm_bench), format="rm-bench", allow_blank_responses=True))
    assert items[0].chosen == ["a", "", "c"] and report.blank_responses == 2
    with pytest.raises(DataError, match="^" + re.escape(f"{rm_bench}:1: field 'chosen[1]': empty text") + "$"):
        load_rmbench(DataSpec(path=str(rm_bench), format="rm-bench"))
    ranked = write(tmp_path / "ranked.jsonl", [{"prompt": "q", "responses": ["a", "", "c"], "scores": [3, 1, 2]}])
    groups, report = load_ranked(DataSpec(path=ranked, format="ranked", allow_blank_responses=True))
    assert groups[0].responses == ["a", "", "c"] and report.blank_responses == 1
