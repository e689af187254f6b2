"""Scoring a ``top_k`` model with its lower layers read from the feature store.

A model trained with the ``top_k`` trunk keeps the backbone's lower ``L - k`` layers as they were,
so the lower-layer states of a benchmark's sequences are the same for every run on that backbone,
depth and precision: :class:`CachedTrunkScorer` computes them once in the shared
:class:`~smorm.models.feature_cache.FeatureStore` and runs only the top ``k`` layers and the heads
per model. Lower then upper equals the full forward (``tests/models/test_trunk.py``), so scores
equal :meth:`RewardModel.score_token_ids` up to float rounding. A study evaluating twenty runs on one
benchmark table computes the table's lower layers once instead of twenty times.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from smorm.models.devices import autocast, module_device, move_to
from smorm.models.feature_cache import FeatureStore, part_key, sequence_key
from smorm.models.gate_spec import GATE_HEAD
from smorm.models.packing import PackedRows, Unit, pack_units
from smorm.models.reward_model import CONFIG_NAME, DELTA_NAME, RewardModel, model_folder
from smorm.models.scoring import can_pack, length_sorted_batches, sequence_units, unit_batches
from smorm.models.trunk import apply_trunk_mode, cached_part, num_layers
from smorm.types import RewardOutput


def pad_hidden(features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-sequence states ``[T_i, d]`` into ``[N, T, d]`` and its attention mask ``[N, T]``."""
    longest = max(f.shape[0] for f in features)
    hidden = features[0].new_zeros(len(features), longest, features[0].shape[1])
    mask = torch.zeros(len(features), longest, dtype=torch.long)
    for row, feature in enumerate(features):
        hidden[row, : feature.shape[0]] = feature
        mask[row, : feature.shape[0]] = 1
    return hidden, mask


def lower_states(lower: Any, chunk: list[list[int]], pad_id: int, device: torch.device, bf16: bool
                 ) -> list[torch.Tensor]:
    """The lower trunk's states of each sequence, ``[T_i, d]`` float32 on the host (padding removed)."""
    from smorm.data.collate import collate_sequences

    batch = move_to(collate_sequences(chunk, pad_id, padding_side="right"), device)
    with torch.no_grad(), autocast(device, bf16):
        hidden = lower(batch.input_ids, batch.attention_mask).float().cpu()
    return [hidden[i, : len(ids)] for i, ids in enumerate(chunk)]


