"""Atomic, resumable checkpoints in safetensors + JSON (no pickle anywhere).

A checkpoint folder ``step-000040`` holds the trainable parameters, the optimizer and scheduler
state and the torch RNG state. It is written to a temporary folder and renamed into place, so a
run killed at any moment leaves either a whole checkpoint or none.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from smorm.io import read_json, replace_folder

PREFIX = "step-"


def _flatten(state: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move tensors out of a nested state into ``tensors``; return the JSON-able skeleton."""
    if isinstance(state, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = state.detach().contiguous().cpu()
        return {"__tensor__": key}
    if isinstance(state, dict):
        return {"__dict__": [[_flatten(k, prefix, tensors), _flatten(v, prefix, tensors)] for k, v in state.items()]}
    if isinstance(state, (list, tuple)):
        return {"__list__": [_flatten(v, prefix, tensors) for v in state], "tuple": isinstance(state, tuple)}
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise TypeError(f"cannot checkpoint a value of type {type(state).__name__}")


def _unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            items = [_unflatten(v, tensors) for v in skeleton["__list__"]]
            return tuple(items) if skeleton.get("tuple") else items
    return skeleton


def save_state(path: Path, state: Any) -> None:
    """Write a nested state (dicts, lists, tensors, scalars) as ``path.safetensors`` + ``path.json``."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    save_file(tensors, str(path) + ".safetensors")
    Path(str(path) + ".json").write_text(json.dumps(skeleton))


def load_state(path: Path) -> Any:
    from safetensors.torch import load_file

    tensors = load_file(str(path) + ".safetensors")
    return _unflatten(read_json(str(path) + ".json"), tensors)


def write_checkpoint(folder: Path, step: int, parts: dict[str, Any], meta: dict[str, Any], keep: int) -> Path:
    """Atomically write ``folder/step-NNNNNN`` with one state file per part; prune old ones."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    try:
        for name, state in parts.items():
            save_state(tmp / name, state)
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=2))
        replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of killed writes are ignored)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(folder: Path) -> Path | None:
    checkpoints = list_checkpoints(folder)
    return checkpoints[-1] if checkpoints else None


def read_checkpoint(path: Path, parts: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    meta = read_json(path / "meta.json")
    return {name: load_state(path / name) for name in parts}, meta

