"""Prompt sets: held-out prompts exclude everything the proxies trained on; file prompts are seeded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smorm.rlhf.prompts import file_prompts, heldout_prompts


def fake_run(folder: Path, pairs_file: Path, limit: int | None) -> Path:
    """A run folder as the trainer leaves it: config.json (a RunConfig dump) next to model/."""
    from smorm.train.config import RunConfig

    (folder / "model").mkdir(parents=True)
    config = RunConfig.model_validate({
        "output_dir": str(folder),
        "model": {"heads": {"single": {}}},
        "data": {"pairs": [{"path": str(pairs_file), "format": "pairs", "limit": limit}]},
        "losses": [{"name": "bt"}],
    })
    (folder / "config.json").write_text(config.model_dump_json())
    return folder


def write_pairs(path: Path, prompts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "chosen": "good", "rejected": "bad"}) + "\n" for p in prompts))
    return path


def test_heldout_excludes_trained_prompts_and_repeats(tmp_path):
    # Rows 0-2 are trained (limit 3); row 5 repeats a trained prompt, row 6 repeats a held-out one.
    pairs = write_pairs(tmp_path / "pairs.jsonl", ["p0", "p1", "p2", "p3", "p4", "p1", "p3", "p7"])
    run = fake_run(tmp_path / "run", pairs, limit=3)
    prompts, report = heldout_prompts([run / "model"], count=10, seed=0)
    assert [p.prompt[0]["content"] for p in prompts] == ["p3", "p4", "p7"]
    assert report["trained_prompts_excluded"] == 3 and report["sampled"] == 3
    assert prompts[0].origin.endswith("pairs.jsonl:4")

    two = heldout_prompts([run], count=2, seed=1)[0]
    assert [p.prompt for p in two] == [p.prompt for p in heldout_prompts([run], count=2, seed=1)[0]]
    assert len(two) == 2 and {p.prompt[0]["content"] for p in two} <= {"p3", "p4", "p7"}


def test_heldout_with_several_runs_excludes_the_union(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", ["a", "b", "c", "d", "e"])
    small = fake_run(tmp_path / "small", pairs, limit=1)
    large = fake_run(tmp_path / "large", pairs, limit=3)
    prompts, _ = heldout_prompts([small, large], count=10)
    assert [p.prompt[0]["content"] for p in prompts] == ["d", "e"]


def test_heldout_needs_a_limit_and_a_run_folder(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", ["a", "b"])
    whole = fake_run(tmp_path / "whole", pairs, limit=None)
    with pytest.raises(ValueError, match="trained on every prompt"):
        heldout_prompts([whole], count=5)
    # A folder with no config.json beside a model/ folder is not a run; the error says why it is needed.
    with pytest.raises(FileNotFoundError, match="not a smorm training run .*held-out prompts need the run's config"):
        heldout_prompts([tmp_path], count=5)


def test_file_prompts_seeded_sample_in_file_order(tmp_path, shared_data):
    questions = str(shared_data / "eval" / "mt-bench" / "question.jsonl")
    everything, report = file_prompts(questions, None)
    assert len(everything) == report["available"] == 80
    sample, _ = file_prompts(questions, 5, seed=3)
    again, _ = file_prompts(questions, 5, seed=3)
    assert [p.prompt for p in sample] == [p.prompt for p in again]
    positions = [[p.prompt for p in everything].index(p.prompt) for p in sample]
    assert positions == sorted(positions) and len(set(positions)) == 5