class PackedStates:
    """The caching pass in packed rows: each prompt through the lower layers once for all its responses,
    several sequences per row (issue 15), split back into per-sequence states for the store.

    A causal backbone's state at a token depends only on the tokens before it, so the states of a
    ``prompt ⊕ response`` sequence are the prompt's states followed by the response segment's, read
    from the packed row; they equal the padded pass's up to float rounding (tested). The store keeps
    them per sequence (each prompt's states once, :mod:`~smorm.models.feature_cache`), so packed and
    padded passes share one store.

    Args:
        run: packed rows -> ``[R, L, d]`` states (:meth:`~smorm.models.trunk.LowerTrunk.packed`, or the
            whole backbone for ``frozen``).
        starts: each sequence's response start, by :func:`~smorm.models.feature_cache.sequence_key`
            (a sequence not in it is a unit of its own).
        token_budget: real tokens per forward (``cache_batch_size`` times the longest sequence).
        pooled: keep each sequence's last-token state only (``frozen``), not all its states.
    """

    def __init__(self, run: Callable[[PackedRows], torch.Tensor], starts: Mapping[str, int], pad_id: int,
                 device: torch.device, bf16: bool, token_budget: int, pooled: bool = False,
                 padding_free: bool = True) -> None:
        self.run, self.starts, self.pad_id, self.device, self.bf16 = run, starts, pad_id, device, bf16
        self.token_budget, self.pooled, self.padding_free = token_budget, pooled, padding_free
        self.last_tokens = 0  # real tokens of the last call's rows (a shared prompt counted once)

    def units(self, sequences: Sequence[list[int]]) -> tuple[list[Unit], list[list[int]]]:
        """Units of ``sequences``: the responses to one prompt share one, every other sequence is its own."""
        starts = [self.starts.get(sequence_key(ids), 0) for ids in sequences]
        units, members, single = sequence_units(sequences, starts, max(1, self.token_budget // max(map(len, sequences))))
        for index in single:
            units.append(Unit([], [list(sequences[index])]))
            members.append([index])
        return units, members

    def plan(self, sequences: list[list[int]]) -> list[list[int]]:
        """Chunks of sequence indices, each a batch of whole units within the token budget."""
        units, members = self.units(sequences)
        batches = unit_batches([len(u) for u in units], self.token_budget, max(map(len, sequences)))
        return [[i for u in batch for i in members[u]] for batch in batches]

    def __call__(self, chunk: list[list[int]]) -> list[torch.Tensor]:
        units, members = self.units(chunk)
        packed, slots, _ = pack_units(units, self.pad_id, self.padding_free)
        self.last_tokens = packed.num_tokens
        with torch.no_grad(), autocast(self.device, self.bf16):
            hidden = self.run(move_to(packed, self.device)).float().cpu()
        states: list[torch.Tensor] = [torch.empty(0)] * len(chunk)
        for u, unit in enumerate(units):
            p = len(unit.prompt)
            for k, (row, segment) in enumerate(slots[u]):
                end = int(packed.last_index[row, segment]) + 1
                if self.pooled:
                    states[members[u][k]] = hidden[row, end - 1]
                    continue
                prompt_end = int(packed.prompt_last[row, segment]) + 1
                prompt = hidden[row, prompt_end - p : prompt_end] if p else hidden[row, :0]
                states[members[u][k]] = torch.cat([prompt, hidden[row, end - len(unit.responses[k]) : end]])
        return states


def feature_store(model: RewardModel, trunk: str, top_k: int, precision: str, storage: torch.dtype,
                  root: str | Path) -> FeatureStore:
    """The store folder of ``model``'s cached part under ``trunk`` (see :func:`~smorm.models.trunk.cached_part`)."""
    part, weights = cached_part(model, trunk, top_k)
    model_type = model.base_model.config.model_type
    return FeatureStore(root, part_key(model_type, part, precision, storage, weights),
                        describe={"backbone": model.config.backbone, "model_type": model_type, "part": part,
                                  "precision": precision, "dtype": str(storage).removeprefix("torch.")})


LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def trained_top_layers(folder: str | Path, total_layers: int) -> int | None:
    """How many top layers of its backbone a saved model changed, read from the folder alone.

    A ``delta`` folder (what ``top_k`` training saves) names every backbone weight that differs from
    the reference backbone; the layers below the lowest one it names are the reference's, so their
    states are the same for every model on that backbone and can come from the shared store. A
    ``reference`` folder changed no backbone weight: 1 (only the top layer then runs per model).
    None: the whole backbone is stored (``full``), the delta changes a weight outside the layers other
    than a norm (the embeddings), or it reaches the first layer (LoRA), so nothing below is shared.
    """
    folder = model_folder(folder)
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        return None
    stored = json.loads(config_file.read_text()).get("backbone_weights", "full")
    if stored == "reference":
        return 1
    if stored != "delta" or not (folder / DELTA_NAME).is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(folder / DELTA_NAME), framework="pt") as handle:
        names = list(handle.keys())  # noqa: SIM118 (a safetensors handle, not a dict)
    indices = [int(m.group(1)) for m in map(LAYER_INDEX.search, names) if m]
    outside = [n for n in names if not LAYER_INDEX.search(n) and "norm" not in n.rsplit(".", 2)[-2]]
    if not indices or outside or min(indices) == 0:
        return None
    return total_layers - min(indices)


def with_cached_lower_layers(scorer: Any, folder: str | Path, store_root: str | Path) -> Any:
    """``scorer`` with each smorm model whose lower layers are the reference backbone's scoring through
    them from the store (:class:`CachedTrunkScorer`): several proxies and a gold on one backbone then
    run a pool's lower layers once between them. A composite's members are wrapped one by one; a gated
    model, a full fine-tune or a Hugging Face classifier is returned as it is."""
    from smorm.models.composite import CompositeScorer, member_paths

    def wrapped(model: Any, where: Path) -> Any:
        if not isinstance(model, RewardModel) or GATE_HEAD in model.heads:
            return model
        top = trained_top_layers(where, num_layers(model))
        return model if top is None else CachedTrunkScorer(model, top, store_root)

    if isinstance(scorer, CompositeScorer):
        scorer.members = [wrapped(m, where) for m, where in zip(
            scorer.members, member_paths(scorer.folder, scorer.spec), strict=True)]
        return scorer
    return wrapped(scorer, Path(folder))


class CachedTrunkScorer:
    """A :class:`~smorm.models.scorers.Scorer` over a ``top_k`` model whose lower layers come from a store.

    Args:
        model: the reward model (its lower ``L - top_k`` layers must be the backbone's untrained ones,
            as ``top_k`` training leaves them; the store's key is a digest of those weights, so a model
            whose lower layers differ never reads another's states).
        top_k: the number of top layers the model trained.
        store_root: the feature store's folder (:func:`~smorm.models.feature_cache.feature_store_root`).
    """

    def __init__(self, model: RewardModel, top_k: int, store_root: str | Path) -> None:
        if GATE_HEAD in model.heads:
            raise NotImplementedError("scoring through cached lower layers does not feed the gate's prompt "
                                      "features; score a gated model with its full forward")
        self.model = model
        self.tokenizer = model.tokenizer
        self.config = model.config
        self.top_k = top_k
        self.store_root = Path(store_root)
        lower = apply_trunk_mode(model, "top_k", top_k)
        assert lower is not None  # top_k always has a lower part
        self.lower = lower
        model.requires_grad_(False)
        model.eval()

    @property
    def heads(self) -> Any:
        return self.model.heads

    @torch.no_grad()
    def score_token_ids(self, sequences: Sequence[list[int]], batch_size: int = 16, autocast_bf16: bool = False,
                        response_starts: Sequence[int] | None = None, show_progress: bool = False,
                        pack: bool = True) -> RewardOutput:
        """Lower-layer states from the store (computing the missing ones), then the top layers and heads.

        With ``response_starts`` (and ``pack``) the lower layers run in packed rows, each prompt once."""
        device = module_device(self.model)
        pad_id = self.tokenizer.pad_token_id
        lower = self.lower

        def padded(chunk: list[list[int]]) -> list[torch.Tensor]:
            return lower_states(lower, chunk, pad_id, device, autocast_bf16)

        compute: Callable[[list[list[int]]], list[torch.Tensor]] = padded
        plan = None
        if pack and response_starts is not None and can_pack(self.model) and sequences:
            # the lower layers in packed rows: each prompt once for all its responses (issue 15)
            starts = {sequence_key(ids): start for ids, start in zip(sequences, response_starts, strict=True)}
            packed = PackedStates(lower.packed, starts, pad_id, device, autocast_bf16,
                                  batch_size * max(map(len, sequences)))
            compute, plan = packed, packed.plan
        store = feature_store(self.model, "top_k", self.top_k, "bf16" if autocast_bf16 else "fp32", torch.float32,
                              self.store_root)
        features = store.build(list(sequences), compute, batch_size, description="lower layers",
                               show_progress=show_progress, lazy=True, plan=plan,
                               starts=response_starts if self.model.config.is_decoder else None)

        def score_rows(rows: list[int]) -> RewardOutput:
            hidden, mask = pad_hidden([features[i] for i in rows])
            with autocast(device, autocast_bf16):
                return self.model(hidden_states=hidden.to(device), attention_mask=mask.to(device))

        output = length_sorted_batches([len(s) for s in sequences], batch_size, score_rows)
        if output is None:
            return RewardOutput(single=None, attributes=None, pooled=torch.empty(0, self.model.hidden_size))
        return output
