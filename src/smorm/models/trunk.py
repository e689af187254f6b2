"""Trunk modes: which backbone weights train, and what is cached (DESIGN.md, "Trunk modes").

- ``full``: every backbone weight trains.
- ``top_k``: the bottom ``L - k`` layers are frozen; their output for every training sequence is
  computed once and kept per sequence (see :mod:`smorm.models.feature_cache`); each step runs only the top ``k``
  layers and the heads.
- ``frozen``: the final pooled features are cached once; only the heads train. With a frozen
  trunk the SMORM heads cannot interact through the shared embedding.
- ``lora``: peft LoRA adapters on the backbone, heads fully trained.

Splitting a backbone into lower and upper parts is model-specific. Decoder families whose
forward uses ``inputs_embeds`` as the first hidden state unchanged (Llama, Mistral, Qwen2/3) are
split by running the same module over a slice of its layer list; BERT-style encoders run their
encoder layers directly.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import nn
from transformers import PreTrainedModel

from smorm.models.feature_cache import lower_part_parameters
from smorm.models.packing import PackedRows, attention_bias
from smorm.models.reward_model import RewardModel, position_ids_from_mask

TRUNK_MODES = ("full", "top_k", "frozen", "lora")
# Decoder families whose base model treats inputs_embeds as the first hidden state as is
# (no embedding scaling), so lower/upper halves are the same module over a layer slice.
SLICEABLE_DECODERS = {"llama", "mistral", "qwen2", "qwen3"}
BERT_LIKE = {"bert", "roberta", "xlm-roberta"}


def num_layers(model: RewardModel) -> int:
    return int(model.base_model.config.num_hidden_layers)


# ``base`` is typed Any below: layers live at architecture-specific places (``layers``,
# ``encoder.layer``, ``embeddings``) that no common transformers type declares.
def layer_list(base: Any) -> nn.ModuleList:
    if hasattr(base, "layers"):
        return base.layers
    if hasattr(base, "encoder") and hasattr(base.encoder, "layer"):
        return base.encoder.layer
    raise NotImplementedError(f"top_k trunk mode does not know where the layers of {type(base).__name__} are")


def check_top_k_supported(model: RewardModel) -> None:
    model_type = model.base_model.config.model_type
    if model_type not in SLICEABLE_DECODERS | BERT_LIKE:
        raise NotImplementedError(
            f"top_k trunk mode is implemented for {sorted(SLICEABLE_DECODERS | BERT_LIKE)}, "
            f"not for model_type {model_type!r}; use trunk=full, frozen or lora"
        )


class _DecoderSlice(nn.Module):
    """A view of a sliceable decoder that runs layers ``[start, stop)``; parameters are shared."""

    view: Any  # a shallow copy of the architecture's base model

    def __init__(self, base: Any, start: int, stop: int, final_norm: bool) -> None:
        super().__init__()
        view = copy.copy(base)  # shallow: shares every parameter with ``base``
        view._modules = dict(base._modules)
        view.layers = nn.ModuleList(list(base.layers)[start:stop])
        if not final_norm:
            view.norm = nn.Identity()
        object.__setattr__(self, "view", view)  # not a submodule: parameters belong to the backbone

    def forward(self, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None,
                hidden_states: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``attention_mask`` is ``[N, T]`` (positions follow from it) or a packed ``[R, 1, L, L]`` mask in the
        form the attention takes (:func:`smorm.models.packing.attention_bias`) with its ``position_ids``."""
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        # .forward, not __call__: the copy shares the base model's hook dicts, and an engine that
        # hooked the base model (DeepSpeed ZeRO-3 fetches each module's weights in a pre-forward
        # hook keyed by attributes it set on the original) would run them on the copy. The layers
        # inside are the base model's own modules, so their hooks run as in a full forward.
        return self.view.forward(
            input_ids=input_ids,
            inputs_embeds=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
        ).last_hidden_state


