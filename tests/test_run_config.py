"""The one reader of a finished run's config.json: found from RUN or RUN/model, errors name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smorm.run_config import RunConfig, find_run_config, read_run_config

RAW = {"method": "probe", "output_dir": "runs/probe", "model": {"heads": {"single": {}}},
       "data": {"pairs": [{"path": "pairs.jsonl", "format": "pairs", "limit": 3}]}, "losses": [{"name": "bt"}]}


def make_run(folder: Path, text: str) -> Path:
    """A run folder as `smorm train` leaves it: config.json beside model/."""
    (folder / "model").mkdir(parents=True)
    (folder / "config.json").write_text(text)
    return folder


def test_a_run_is_read_from_its_folder_or_its_model_folder(tmp_path):
    run = make_run(tmp_path / "run", RunConfig.model_validate(RAW).model_dump_json())
    assert find_run_config(run) == find_run_config(run / "model") == run / "config.json"
    for reference in (run, run / "model", str(run)):
        config = read_run_config(reference)
        assert config.method == "probe" and config.data.pairs[0].limit == 3


def test_a_folder_with_a_config_json_but_no_model_is_not_a_run(tmp_path):
    # A Hugging Face model folder has a config.json of its own, which is not a run config.
    hf_folder = tmp_path / "hf"
    hf_folder.mkdir()
    (hf_folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"]}))
    assert find_run_config(hf_folder) is None
    with pytest.raises(FileNotFoundError, match=r"hf: not a smorm training run \(no config.json beside a model/"):
        read_run_config(hf_folder)
    with pytest.raises(FileNotFoundError, match="; the check needs it$"):
        read_run_config(hf_folder, needed_for="the check needs it")
    # Only a folder named model/ points back to its parent run.
    run = make_run(tmp_path / "run", RunConfig.model_validate(RAW).model_dump_json())
    (run / "other").mkdir()
    assert find_run_config(run / "other") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "Invalid JSON"),
        (json.dumps({**RAW, "method": 3}), "method"),
        (json.dumps({**RAW, "stray": 1}), "stray"),
        (json.dumps({**RAW, "losses": [{"name": "btt"}]}), "btt"),
    ],
)
def test_a_broken_config_names_the_file_and_the_field(tmp_path, text, problem):
    run = make_run(tmp_path / "run", text)
    with pytest.raises(ValueError, match="not a valid run config") as caught:
        read_run_config(run / "model")
    message = str(caught.value)
    assert message.startswith(f"{run / 'config.json'}: ") and problem in message
