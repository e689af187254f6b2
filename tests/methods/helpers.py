"""Tiny stand-ins for a method config's data and backbone, so every shipped config trains in seconds."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.train.helpers import PAIRS, RATINGS

# A score difference per pair, as UltraFeedback-style data carries (the margin method reads it).
MARGINS = [2.0, 1.0, 3.0, 0.5, 4.0, 1.5, 2.5, 1.0]


def write_pair_sources(folder: Path, count: int) -> list[Path]:
    """``count`` pair files named source-<i> (the source name), each a rotation of the tiny pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in range(count):
        rows = [(*PAIRS[(i + 3 * source) % len(PAIRS)], MARGINS[i]) for i in range(len(PAIRS))]
        path = folder / f"source-{source}.jsonl"
        path.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r, "margin": m}) + "\n"
                                for p, c, r, m in rows))
        paths.append(path)
    return paths


def write_ratings(folder: Path) -> Path:
    path = folder / "ratings.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "response": r, **a}) + "\n" for p, r, a in RATINGS))
    return path


def shrink(raw: dict[str, Any], folder: Path, backbone: Path, steps: int = 3) -> dict[str, Any]:
    """A copy of a method config with the tiny backbone, tiny data (as many sources, up to 3) and a few steps.

    Everything that defines the method (losses and their options, heads, LM head, source
    balancing) is kept; backbone, data files, sizes and optimiser settings are replaced.
    """
    raw = copy.deepcopy(raw)
    raw["output_dir"] = str(folder / "run")
    raw["model"]["backbone"] = str(backbone)
    data = raw.get("data") or {}
    num_sources = min(len(data.get("pairs") or []), 3)
    tiny: dict[str, Any] = {"max_length": 48}
    if num_sources:
        tiny["pairs"] = [{"path": str(p), "format": "pairs"} for p in write_pair_sources(folder / "data", num_sources)]
    if data.get("ratings"):
        tiny["ratings"] = [{"path": str(write_ratings(folder / "data")), "format": "ratings",
                            "options": {"scales": {"helpfulness": [0, 4], "verbosity": [0, 4]}}}]
    raw["data"] = tiny
    balanced = bool(raw.get("train", {}).get("balance_sources"))
    raw["train"] = {**raw.get("train", {}), "trunk": "full", "max_steps": steps, "precision": "fp32",
                    "pair_batch_size": 2 * num_sources if balanced else 4, "rating_batch_size": 2,
                    "lr": 1e-2, "head_lr": None, "warmup_ratio": 0.0, "checkpoint_every": 0, "log_every": 1}
    raw["eval"] = {}
    return raw
