"""On-disk feature cache for the ``top_k`` and ``frozen`` trunk modes.

Features of every training sequence (the frozen lower layers' output ``[T_i, d]``, or the final
pooled feature ``[d]``) are computed once, written in sharded safetensors files, and read back on
every later epoch and run. Shards are written atomically and a shard that exists is never
recomputed, so an interrupted caching pass resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from smorm.io import atomic_save_tensors, atomic_write_json


def fingerprint(*parts: object) -> str:
    """A short stable hash of what determines the cached features."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            digest.update(part.detach().float().cpu().numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def sequences_fingerprint(sequences: Sequence[Sequence[int]]) -> str:
    digest = hashlib.sha256()
    for ids in sequences:
        digest.update(len(ids).to_bytes(4, "little"))
        digest.update(b"".join(int(i).to_bytes(4, "little") for i in ids))
    return digest.hexdigest()[:16]


class FeatureCache:
    """Per-sequence tensors in ``folder/<key>/shard-XXXXX.safetensors``.

    Args:
        folder: cache root.
        key: fingerprint of the model part, dtype and sequences (see :func:`fingerprint`).
        shard_size: sequences per shard.
    """

    def __init__(self, folder: str | Path, key: str, shard_size: int = 256) -> None:
        self.root = Path(folder) / key
        self.shard_size = shard_size

    def _shard_path(self, index: int) -> Path:
        return self.root / f"shard-{index:05d}.safetensors"

    def build(
        self,
        sequences: Sequence[list[int]],
        compute: Callable[[list[list[int]]], list[torch.Tensor]],
        batch_size: int,
        description: str = "caching features",
        show_progress: bool = True,
    ) -> list[torch.Tensor]:
        """Compute missing shards (length-sorted batches within a shard), then load everything.

        ``compute`` maps a list of token sequences to one tensor per sequence (padding removed).
        """
        from safetensors.torch import load_file
        from tqdm.auto import tqdm

        self.root.mkdir(parents=True, exist_ok=True)
        num_shards = (len(sequences) + self.shard_size - 1) // self.shard_size
        missing = [s for s in range(num_shards) if not self._shard_path(s).is_file()]
        todo = sum(min(self.shard_size, len(sequences) - s * self.shard_size) for s in missing)
        with tqdm(total=todo, desc=description, unit="seq", disable=not show_progress or todo == 0) as bar:
            for shard in missing:
                start = shard * self.shard_size
                indices = list(range(start, min(start + self.shard_size, len(sequences))))
                indices.sort(key=lambda i: -len(sequences[i]))
                features: dict[str, torch.Tensor] = {}
                for offset in range(0, len(indices), batch_size):
                    chunk = indices[offset : offset + batch_size]
                    for index, feature in zip(chunk, compute([list(sequences[i]) for i in chunk])):
                        features[str(index)] = feature.detach().contiguous().cpu()
                    bar.update(len(chunk))
                atomic_save_tensors(self._shard_path(shard), features)
        atomic_write_json(self.root / "index.json", {"sequences": len(sequences), "shards": num_shards}, indent=None,
                          newline=False)
        loaded: list[torch.Tensor | None] = [None] * len(sequences)
        for shard in range(num_shards):
            for key, tensor in load_file(self._shard_path(shard)).items():
                loaded[int(key)] = tensor
        if any(t is None for t in loaded):
            raise RuntimeError(f"feature cache {self.root} is incomplete; delete it and run again")
        return loaded  # type: ignore[return-value]
