"""Any Hugging Face ``AutoModelForSequenceClassification`` reward model, on smorm's scoring surface.

Published reward models (and smorm's own ``export``) are sequence classifiers with one output.
:class:`HFRewardModel` gives them the surface the evaluation runner uses for a
:class:`~smorm.models.reward_model.RewardModel` -- ``tokenizer``, ``config.max_length``,
``heads``, and ``score_token_ids -> RewardOutput`` with ``single`` -- so both are formatted with
the tokenizer's chat template, batched and scored the same way. Mode F only. Weights load from
safetensors only and ``trust_remote_code`` is off unless asked for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from smorm.models.devices import autocast, module_device
from smorm.models.pooling import pool_last_token
from smorm.models.scoring import padded_batches
from smorm.types import RewardOutput

DEFAULT_MAX_LENGTH = 1024


@dataclass
class HFScorerConfig:
    """What the runner reads from a scorer's ``config`` (mirrors ``RewardModelConfig``)."""

    backbone: str
    max_length: int = DEFAULT_MAX_LENGTH
    attributes: list[str] = field(default_factory=list)
    mode: str = "F"


def is_sequence_classifier_folder(folder: str | Path) -> bool:
    """A Hugging Face model folder whose architecture is a sequence classifier (and not a smorm folder)."""
    from smorm.models.reward_model import CONFIG_NAME

    folder = Path(folder)
    if (folder / CONFIG_NAME).is_file() or not (folder / "config.json").is_file():
        return False
    try:
        architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    except (json.JSONDecodeError, AttributeError):
        return False
    return any(str(name).endswith("ForSequenceClassification") for name in architectures)


class HFRewardModel:
    """A sequence-classification reward model scored like a smorm ``RewardModel`` (mode F).

    The reward is the classifier's single logit, computed by the model's own forward pass (so
    it pools where the model's authors pool: for decoder classifiers, the last token that is not
    ``config.pad_token_id``). ``pooled`` is the last layer's hidden state at the last real token
    (by attention mask), for the hidden-state diagnostics.

    Args:
        model: a loaded ``AutoModelForSequenceClassification`` with ``num_labels == 1``.
        tokenizer: its tokenizer, with a chat template and a pad token.
        reference: the folder or hub id it came from.
        max_length: token budget for prompt + response (the prompt is cut from the left).
    """

    modes = ("F",)
    heads = ("single",)

    def __init__(self, model: Any, tokenizer: Any, reference: str, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        num_labels = int(getattr(model.config, "num_labels", 1))
        if num_labels != 1:
            raise ValueError(f"{reference}: a reward model has one output, this classifier has num_labels="
                             f"{num_labels} (a multi-class or multi-objective head is not a scalar reward)")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = HFScorerConfig(backbone=reference, max_length=max_length)
        # The model finds each row's last token by comparing ids with config.pad_token_id, so we
        # must pad with exactly that id; a model without one cannot be batched otherwise.
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.pad_id = int(model.config.pad_token_id)

    def to(self, device: torch.device) -> HFRewardModel:
        """Move the classifier to ``device`` (scoring follows the weights)."""
        self.model.to(device)
        return self

    @torch.no_grad()
    def score_token_ids(self, sequences: Sequence[list[int]], batch_size: int = 16,
                        autocast_bf16: bool = False, response_starts: Sequence[int] | None = None) -> RewardOutput:
        """Rewards ``single [N]`` and pooled hidden states ``[N, d]``; length-sorted batches, input order kept.

        ``response_starts`` is accepted for the common scoring surface and not used: a classifier has no
        gate reading the prompt's last token.
        """
        if response_starts is not None and len(response_starts) != len(sequences):
            raise ValueError(f"{len(sequences)} sequences but {len(response_starts)} response_starts")
        device = module_device(self.model)

        def forward(batch: Any, rows: list[int]) -> RewardOutput:
            input_ids, attention_mask = batch.input_ids.to(device), batch.attention_mask.to(device)
            with autocast(device, autocast_bf16):
                out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            return RewardOutput(single=out.logits[:, 0], attributes=None,
                                pooled=pool_last_token(out.hidden_states[-1], attention_mask))

        output = padded_batches(sequences, batch_size, self.pad_id, forward)
        if output is None:
            return RewardOutput(single=torch.empty(0), attributes=None, pooled=torch.empty(0, 0))
        return output


def load_hf_reward_model(reference: str, max_length: int | None = None, dtype: str = "float32",
                         trust_remote_code: bool = False) -> HFRewardModel:
    """Load a sequence-classification reward model from a folder or hub id (safetensors only).

    Args:
        reference: a local folder or a hub id (needs a reachable hub or the local HF cache).
        max_length: token budget (default: the tokenizer's limit, at most ``DEFAULT_MAX_LENGTH``).
        dtype: "float32", "bfloat16", "float16" or "auto".
        trust_remote_code: let transformers run code from the model folder (off by default).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from smorm.models.backbone import ensure_chat_template, ensure_pad_token, resolve_backbone, torch_dtype

    folder = resolve_backbone(reference)  # refuses pickle-only folders; hub snapshots are safetensors-only
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise ValueError(f"{reference}: not a sequence-classification reward model (architectures "
                         f"{architectures or 'not set'}); pass a smorm run/model folder instead")
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, dtype=torch_dtype(dtype), use_safetensors=True, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    ensure_pad_token(tokenizer)
    ensure_chat_template(tokenizer)
    if max_length is None:
        limit = getattr(tokenizer, "model_max_length", None)
        max_length = int(limit) if isinstance(limit, int) and 0 < limit < DEFAULT_MAX_LENGTH else DEFAULT_MAX_LENGTH
    return HFRewardModel(model, tokenizer, reference, max_length=max_length)
