"""One scoring surface and one loader for everything that scores.

A :class:`Scorer` is what eval, score, serve, gate, bon, rl and the TRL reward function need:
a tokenizer, a config with ``max_length``, ``attributes`` and a default ``mode``, the names of its
heads, and ``score_token_ids(sequences, ...) -> RewardOutput``. A :class:`RewardModel`, a composite
(ensemble, Baseline SM) and a Hugging Face sequence classifier each implement it,
:func:`available_modes` lists the modes one offers, and :func:`load_scorer` opens any of them from
a path, on the device asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from smorm.models.composite import CompositeScorer, is_composite, load_composite
from smorm.models.devices import preferred_dtype, resolve_device
from smorm.models.gate_spec import GATE_HEAD
from smorm.models.hf_scorer import HFRewardModel, is_sequence_classifier_folder, load_hf_reward_model
from smorm.models.reward_model import COMBINED, MODES, RewardModel, model_folder
from smorm.types import RewardOutput


@runtime_checkable
class Scorer(Protocol):
    """What every scoring path reads (``config``: ``max_length``, ``attributes``, ``mode``)."""

    tokenizer: Any
    config: Any

    @property
    def heads(self) -> Any: ...

    def score_token_ids(self, sequences: Sequence[list[int]], batch_size: int = 16, autocast_bf16: bool = False,
                        response_starts: Sequence[int] | None = None) -> RewardOutput: ...


def available_modes(scorer: Scorer) -> list[str]:
    """The inference modes a scorer offers: F (single head), L (multi), M (both), G (gate).

    A scorer may declare its own (a Hugging Face classifier: F only); otherwise they follow from the
    names of its heads, so a composite offers what its combination keeps (a ``min`` ensemble: F).
    """
    declared = getattr(scorer, "modes", None)
    if declared is not None:
        return list(declared)
    heads = set(scorer.heads)
    needs = {"F": {"single"}, "L": {"multi"}, "M": {"single", "multi"}, "G": {GATE_HEAD}}
    return [mode for mode in MODES if needs[mode] <= heads]


def looks_like_hub_id(reference: str) -> bool:
    """``owner/name`` that is not a local path (hub ids never start with ``.``, ``/`` or ``~``)."""
    return reference.count("/") == 1 and not reference.startswith((".", "/", "~")) and not Path(reference).exists()


def load_scorer(path: str | os.PathLike[str], *, device: str | torch.device | None = None,
                dtype: str | None = None, hf: bool | None = None, max_length: int | None = None,
                trust_remote_code: bool = False) -> RewardModel | CompositeScorer | HFRewardModel:
    """Open a run folder, a smorm model folder, a composite folder or a Hugging Face classifier.

    Args:
        device: where to score (``auto``: the accelerator if present); default: the host.
        dtype: backbone weight dtype; default bf16 on an accelerator, float32 on the host.
        hf: True: a Hugging Face ``AutoModelForSequenceClassification`` (folder or hub id); False: a
            smorm model; None: detected (a classifier ``config.json`` and no ``smorm_config.json``,
            or an ``owner/name`` that is not a local path).
        max_length: token budget per sequence (default: the model's own).
    """
    reference = str(path)
    target = resolve_device(str(device)) if device is not None else None
    folder = model_folder(reference)
    if hf is None:
        hf = looks_like_hub_id(reference) or is_sequence_classifier_folder(folder)
    scorer: RewardModel | CompositeScorer | HFRewardModel
    if hf:
        source = str(folder) if folder.exists() else reference
        weights = preferred_dtype(target, dtype) if target is not None else dtype or "float32"
        scorer = load_hf_reward_model(source, max_length=max_length, dtype=weights,
                                      trust_remote_code=trust_remote_code)
        return scorer.to(target) if target is not None else scorer
    if not Path(reference).is_dir():
        raise FileNotFoundError(f"{reference}: no such run or model folder (for a hub model id pass --hf)")
    if is_composite(reference):
        scorer = load_composite(reference, trust_remote_code=trust_remote_code, dtype=dtype, device=target)
    else:
        scorer = RewardModel.from_pretrained(reference, trust_remote_code=trust_remote_code, dtype=dtype,
                                             device=target)
    if max_length is not None:
        scorer.config.max_length = max_length
    return scorer


STORED_OUTPUTS = ("single", "attributes", GATE_HEAD, COMBINED)  # what a score file keeps of a RewardOutput


def stored_outputs(output: RewardOutput) -> dict[str, torch.Tensor]:
    """The outputs a score file keeps (:data:`STORED_OUTPUTS`: every head's rewards, the gate's weights,
    mode M on one scale), float32, contiguous, on the host; what :func:`reward_for_mode` reads back."""
    tensors = {"single": output.single, "attributes": output.attributes,
               GATE_HEAD: output.extra.get(GATE_HEAD), COMBINED: output.extra.get(COMBINED)}
    return {name: value.detach().float().cpu().contiguous() for name, value in tensors.items() if value is not None}


def output_from_stored(tensors: dict[str, torch.Tensor]) -> RewardOutput:
    """A RewardOutput (pooled left empty) from :func:`stored_outputs`' tensors."""
    rows = next(iter(tensors.values())).shape[0]
    extra = {name: tensors[name] for name in (GATE_HEAD, COMBINED) if name in tensors}
    return RewardOutput(single=tensors.get("single"), attributes=tensors.get("attributes"),
                        pooled=torch.zeros(rows, 0), extra=extra)
