"""Cached features for gating: the response feature and the prompt feature of every sequence.

ArmoRM trains its regression layer and its gate on frozen features (004 App. A, "we save features
extracted from the backbone locally"). For each unique (prompt, response) sequence this module stores

- ``features [d]``: the last-real-token hidden state of prompt ⊕ response (what every head reads), and
- ``prompt_features [d]``: the hidden state at the prompt's last token, the gate's input.

For a causal backbone both come from ONE forward pass: the state at ``response_start - 1`` has only
seen the prompt (004 Sec. 3.2, "provided for free"). An encoder needs a second, prompt-only pass;
:meth:`smorm.models.reward_model.RewardModel.score_token_ids` does either, so the cache and inference
compute the same thing. Shards are written atomically and never recomputed, so an interrupted pass
resumes where it stopped (as :mod:`smorm.models.feature_cache` does for training features).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from smorm.io import atomic_save_tensors, atomic_write_json
from smorm.models.feature_cache import fingerprint, sequences_fingerprint

ComputeFn = Callable[[list[list[int]], list[int]], tuple[torch.Tensor, torch.Tensor]]
"""``(token id lists, response starts) -> (features [n, d], prompt_features [n, d])``."""


@dataclass
class SequenceIndex:
    """Unique (token ids, response start) sequences; pairs, ratings and reference rows index into it."""

    input_ids: list[list[int]] = field(default_factory=list)
    response_starts: list[int] = field(default_factory=list)
    _rows: dict[tuple[int, tuple[int, ...]], int] = field(default_factory=dict, repr=False)

    def add(self, input_ids: Sequence[int], response_start: int) -> int:
        """Row of this sequence (added if new)."""
        key = (int(response_start), tuple(int(i) for i in input_ids))
        if key not in self._rows:
            self._rows[key] = len(self.input_ids)
            self.input_ids.append(list(key[1]))
            self.response_starts.append(key[0])
        return self._rows[key]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class CachedFeatures:
    """Features of every sequence of a :class:`SequenceIndex`, in its row order.

    Attributes:
        features: ``[M, d]`` float32, last-real-token state of prompt ⊕ response.
        prompt_features: ``[M, d]`` float32, state at the prompt's last token.
        root: the cache folder they were read from.
    """

    features: torch.Tensor
    prompt_features: torch.Tensor
    root: Path


class GatingFeatureCache:
    """``folder/<key>/shard-XXXXX.safetensors``, each holding ``features``, ``prompt_features``, ``rows``.

    Args:
        folder: cache root (e.g. ``RUN/cache/gating``).
        key: fingerprint of the backbone, precision and sequences (see :func:`cache_key`).
        shard_size: sequences per shard; a finished shard survives an interruption.
    """

    def __init__(self, folder: str | Path, key: str, shard_size: int = 256) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        self.root = Path(folder) / key
        self.shard_size = shard_size

    def shard_path(self, index: int) -> Path:
        return self.root / f"shard-{index:05d}.safetensors"

    def build(
        self,
        sequences: SequenceIndex,
        compute: ComputeFn,
        batch_size: int = 16,
        show_progress: bool = True,
    ) -> CachedFeatures:
        """Compute the missing shards (length-sorted batches within a shard), then load all of them."""
        from safetensors.torch import load_file
        from tqdm.auto import tqdm

        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        total = len(sequences)
        if total == 0:
            raise ValueError("no sequences to compute features for")
        self.root.mkdir(parents=True, exist_ok=True)
        num_shards = (total + self.shard_size - 1) // self.shard_size
        missing = [s for s in range(num_shards) if not self.shard_path(s).is_file()]
        todo = sum(min(self.shard_size, total - s * self.shard_size) for s in missing)
        with tqdm(total=todo, desc="gating features", unit="seq", disable=not show_progress or todo == 0) as bar:
            for shard in missing:
                rows = list(range(shard * self.shard_size, min((shard + 1) * self.shard_size, total)))
                rows.sort(key=lambda i: -len(sequences.input_ids[i]))
                parts: list[tuple[torch.Tensor, torch.Tensor]] = []
                for offset in range(0, len(rows), batch_size):
                    chunk = rows[offset : offset + batch_size]
                    parts.append(compute([sequences.input_ids[i] for i in chunk],
                                         [sequences.response_starts[i] for i in chunk]))
                    bar.update(len(chunk))
                tensors = {
                    "rows": torch.tensor(rows, dtype=torch.long),
                    "features": torch.cat([p[0] for p in parts]).float().contiguous(),
                    "prompt_features": torch.cat([p[1] for p in parts]).float().contiguous(),
                }
                atomic_save_tensors(self.shard_path(shard), tensors)
        return self._load(total, num_shards, load_file)

    def _load(self, total: int, num_shards: int, load_file: Any) -> CachedFeatures:
        features: torch.Tensor | None = None
        prompt_features: torch.Tensor | None = None
        seen = torch.zeros(total, dtype=torch.bool)
        for shard in range(num_shards):
            tensors = load_file(self.shard_path(shard))
            rows = tensors["rows"]
            if features is None or prompt_features is None:
                width = tensors["features"].shape[1]
                features, prompt_features = torch.zeros(total, width), torch.zeros(total, width)
            features[rows] = tensors["features"]
            prompt_features[rows] = tensors["prompt_features"]
            seen[rows] = True
        if features is None or prompt_features is None or not bool(seen.all()):
            raise RuntimeError(f"gating feature cache {self.root} is incomplete; delete it and run again")
        atomic_write_json(self.root / "index.json",
                          {"sequences": total, "shards": num_shards, "hidden_size": int(features.shape[1])},
                          indent=None, newline=False)
        return CachedFeatures(features=features, prompt_features=prompt_features, root=self.root)


def backbone_probe(model: Any) -> torch.Tensor:
    """``[P]`` sum of every backbone tensor: changes when any trained layer changes (top_k, delta
    checkpoints), unlike a probe of the embedding rows alone."""
    return torch.stack([p.detach().float().sum() for p in model.backbone.parameters()])


def cache_key(model: Any, sequences: SequenceIndex, bf16: bool) -> str:
    """Fingerprint of what determines the features: backbone, its weights, precision, sequences."""
    return fingerprint("gating-v1", model.config.backbone, model.config.is_decoder, bf16,
                       backbone_probe(model), sequences_fingerprint(sequences.input_ids), sequences.response_starts)


def model_compute_fn(model: Any, bf16: bool = False) -> ComputeFn:
    """The :data:`ComputeFn` of a :class:`~smorm.models.reward_model.RewardModel` (its own scoring path)."""

    def compute(input_ids: list[list[int]], response_starts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        output = model.score_token_ids(input_ids, batch_size=len(input_ids), autocast_bf16=bf16,
                                       response_starts=response_starts, with_prompt_features=True)
        return output.pooled, output.extra["prompt_pooled"]

    return compute


def compute_features(
    model: Any,
    sequences: SequenceIndex,
    cache_dir: str | Path,
    batch_size: int = 16,
    bf16: bool = False,
    shard_size: int = 256,
    show_progress: bool = True,
) -> CachedFeatures:
    """Features of every sequence through ``model``, read from (or written to) ``cache_dir``."""
    cache = GatingFeatureCache(cache_dir, cache_key(model, sequences, bf16), shard_size=shard_size)
    return cache.build(sequences, model_compute_fn(model, bf16), batch_size=batch_size,
                       show_progress=show_progress)
