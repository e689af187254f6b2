"""Lower-layer features of token sequences, computed once and shared by every run that needs them.

The ``top_k`` and ``frozen`` trunk modes never train the lower part of the backbone, so the output of
that part (the hidden states ``[T_i, d]`` after layer ``L - k``, or the final pooled feature ``[d]``)
is a function of the token ids alone. :class:`FeatureStore` keeps it **per sequence**: a folder per
*model part* (``root/<part key>/``, the key a hash of the architecture, the part, the precision it ran
in, the stored dtype and a digest of the part's weights, see :func:`part_key`) holding safetensors
shards whose tensor names are the sequences' own keys (a hash of the token ids,
:func:`sequence_key`). A run looks its sequences up and computes only the ones missing, so SORM finds
SMORM's sequences, the seeds of a study share them, and evaluation finds a benchmark's sequences
scored by an earlier run's evaluation. Shards are written atomically and never rewritten: an
interrupted pass keeps what it finished, and two runs writing the same sequence at once only
duplicate it.

**A prompt's states are stored once** (format v3, issue 15). A causal backbone's states of the
prompt tokens depend on the prompt alone, so when a sequence's response start is known the store
keeps the states of ``ids[:start]`` under the prompt's key (:func:`prompt_state_key`), once for every
sequence that shares the prompt (a pair's chosen and rejected, a pool's N responses), and the
sequence's own entry holds only the response's states; the shard's header metadata links the two
and a read puts them back together, so callers still get ``[T_i, d]`` per sequence. Pooled
features (``frozen``: one vector per sequence) and sequences without a known start are kept whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smorm.io import atomic_save_tensors, atomic_write_json

DIGEST_SAMPLES = 4096  # values read from each weight tensor for the part's digest
PROMPT_PREFIX = "prompt-"  # the store's names of prompt states (a sequence's own key is bare hex)
STORE_ENV = "SMORM_FEATURE_CACHE"


def cache_root() -> Path:
    """smorm's machine-wide cache folder: ``$SMORM_CACHE``, else ``~/.cache/smorm``."""
    root = os.environ.get("SMORM_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "smorm"


def feature_store_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where features are kept: ``cache_dir`` if given, else ``$SMORM_FEATURE_CACHE``, else
    ``$SMORM_CACHE/features``, else ``~/.cache/smorm/features`` (shared by every run on the machine)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    return cache_root() / "features"


def fingerprint(*parts: object) -> str:
    """A short stable hash of JSON-able values and tensors (tensors by their float32 bytes)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            digest.update(part.detach().float().cpu().numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def _token_bytes(ids: Sequence[int]) -> bytes:
    """A sequence's count, then its ids, 4 bytes each (little-endian)."""
    return len(ids).to_bytes(4, "little") + b"".join(int(i).to_bytes(4, "little", signed=True) for i in ids)


def sequences_fingerprint(sequences: Sequence[Sequence[int]]) -> str:
    """A short hash of a list of token sequences (order and lengths included)."""
    digest = hashlib.sha256()
    for ids in sequences:
        digest.update(_token_bytes(ids))
    return digest.hexdigest()[:16]


def sequence_key(ids: Sequence[int]) -> str:
    """The name a sequence's tensor has in the store: a hash of its token ids (and their count)."""
    return hashlib.sha256(_token_bytes(ids)).hexdigest()[:32]


def prompt_state_key(prompt_ids: Sequence[int]) -> str:
    """The name of a prompt's states in the store (shared by every sequence that starts with it)."""
    return PROMPT_PREFIX + sequence_key(prompt_ids)


def weights_digest(named_parameters: Iterable[tuple[str, torch.Tensor]], samples: int = DIGEST_SAMPLES) -> str:
    """A hash of weights that is cheap for billions of parameters and sees a change in any tensor.

    Every tensor contributes its name, shape, dtype and ``samples`` values at evenly spaced
    positions (all of them when it is smaller), so a backbone fine-tuned in one layer, or a different
    checkpoint of the same architecture, gets another digest.
    """
    digest = hashlib.sha256()
    for name, tensor in named_parameters:
        flat = tensor.detach().reshape(-1)
        if flat.numel() > samples:
            # integer spacing: a float linspace rounds its last position past the end for large tensors
            positions = torch.arange(samples, device=flat.device) * (flat.numel() - 1) // (samples - 1)
            flat = flat[positions]
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(flat.float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def part_key(model_type: str, part: str, precision: str, storage_dtype: torch.dtype,
             named_parameters: Iterable[tuple[str, torch.Tensor]]) -> str:
    """The folder name of one model part's features: what decides every feature's value.

    ``part`` says what was run (``lower:28`` — embeddings and the first 28 layers; ``pooled`` — the
    whole backbone and last-token pooling); ``precision`` how (``bf16`` autocast or ``fp32``).
    """
    return fingerprint("features-v3", model_type, part, precision, str(storage_dtype),
                       weights_digest(named_parameters))


class CachedFeatures(Sequence[torch.Tensor]):
    """The features of a list of sequences: read from the store's shards all at once, or (``lazy``) each
    when asked for, from its memory-mapped shard. A sequence stored as a response after a shared prompt
    (``links``: its key -> the prompt's) is read back whole, prompt states first."""

    def __init__(self, keys: list[str], where: dict[str, Path], lazy: bool = False,
                 links: dict[str, str] | None = None) -> None:
        self.keys = keys
        self._where = where
        self._links = {key: links[key] for key in keys if key in links} if links else {}
        self._open: dict[Path, Any] = {}
        self._loaded: dict[str, torch.Tensor] | None = None
        if not lazy:  # read once now (each shared prompt once): later reads are plain tensors
            needed = dict.fromkeys([*keys, *self._links.values()])
            self._loaded = {key: self._tensor(key) for key in needed}
            self._open.clear()

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> torch.Tensor:  # type: ignore[override]
        key = self.keys[index]
        read = self._loaded.__getitem__ if self._loaded is not None else self._tensor
        own = read(key)
        prompt = self._links.get(key)
        return own if prompt is None else torch.cat([read(prompt), own])

    def _tensor(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        shard = self._where[key]
        handle = self._open.get(shard)
        if handle is None:
            handle = self._open[shard] = safe_open(str(shard), framework="pt")
        return handle.get_tensor(key)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[i] for i in range(len(self)))


class FeatureStore:
    """Per-sequence features of one model part in ``root/<key>/shard-*.safetensors``.

    Args:
        root: the store's folder (shared by runs; ``train.cache_dir``).
        key: the part's :func:`part_key`.
        shard_size: sequences per shard file written.
        describe: what the key stands for, written to ``root/<key>/part.json`` for people.
    """

    def __init__(self, root: str | Path, key: str, shard_size: int = 256,
                 describe: dict[str, Any] | None = None) -> None:
        self.root = Path(root) / key
        self.shard_size = shard_size
        self.describe = describe or {}

    def index(self) -> dict[str, Path]:
        """Which shard holds each stored entry (sequences and shared prompts; from the shards' headers)."""
        return self._scan()[0]

    def _scan(self) -> tuple[dict[str, Path], dict[str, str]]:
        """The shard of every entry, and the prompt each response-only entry follows (header metadata)."""
        from safetensors import safe_open

        where: dict[str, Path] = {}
        links: dict[str, str] = {}
        for shard in sorted(self.root.glob("shard-*.safetensors")):
            with safe_open(str(shard), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                    where.setdefault(key, shard)
                for key, prompt in (handle.metadata() or {}).items():
                    links.setdefault(key, prompt)
        return where, links

    def build(self, sequences: Sequence[Sequence[int]], compute: Callable[[list[list[int]]], list[torch.Tensor]],
              batch_size: int, dtype: torch.dtype = torch.float32, description: str = "caching features",
              show_progress: bool = True, lazy: bool = False,
              plan: Callable[[list[list[int]]], list[list[int]]] | None = None,
              starts: Sequence[int] | None = None) -> CachedFeatures:
        """Compute the sequences not yet stored, then return all of them.

        ``compute`` maps a list of token sequences to one tensor per sequence (padding removed);
        tensors are stored in ``dtype``. A sequence that occurs several times is computed once.
        ``plan`` cuts the missing sequences into the chunks ``compute`` gets (indices into its argument;
        default :func:`length_sorted_chunks` of ``batch_size``): a packed pass keeps the responses to one
        prompt in one chunk. A shard is written as soon as it holds ``shard_size`` sequences.
        ``lazy``: read each feature from its (memory-mapped) shard when asked for, instead of all now.
        ``starts``: each sequence's response start; a sequence's prompt states (``[T_i, d]`` features,
        ``0 < start < T_i``) are then stored once for all the sequences that share the prompt.
        """
        from tqdm.auto import tqdm

        self.root.mkdir(parents=True, exist_ok=True)
        if self.describe and not (self.root / "part.json").is_file():
            atomic_write_json(self.root / "part.json", self.describe)
        where, links = self._scan()
        keys = [sequence_key(ids) for ids in sequences]
        if starts is not None and len(starts) != len(sequences):
            raise ValueError(f"{len(starts)} response starts for {len(sequences)} sequences")
        missing: dict[str, tuple[list[int], int]] = {}
        for index, (key, ids) in enumerate(zip(keys, sequences)):
            if key not in where and key not in missing:
                missing[key] = (list(ids), 0 if starts is None else int(starts[index]))
        todo = list(missing)
        todo_ids = [missing[k][0] for k in todo]
        chunks = (plan or (lambda ids: length_sorted_chunks(ids, batch_size)))(todo_ids) if todo else []
        if sorted(i for chunk in chunks for i in chunk) != list(range(len(todo))):
            raise ValueError("a feature plan must name every missing sequence exactly once")
        features: dict[str, torch.Tensor] = {}
        shard_links: dict[str, str] = {}

        def flush() -> None:
            name = hashlib.sha256("".join(sorted(features)).encode()).hexdigest()[:16]
            path = self.root / f"shard-{name}.safetensors"
            atomic_save_tensors(path, features, metadata=shard_links)
            where.update(dict.fromkeys(features, path))
            links.update(shard_links)
            features.clear()
            shard_links.clear()

        def keep(key: str, feature: torch.Tensor) -> None:
            ids, start = missing[key]
            if feature.dim() != 2 or not 0 < start < feature.shape[0]:
                features[key] = feature
                return
            prompt = prompt_state_key(ids[:start])
            if prompt not in where and prompt not in features:
                features[prompt] = feature[:start].clone()
            features[key] = feature[start:].clone()
            shard_links[key] = prompt

        with tqdm(total=len(todo), desc=description, unit="seq", disable=not show_progress or not todo) as bar:
            for chunk in chunks:
                for index, feature in zip(chunk, compute([todo_ids[i] for i in chunk]), strict=True):
                    keep(todo[index], feature.detach().to(dtype).contiguous().cpu())
                bar.update(len(chunk))
                if len(features) >= self.shard_size:
                    flush()
            if features:
                flush()
        absent = [k for k in keys if k not in where or (k in links and links[k] not in where)]
        if absent:
            raise RuntimeError(f"feature store {self.root} lacks {len(absent)} sequences after computing them")
        return CachedFeatures(keys, where, lazy=lazy, links=links)


def length_sorted_chunks(sequences: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices longest first, ``batch_size`` per chunk (little padding in each)."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def lower_part_parameters(model: nn.Module, excluded: Iterable[nn.Module]) -> list[tuple[str, torch.Tensor]]:
    """The named parameters of ``model`` outside the modules ``excluded`` (the trained upper part)."""
    skip = {id(p) for module in excluded for p in module.parameters()}
    return [(name, p) for name, p in model.named_parameters() if id(p) not in skip]