class _BertSlice(nn.Module):
    def __init__(self, base: Any, start: int, stop: int) -> None:
        super().__init__()
        object.__setattr__(self, "base", base)
        self.start, self.stop = start, stop

    def forward(self, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None,
                hidden_states: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is not None:
            raise ValueError("an encoder's layers cannot run packed rows (they attend both ways)")
        base: Any = self.base
        if input_ids is not None:
            hidden_states = base.embeddings(
                input_ids=input_ids, position_ids=position_ids_from_mask(attention_mask)
            )
        assert hidden_states is not None
        from transformers.masking_utils import create_bidirectional_mask

        # the mask BertModel.forward builds for its layers (additive or boolean per attention backend)
        extended = create_bidirectional_mask(config=base.config, inputs_embeds=hidden_states,
                                             attention_mask=attention_mask)
        for layer in list(base.encoder.layer)[self.start : self.stop]:
            output = layer(hidden_states, attention_mask=extended)
            hidden_states = output[0] if isinstance(output, tuple) else output
        return hidden_states


class LowerTrunk(nn.Module):
    """Runs the frozen bottom layers: ``input_ids [N, T] -> hidden [N, T, d]`` (cached once)."""

    def __init__(self, model: RewardModel, split: int) -> None:
        super().__init__()
        base = model.base_model
        object.__setattr__(self, "base", base)  # not a submodule: parameters belong to the backbone
        if base.config.model_type in BERT_LIKE:
            self.part: nn.Module = _BertSlice(base, 0, split)
        else:
            self.part = _DecoderSlice(base, 0, split, final_norm=False)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.part(attention_mask, input_ids=input_ids)

    @torch.no_grad()
    def packed(self, packed: PackedRows) -> torch.Tensor:
        """The lower layers over packed rows: ``[R, L, d]`` (a causal backbone)."""
        return self.part(attention_bias(cast(nn.Module, self.base), packed), input_ids=packed.input_ids,
                         position_ids=packed.position_ids)


class UpperTrunk(nn.Module):
    """Runs the top layers (and final norm) on cached hidden states: ``[N, T, d] -> [N, T, d]``."""

    def __init__(self, model: RewardModel, split: int) -> None:
        super().__init__()
        base = model.base_model
        object.__setattr__(self, "base", base)  # not a submodule: parameters belong to the backbone
        total = num_layers(model)
        if base.config.model_type in BERT_LIKE:
            self.part: nn.Module = _BertSlice(base, split, total)
        else:
            self.part = _DecoderSlice(base, split, total, final_norm=True)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.part(attention_mask, hidden_states=hidden_states)

    def packed(self, hidden_states: torch.Tensor, packed: PackedRows) -> torch.Tensor:
        """The top layers over packed rows of cached states laid out as ``packed``'s tokens
        (:func:`smorm.models.packing.pack_states`): ``[R, L, d]``."""
        return self.part(attention_bias(cast(nn.Module, self.base), packed), hidden_states=hidden_states,
                         position_ids=packed.position_ids)


def apply_trunk_mode(model: RewardModel, mode: str, top_k: int = 2, lora: dict[str, Any] | None = None
                     ) -> LowerTrunk | None:
    """Set ``requires_grad`` for a trunk mode; returns the lower trunk for ``top_k`` (else None).

    Heads always train. For ``top_k`` the model's ``upper_trunk`` is set so that
    ``model(hidden_states=…, attention_mask=…)`` runs only the top layers.
    """
    if mode not in TRUNK_MODES:
        raise ValueError(f"unknown trunk mode {mode!r}; expected one of {', '.join(TRUNK_MODES)}")
    for parameter in model.heads.parameters():
        parameter.requires_grad_(True)
    if mode == "full":
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(True)
        return None
    if mode == "frozen":
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(False)
        return None
    if mode == "lora":
        apply_lora(model, lora or {})
        return None
    check_top_k_supported(model)
    total = num_layers(model)
    if not 1 <= top_k <= total:
        raise ValueError(f"top_k must be in 1..{total} for this backbone, got {top_k}")
    split = total - top_k
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(False)
    layers = layer_list(model.base_model)
    for layer in list(layers)[split:]:
        for parameter in layer.parameters():
            parameter.requires_grad_(True)
    final_norm = getattr(model.base_model, "norm", None)
    if final_norm is not None:
        for parameter in final_norm.parameters():
            parameter.requires_grad_(True)
    model.upper_trunk = UpperTrunk(model, split)
    return LowerTrunk(model, split)


def cached_part(model: RewardModel, trunk: str, top_k: int) -> tuple[str, list[tuple[str, torch.Tensor]]]:
    """What a trunk mode caches, as the feature store names it, and the weights that decide it.

    ``top_k``: ``lower:<L-k>``, the embeddings and the first ``L - k`` layers (every backbone weight
    but the top ``k`` layers and the final norm); ``frozen``: ``pooled:last_token``, the whole backbone.
    """
    # the base model's weights, named as in it: a backbone loaded with its LM head (GRM) computes the
    # same features as one without, and finds them
    base = model.base_model
    if trunk == "frozen":
        return "pooled:last_token", list(base.named_parameters())
    if trunk != "top_k":
        raise ValueError(f"trunk mode {trunk!r} caches no features")
    split = num_layers(model) - top_k
    upper: list[nn.Module] = list(layer_list(model.base_model))[split:]
    final_norm = getattr(model.base_model, "norm", None)
    if final_norm is not None:
        upper.append(final_norm)
    return f"lower:{split}", lower_part_parameters(base, upper)


def enable_gradient_checkpointing(model: RewardModel, trunk: str) -> None:
    """Recompute the trained layers' activations in backward instead of storing them (large backbones).

    transformers' own switch, non-reentrant (the reentrant form drops gradients of inputs that do not
    require them, which a frozen lower trunk's outputs are). A frozen trunk trains no layer: refused.
    """
    if trunk == "frozen":
        raise ValueError("train.gradient_checkpointing needs trained backbone layers; trunk frozen trains heads only")
    backbone: Any = model.backbone
    if not getattr(backbone, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(backbone).__name__} does not support gradient checkpointing")
    kwargs = {"use_reentrant": False}
    if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5.24's name for it
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def apply_lora(model: RewardModel, options: dict[str, Any]) -> None:
    """Wrap the backbone with peft LoRA adapters; only adapters and heads train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:  # pragma: no cover - peft is a declared extra
        raise ImportError("trunk mode 'lora' needs peft: pip install 'smorm[lora]'") from error
    config = LoraConfig(
        r=int(options.get("r", 8)),
        lora_alpha=int(options.get("alpha", 16)),
        lora_dropout=float(options.get("dropout", 0.0)),
        target_modules=options.get("target_modules", "all-linear"),
        bias="none",
    )
    # A peft model forwards every attribute to the model it wraps, so it is used as one.
    model.backbone = cast(PreTrainedModel, get_peft_model(model.backbone, config))


def merge_lora(model: RewardModel) -> None:
    """Fold LoRA adapters into the backbone weights (before saving a plain checkpoint)."""
    if hasattr(model.backbone, "merge_and_unload"):
        model.backbone = cast(Any, model.backbone).merge_and_unload()
