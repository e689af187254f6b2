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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from smorm.models.devices import autocast, module_device, move_to
from smorm.models.feature_cache import FeatureStore, part_key
from smorm.models.gate_spec import GATE_HEAD
from smorm.models.reward_model import RewardModel
from smorm.models.scoring import length_sorted_batches
from smorm.models.trunk import apply_trunk_mode, cached_part
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


def feature_store(model: RewardModel, trunk: str, top_k: int, precision: str, storage: torch.dtype,
                  root: str | Path) -> FeatureStore:
    """The store folder of ``model``'s cached part under ``trunk`` (see :func:`~smorm.models.trunk.cached_part`)."""
    part, weights = cached_part(model, trunk, top_k)
    model_type = model.base_model.config.model_type
    return FeatureStore(root, part_key(model_type, part, precision, storage, weights),
                        describe={"backbone": model.config.backbone, "model_type": model_type, "part": part,
                                  "precision": precision, "dtype": str(storage).removeprefix("torch.")})


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
        self.lower = apply_trunk_mode(model, "top_k", top_k)
        model.requires_grad_(False)
        model.eval()

    @property
    def heads(self) -> Any:
        return self.model.heads

    @torch.no_grad()
    def score_token_ids(self, sequences: Sequence[list[int]], batch_size: int = 16, autocast_bf16: bool = False,
                        response_starts: Sequence[int] | None = None, show_progress: bool = False) -> RewardOutput:
        """Lower-layer states from the store (computing the missing ones), then the top layers and heads."""
        device = module_device(self.model)
        pad_id = self.tokenizer.pad_token_id
        lower = self.lower

        def compute(chunk: list[list[int]]) -> list[torch.Tensor]:
            return lower_states(lower, chunk, pad_id, device, autocast_bf16)

        store = feature_store(self.model, "top_k", self.top_k, "bf16" if autocast_bf16 else "fp32", torch.float32,
                              self.store_root)
        features = store.build(list(sequences), compute, batch_size, description="lower layers",
                               show_progress=show_progress, lazy=True)

        def score_rows(rows: list[int]) -> RewardOutput:
            hidden, mask = pad_hidden([features[i] for i in rows])
            with autocast(device, autocast_bf16):
                return self.model(hidden_states=hidden.to(device), attention_mask=mask.to(device))

        output = length_sorted_batches([len(s) for s in sequences], batch_size, score_rows)
        if output is None:
            return RewardOutput(single=None, attributes=None, pooled=torch.empty(0, self.model.hidden_size))
        return output
