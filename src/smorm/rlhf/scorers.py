"""Proxies and the gold: load any reward model, score a pool once, read every mode off one pass.

A scorer reference is ``PATH[:MODE]``: a smorm run or model folder (a gated one, from ``smorm gate``,
gives mode G too), an ensemble / Baseline SM folder (:mod:`smorm.models.composite`), or a Hugging
Face ``AutoModelForSequenceClassification`` folder (mode F only). Several references to one folder
(``runs/smorm:F`` and ``runs/smorm:M``) share one load and one scoring pass.

Pool scores are cached in ``<out>/scores/<name>-<hash>.json``; the hash covers the model folder's
files (names, sizes, modification times) and the pool file, so a changed model or pool is rescored.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smorm.io import atomic_write_json, read_json
from smorm.models.cached_scoring import with_cached_lower_layers
from smorm.models.reward_model import model_folder
from smorm.models.scorers import load_scorer
from smorm.rlhf.pools import PoolEntry
from smorm.types import RewardOutput

MODE_NAMES = ("F", "L", "M", "G")


@dataclass(frozen=True)
class ScorerRef:
    """A reward model folder and the inference mode to read (None: the model's default)."""

    path: Path
    mode: str | None = None

    @property
    def label(self) -> str:
        name = self.path.name if self.path.name != "model" else self.path.parent.name
        return f"{name}:{self.mode}" if self.mode else name


def parse_scorer(text: str) -> ScorerRef:
    """``PATH[:MODE]`` -> :class:`ScorerRef` (``runs/smorm:M``)."""
    head, sep, tail = text.rpartition(":")
    if sep and tail in MODE_NAMES and head:
        return ScorerRef(Path(head), tail)
    return ScorerRef(Path(text))


def scorer_modes(scorer: Any) -> list[str]:
    """Modes a scorer can give (:func:`smorm.models.scorers.available_modes`)."""
    from smorm.models.scorers import available_modes

    return available_modes(scorer)


def attribute_names(scorer: Any) -> list[str]:
    """Names of the multi head's outputs ([] without one)."""
    return list(getattr(scorer.config, "attributes", []) or []) if "multi" in set(scorer.heads) else []


def score_pool(scorer: Any, entries: Sequence[PoolEntry], batch_size: int = 16, bf16: bool = False) -> RewardOutput:
    """Score every response of a pool: rows are prompt-major (``P * N`` rows)."""
    from smorm.models.composite import score_responses

    prompts = [e.prompt for e in entries for _ in e.responses]
    responses = [r for e in entries for r in e.responses]
    return score_responses(scorer, prompts, responses, batch_size=batch_size, autocast_bf16=bf16)


def folder_fingerprint(folder: Path) -> str:
    """Hash of a folder's file names, sizes and modification times (changes when it is rewritten)."""
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


@dataclass
class PoolScores:
    """One model's scores of a pool.

    Attributes:
        single: ``[P, N]`` single-head reward (None without a single head).
        attributes: ``[P, N, K]`` multi-head outputs (None without one).
        attribute_names: ``[K]`` names.
        gate_weights: ``[P, N, K]`` when the model has a gate.
        default_mode: the model's own inference mode.
        gated: ``[P, N]`` gated reward (mode G, 004 Sec. 3.2) when the model has a gate.
    """

    single: np.ndarray | None
    attributes: np.ndarray | None
    attribute_names: list[str]
    gate_weights: np.ndarray | None
    default_mode: str
    gated: np.ndarray | None = None
    combined: np.ndarray | None = None  # mode M on one scale, where the model standardises its heads

    def reward(self, mode: str | None) -> np.ndarray:
        """``[P, N]`` reward of an inference mode (000 Sec. 3: F, L, M; 004 Sec. 3.2: G)."""
        from smorm.models.reward_model import COMBINED, GATE_HEAD, reward_for_mode

        shape = (self.single if self.single is not None else self.attributes).shape[:2]  # type: ignore[union-attr]
        flat = RewardOutput(
            single=None if self.single is None else torch.from_numpy(self.single.reshape(-1)),
            attributes=None if self.attributes is None else torch.from_numpy(
                self.attributes.reshape(-1, self.attributes.shape[-1])),
            pooled=torch.zeros(0),
            gate_weights=None if self.gate_weights is None else torch.from_numpy(
                self.gate_weights.reshape(-1, self.gate_weights.shape[-1])),
            extra={**({} if self.gated is None else {GATE_HEAD: torch.from_numpy(self.gated.reshape(-1))}),
                   **({} if self.combined is None else {COMBINED: torch.from_numpy(self.combined.reshape(-1))})},
        )
        return reward_for_mode(flat, mode or self.default_mode).numpy().reshape(shape)

    def to_json(self) -> dict[str, Any]:
        def listed(array: np.ndarray | None) -> Any:
            return None if array is None else array.tolist()

        return {"single": listed(self.single), "attributes": listed(self.attributes),
                "attribute_names": self.attribute_names, "gate_weights": listed(self.gate_weights),
                "default_mode": self.default_mode, "gated": listed(self.gated), "combined": listed(self.combined)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PoolScores:
        def array(value: Any) -> np.ndarray | None:
            return None if value is None else np.asarray(value, dtype=np.float64)

        return cls(array(data["single"]), array(data["attributes"]), list(data["attribute_names"]),
                   array(data["gate_weights"]), str(data["default_mode"]), array(data.get("gated")),
                   array(data.get("combined")))


def pool_scores(
    path: Path, entries: Sequence[PoolEntry], pool_file: Path, cache_dir: Path | None,
    batch_size: int = 16, bf16: bool = False, dtype: str | None = None, device: str | None = None,
    store_root: Path | None = None,
) -> PoolScores:
    """Score a pool with the model at ``path`` (or read the cached scores).

    ``store_root``: a feature store; a model whose lower layers are its backbone's (``top_k``, a
    ``delta`` folder) then reads their states from it, so the proxies and the gold of one backbone run
    the pool's lower layers once between them (:func:`~smorm.models.cached_scoring.with_cached_lower_layers`).
    """
    from smorm.models.reward_model import COMBINED, GATE_HEAD

    folder = model_folder(path)
    cache_file = None
    if cache_dir is not None:
        pool_hash = hashlib.sha256(pool_file.read_bytes()).hexdigest()[:16]
        key = hashlib.sha256(f"{folder_fingerprint(folder)}:{pool_hash}:{bf16}".encode()).hexdigest()[:16]
        stem = (folder.name if folder.name != "model" else folder.parent.name).replace(os.sep, "_")
        cache_file = cache_dir / f"{stem}-{key}.json"
        if cache_file.is_file():
            return PoolScores.from_json(read_json(cache_file))
    sizes = {len(e.responses) for e in entries}
    if len(sizes) != 1:
        raise ValueError(f"{pool_file}: prompts have different numbers of responses {sorted(sizes)}")
    num_prompts, pool_size = len(entries), sizes.pop()
    scorer = load_scorer(path, dtype=dtype, device=device)
    if store_root is not None:
        scorer = with_cached_lower_layers(scorer, folder, store_root)
    output = score_pool(scorer, entries, batch_size=batch_size, bf16=bf16)

    def shaped(tensor: torch.Tensor | None) -> np.ndarray | None:
        if tensor is None:
            return None
        return tensor.double().numpy().reshape(num_prompts, pool_size, *tensor.shape[1:])

    scores = PoolScores(shaped(output.single), shaped(output.attributes), attribute_names(scorer),
                        shaped(output.gate_weights), str(getattr(scorer.config, "mode", "F")),
                        shaped(output.extra.get(GATE_HEAD)), shaped(output.extra.get(COMBINED)))
    if cache_file is not None:
        atomic_write_json(cache_file, {"model": str(folder), **scores.to_json()}, indent=None)
    return scores
