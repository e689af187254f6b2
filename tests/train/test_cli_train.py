"""The command line: --help everywhere, validate reports file:line:field, train + score end to end."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from smorm.cli import app
from tests.train.helpers import tiny_config, write_config

runner = CliRunner()


@pytest.mark.parametrize("command", ["train", "score", "validate", "eval", "relabel", "ls", "demo"])
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_validate_reports_records_and_attributes(tiny_llama_dir, tmp_path):
    config = write_config(tmp_path, tiny_config(tmp_path, tiny_llama_dir))
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 0, result.output
    assert "8 pairs, 5 rated responses" in result.output
    assert "helpfulness, verbosity" in result.output


def test_validate_says_why_records_were_dropped_and_prints_notes(tiny_llama_dir, tmp_path):
    config = tiny_config(tmp_path, tiny_llama_dir)
    config["data"]["pairs"] = config["data"]["pairs"] * 2  # the same file twice: its repeats are dropped
    config["data"]["dedup"] = True
    exclude = tmp_path / "dev.jsonl"
    exclude.write_text(json.dumps({"prompt": "a dev prompt", "chosen": "c", "rejected": "r"}) + "\n")
    config["data"]["exclude_prompts_of"] = [{"path": str(exclude), "format": "pairs"}]
    result = runner.invoke(app, ["validate", str(write_config(tmp_path, config))])
    assert result.exit_code == 0, result.output
    assert "8 skipped (duplicate of an earlier pair (data.dedup): 8)" in result.output
    assert "note: data.exclude_prompts_of: " in result.output and "? records" not in result.output


def test_validate_names_file_line_and_field_of_a_bad_record(tiny_llama_dir, tmp_path):
    config = tiny_config(tmp_path, tiny_llama_dir)
    pairs = tmp_path / "data" / "pairs.jsonl"
    lines = pairs.read_text().splitlines()
    lines[2] = json.dumps({"prompt": "p", "chosen": True, "rejected": "r"})  # a bare boolean where text belongs
    pairs.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["validate", str(write_config(tmp_path, config))])
    assert result.exit_code == 2
    assert f"{pairs}:3" in result.output and "chosen" in result.output


def test_override_syntax_errors_are_reported(tiny_llama_dir, tmp_path):
    config = write_config(tmp_path, tiny_config(tmp_path, tiny_llama_dir))
    result = runner.invoke(app, ["validate", str(config), "train.lr"])
    assert result.exit_code == 2 and "key=value" in result.output


def test_train_then_score_gives_every_head(tiny_llama_dir, tmp_path):
    config = write_config(tmp_path, tiny_config(tmp_path, tiny_llama_dir, steps=2))
    result = runner.invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(
        json.dumps({"prompt": "What is 2 + 2?", "response": "4", "id": 7}) + "\n"
        + json.dumps({"prompt": [{"role": "user", "content": "Hi"}], "response": "Hello!"}) + "\n"
    )
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["score", str(tmp_path / "run"), str(inputs), "-o", str(out), "--mode", "M"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["id"] == 7
    # mode M: each head standardised by the mean and spread the run stored at save time
    scales = json.loads((tmp_path / "run" / "model" / "smorm_config.json").read_text())["head_scales"]
    (mu_f, sd_f), (mu_l, sd_l) = scales["F"], scales["L"]
    for row in rows:
        assert set(row["attributes"]) == {"helpfulness", "verbosity"}
        assert row["L"] == pytest.approx(sum(row["attributes"].values()) / 2)
        assert row["M"] == pytest.approx(((row["F"] - mu_f) / sd_f + (row["L"] - mu_l) / sd_l) / 2, abs=1e-5)
        assert row["reward"] == pytest.approx(row["M"])


def test_score_rejects_a_bad_input_line(tiny_llama_dir, tmp_path):
    bad = tmp_path / "in.jsonl"
    bad.write_text('{"prompt": "x", "response": "y"}\n{"prompt": "x"}\n')
    result = runner.invoke(app, ["score", str(tmp_path), str(bad)])
    assert result.exit_code == 2 and f"{bad}:2" in result.output and "response" in result.output
