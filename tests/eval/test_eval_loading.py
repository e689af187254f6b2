"""Benchmarks load as published: blank responses are scored and counted; broken rows stop the run
with file:line, or are skipped and counted under on_error skip."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from smorm.data import DataError
from smorm.data.formatting import Formatter
from smorm.eval.runner import BenchSpec, evaluate_model, evaluate_run, load_benchmarks
from tests.eval.eval_data import write_jsonl

ZERO_WIDTH_SPACE = "\u200b"
# Auto-J's pairwise test set has answers like these: a losing answer that is empty, or only a
# zero-width space (what a model printed), next to ordinary ones.
AUTOJ_LIKE = [
    {"prompt": "Write a haiku about rain.", "chosen": "Soft rain on the roof,\nthe garden drinks slowly,\nclouds move on.",
     "rejected": ""},
    {"prompt": "Translate 'bonjour' to English.", "chosen": "Hello (or good morning).", "rejected": ZERO_WIDTH_SPACE},
    {"prompt": "What is 3 * 4?", "chosen": "12", "rejected": "34"},
]


def test_an_empty_response_encodes_as_the_templates_end_of_turn(tiny_tokenizer):
    formatter = Formatter(tiny_tokenizer, 64)
    prompt = [{"role": "user", "content": "hi"}]
    empty, spoken = formatter.encode(prompt, ""), formatter.encode(prompt, "ok")
    spoken_tokens = len(tiny_tokenizer("ok", add_special_tokens=False)["input_ids"])
    assert empty.response_start == spoken.response_start
    assert empty.input_ids[: empty.response_start] == spoken.input_ids[: spoken.response_start]
    # no content tokens, but the end-of-turn tokens the template writes after any response
    end_of_turn = spoken.input_ids[spoken.response_start + spoken_tokens :]
    assert end_of_turn and empty.input_ids[empty.response_start :] == end_of_turn
    chosen, rejected = formatter.encode_pair(prompt, "ok", "")
    assert (chosen.input_ids, rejected.input_ids) == (spoken.input_ids, empty.input_ids)


def test_blank_responses_are_scored_and_counted(tiny_reward_model, tmp_path):
    path = write_jsonl(tmp_path / "autoj-pairs.jsonl", AUTOJ_LIKE)
    report = evaluate_model(tiny_reward_model, [BenchSpec("pairs", str(path))], batch_size=2, show_progress=False)
    entry = report["benchmarks"]["pairs:autoj-pairs.jsonl"]
    assert entry["items"] == 3 and entry["blank_responses"] == 2
    assert entry["skipped"] == {} and entry["records_read"] == 3
    # the blank answers got the model's own reward for them, through an independent scoring path
    prompts = [row["prompt"] for row in AUTOJ_LIKE]
    chosen = np.array(tiny_reward_model.score(prompts, [row["chosen"] for row in AUTOJ_LIKE], mode="F").reward)
    rejected = np.array(tiny_reward_model.score(prompts, [row["rejected"] for row in AUTOJ_LIKE], mode="F").reward)
    assert entry["modes"]["F"]["accuracy"] == pytest.approx(float(np.mean(chosen > rejected)))
    assert np.all(np.isfinite(rejected)) and rejected[0] != rejected[1]  # "" and a zero-width space differ


def test_rm_bench_with_a_blank_style_is_scored(tiny_reward_model, tmp_path):
    item = {"id": "chat/1", "prompt": "Say hi.", "chosen": ["Hi!", "Hi there, friend.", "**Hi!**"],
            "rejected": ["", "Go away, please.", ZERO_WIDTH_SPACE]}
    path = tmp_path / "chat_filtered.json"
    path.write_text(json.dumps([item, {**item, "id": "chat/2", "prompt": "Greet me."}]))
    report = evaluate_model(tiny_reward_model, [BenchSpec("rm-bench", str(path))], show_progress=False)
    entry = report["benchmarks"]["rm-bench:chat_filtered.json"]
    assert entry["items"] == 2 and entry["blank_responses"] == 4
    assert 0.0 <= entry["modes"]["F"]["score"] <= 1.0


def broken_bench(tmp_path) -> tuple[str, list[str]]:
    """A pairs benchmark with a row missing a field, a wrong type and an unparsable line."""
    lines = [json.dumps(AUTOJ_LIKE[0]),
             json.dumps({"prompt": "q", "chosen": "a"}),
             json.dumps(AUTOJ_LIKE[1]),
             json.dumps({"prompt": "q", "chosen": 5, "rejected": "b"}),
             '{"prompt": "q", "chosen": "a", ',
             json.dumps(AUTOJ_LIKE[2])]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path), lines


def test_a_broken_row_stops_the_benchmark_with_file_line_and_field(tmp_path):
    path, _ = broken_bench(tmp_path)
    with pytest.raises(DataError, match="^" + re.escape(f"{path}:2: field 'rejected': missing") + "$"):
        load_benchmarks([BenchSpec("pairs", path)])


def test_skip_leaves_broken_rows_out_and_counts_them_per_reason(tmp_path):
    path, _ = broken_bench(tmp_path)
    loaded = load_benchmarks([BenchSpec("pairs", path, on_error="skip")])
    assert len(loaded.items[0].rows) == 3
    assert [row["origin"] for row in loaded.items[0].rows] == [f"{path}:1", f"{path}:3", f"{path}:6"]
    assert loaded.items[0].load.skipped == {"missing field (rejected)": 1,
                                            "not text (chosen)": 1, "malformed record": 1}
    assert loaded.items[0].load.blank_responses == 2
    # the policy given to the library call replaces each spec's own
    again = load_benchmarks([BenchSpec("pairs", path)], on_error="skip")
    assert again.items[0].load.skipped == loaded.items[0].load.skipped
    with pytest.raises(DataError, match=re.escape(f"{path}:2: field 'rejected': missing")):
        load_benchmarks([BenchSpec("pairs", path, on_error="skip")], on_error="error")


def test_the_report_files_carry_the_counts(tiny_model_dir, tmp_path):
    path, _ = broken_bench(tmp_path)
    result = evaluate_run(tiny_model_dir, [BenchSpec("pairs", path)], out_dir=tmp_path / "out", batch_size=2,
                          show_progress=False, on_error="skip")
    entry = json.loads(result.json_path.read_text())["benchmarks"]["pairs:broken.jsonl"]
    assert entry["items"] == 3 and entry["blank_responses"] == 2 and entry["on_error"] == "skip"
    assert sum(entry["skipped"].values()) == 3 and entry["records_read"] == 6
    markdown = result.markdown_path.read_text()
    assert ("Rows read: 6; blank responses scored as published: 2; rows left out: 3 (malformed record: 1, "
            "missing field (rejected): 1, not text (chosen): 1); on_error: skip.") in markdown
