"""smorm.io: every write lands whole or not at all, beside its target; JSON reads back what was written."""

from __future__ import annotations

import json
import os

import pytest

from smorm.io import (
    atomic_save_tensors,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    read_json,
    replace_folder,
)


def test_atomic_write_text_replaces_whole_file(tmp_path):
    target = tmp_path / "report.md"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_atomic_write_text_makes_the_folder(tmp_path):
    target = tmp_path / "a" / "b" / "notes.txt"
    assert atomic_write_text(target, "x") == target and target.read_text() == "x"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old")

    def crash(temporary):
        temporary.write_text("half")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_json_text_is_exactly_what_json_dumps_gives(tmp_path):
    value = {"b": 1.5, "a": [1, 2], "when": object()}
    path = tmp_path / "x.json"
    atomic_write_json(path, value, default=str)
    assert path.read_text() == json.dumps(value, indent=2, default=str) + "\n"
    atomic_write_json(path, {"k": 1}, indent=None, newline=False)
    assert path.read_text() == '{"k": 1}'
    assert read_json(path) == {"k": 1}


def test_tensors_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    path = tmp_path / "shard-00000.safetensors"
    atomic_save_tensors(path, {"w": torch.arange(6.0).reshape(2, 3)})
    assert torch.equal(load_file(path)["w"], torch.arange(6.0).reshape(2, 3))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_replace_folder_swaps_in_the_new_folder_and_drops_the_old(tmp_path):
    target = tmp_path / "model"
    for content in ("first", "second"):
        staged = tmp_path / f".model.tmp-{content}"
        staged.mkdir()
        (staged / "config.json").write_text(content)
        replace_folder(staged, target)
        assert (target / "config.json").read_text() == content
    assert sorted(os.listdir(tmp_path)) == ["model"]
