"""RewardModel: a Hugging Face backbone, a ``ModuleDict`` of heads, last-real-token pooling.

One forward pass gives every head's output (000 Sec. 3: SMORM reads both heads off one shared
embedding). Inference modes: F = single head, L = mean of the attribute head, M = mean of F and L,
G = the ArmoRM gate over the attributes (004 Sec. 3.2; head ``gate``, see :mod:`smorm.gating`), which
reads the hidden state at the prompt's last token from the same forward pass.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from transformers import PreTrainedModel

from smorm.io import replace_folder
from smorm.models.devices import attention_implementation, host_device, preferred_dtype, resolve_device
from smorm.models.gate_spec import GATE_HEAD
from smorm.models.heads import build_head
from smorm.models.pooling import pool_last_token, position_ids_from_mask, prompt_positions
from smorm.models.scoring import score_token_ids
from smorm.types import Message, RewardOutput

MODES = ("F", "L", "M", "G")
COMBINED = "mode_M"  # RewardOutput.extra key of mode M when the model puts F and L on one scale
CONFIG_NAME = "smorm_config.json"
HEADS_NAME = "heads.safetensors"
DELTA_NAME = "backbone_delta.safetensors"
FORMAT_VERSION = 1


def model_folder(path: str | os.PathLike[str]) -> Path:
    """A run folder's ``model/`` (as ``smorm train`` leaves it) if it has one, else the folder itself."""
    path = Path(path)
    return path / "model" if (path / "model").is_dir() else path


@dataclass
class RewardModelConfig:
    """Everything needed to rebuild a RewardModel besides its weights.

    Attributes:
        backbone: the backbone reference as the user gave it (short name, hub id, folder, .gguf).
        attributes: names of the multi head's outputs, in order.
        rating_scales: ``{source: {attribute: [lo, hi]}}`` used to rescale ratings to [0, 1] (empty when
            the run's ``data.rating_scale`` is raw).
        heads: ``{head_name: {"kind": "linear" | "mlp", "out": int, ...options}}``; the head named
            ``gate`` is the ArmoRM gate (``{"kind": "gate", "hidden_sizes", "dropout", "beta_init"}``).
        mode: default inference mode, one of F, L, M, G.
        max_length: token budget used when formatting prompt + response.
        is_decoder: causal backbone (True) or encoder (False).
        backbone_weights: how the folder stores the backbone: ``full`` (a HF folder in ``backbone/``),
            ``delta`` (only the trained backbone tensors, on top of ``backbone``), ``reference``
            (none: the backbone is loaded from ``backbone`` unchanged).
        with_lm_head: the backbone keeps its LM head (GRM).
        head_scales: ``{"F": [mean, std], "L": [mean, std]}`` of the single head's reward and of the
            attribute mean on the training data, measured when the run is saved (empty for a model
            saved before they existed, or with one head).
        mode_scale: how mode M combines F and L: ``standardized`` (each put on one scale by its
            ``head_scales`` first, see :func:`combine_heads`) or ``raw`` (the literal mean).
    """

    backbone: str
    attributes: list[str] = field(default_factory=list)
    rating_scales: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    mode: str = "F"
    max_length: int = 512
    is_decoder: bool = True
    backbone_weights: str = "full"
    with_lm_head: bool = False
    head_scales: dict[str, list[float]] = field(default_factory=dict)
    mode_scale: str = "standardized"
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RewardModelConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{CONFIG_NAME}: unknown field(s) {sorted(unknown)}")
        return cls(**data)


@dataclass
class Scores:
    """Scores for N responses, every head side by side (JSON-friendly lists)."""

    reward: list[float]
    mode: str
    single: list[float] | None
    attributes: dict[str, list[float]]
    gate_weights: list[list[float]] | None = None
    gated: list[float] | None = None
    combined: list[float] | None = None  # mode M where the model puts F and L on one scale

    def rows(self) -> list[dict[str, Any]]:
        """One dict per response: ``reward``, ``F``/``L``/``M``/``G`` where defined, each attribute."""
        rows: list[dict[str, Any]] = []
        for i, reward in enumerate(self.reward):
            row: dict[str, Any] = {"reward": reward, "mode": self.mode}
            if self.single is not None:
                row["F"] = self.single[i]
            if self.attributes:
                mean_attr = sum(v[i] for v in self.attributes.values()) / len(self.attributes)
                row["L"] = mean_attr
                if self.combined is not None:
                    row["M"] = self.combined[i]
                elif self.single is not None:
                    row["M"] = 0.5 * (self.single[i] + mean_attr)
                row["attributes"] = {name: vals[i] for name, vals in self.attributes.items()}
            if self.gated is not None:
                row["G"] = self.gated[i]
            if self.gate_weights is not None:
                row["gate_weights"] = dict(zip(self.attributes, self.gate_weights[i]))
            rows.append(row)
        return rows


def reward_for_mode(output: RewardOutput, mode: str) -> torch.Tensor:
    """``[N]`` reward of an inference mode (000 Sec. 3: SMORM-F, -L, -M; 004 Sec. 3.2: G)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "G":
        if GATE_HEAD not in output.extra:
            raise ValueError("mode G needs the gate head, which this model does not have (train one with `smorm gate`)")
        return output.extra[GATE_HEAD]
    if mode == "F":
        if output.single is None:
            raise ValueError("mode F needs the single-objective head, which this model does not have")
        return output.single
    if output.attributes is None:
        raise ValueError(f"mode {mode} needs the multi-attribute head, which this model does not have")
    mean_attributes = output.attributes.mean(dim=-1)
    if mode == "L":
        return mean_attributes
    if output.single is None:
        raise ValueError("mode M needs both heads; this model has no single-objective head")
    if COMBINED in output.extra:  # put on one scale by the model that made the output
        return output.extra[COMBINED]
    return 0.5 * (output.single + mean_attributes)


MODE_SCALES = ("standardized", "raw")


def combine_heads(single: torch.Tensor, mean_attributes: torch.Tensor, scales: dict[str, list[float]],
                  mode_scale: str = "standardized") -> torch.Tensor | None:
    """Mode M on one scale: ``0.5 * ((F - mu_F) / sd_F + (L - mu_L) / sd_L)``; None for the raw mean.

    000 Sec. 3 defines SMORM-M as the mean of the two heads' rewards. The heads are trained by
    different losses (BT is scale-free up to its margin; the regression head predicts [0, 1]
    ratings), so their spreads can differ by an order of magnitude and the literal mean is then
    mode F or mode L in disguise. Standardising each by its mean and spread on the training data
    (``head_scales``, stored at save time) gives the two an equal say; ``mode_scale: raw`` (or a
    model saved without scales) keeps the literal mean. The paper does not say which it used; its
    formula is the literal mean.
    """
    if mode_scale not in MODE_SCALES:
        raise ValueError(f"mode_scale {mode_scale!r}: expected one of {', '.join(MODE_SCALES)}")
    if mode_scale == "raw" or "F" not in scales or "L" not in scales:
        return None
    (mean_f, sd_f), (mean_l, sd_l) = scales["F"], scales["L"]
    return 0.5 * ((single - mean_f) / sd_f + (mean_attributes - mean_l) / sd_l)


class RewardModel(nn.Module):
    """Backbone + heads. ``forward`` returns a :class:`RewardOutput` with every head.

    The backbone may be run in three ways (see ``forward``): from token ids (full), from cached
    lower-layer hidden states (``top_k`` trunk mode), or not at all (cached pooled features,
    ``frozen`` trunk mode).
    """

    # A transformers model (or a peft wrapper of one): typed so that .config and save_pretrained
    # are checked, not read through nn.Module's dynamic attribute lookup.
    backbone: PreTrainedModel

    def __init__(self, backbone: PreTrainedModel, tokenizer: Any, config: RewardModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        hidden_size = int(backbone.config.hidden_size)
        heads: dict[str, nn.Module] = {}
        for name, spec in config.heads.items():
            spec = dict(spec)
            kind = spec.pop("kind", GATE_HEAD if name == GATE_HEAD else "linear")
            if (name == GATE_HEAD) != (kind == GATE_HEAD):  # forward() finds the gate by its name
                raise ValueError(f"heads.{name}: the gate head must be named {GATE_HEAD!r} and be of kind {GATE_HEAD!r}")
            # The gate weighs the K attributes; out is its number of outputs, as for the multi head.
            out = int(spec.pop("out", len(config.attributes) if name in ("multi", GATE_HEAD) else 1))
            heads[name] = build_head(kind, hidden_size, out, **spec)
        self.heads = nn.ModuleDict(heads)
        if "multi" in self.heads and not config.attributes:
            raise ValueError("a multi head needs attribute names (config.attributes is empty)")
        if GATE_HEAD in self.heads and "multi" not in self.heads:
            raise ValueError("a gate head weighs the multi head's attributes; this model has no multi head")
        self.upper_trunk: nn.Module | None = None  # set by smorm.models.trunk for top_k mode
        base = self.base_model
        self._accepts_position_ids = "position_ids" in inspect.signature(base.forward).parameters

    @property
    def base_model(self) -> PreTrainedModel:
        """The backbone without its LM head (itself for an ``AutoModel``; unwraps peft)."""
        backbone: Any = self.backbone
        if hasattr(backbone, "get_base_model"):  # peft injects adapters in place, so this runs them
            backbone = backbone.get_base_model()
        return cast(PreTrainedModel, getattr(backbone, "base_model", backbone))

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[N, T] -> [N, T, d]`` last hidden states of the backbone."""
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._accepts_position_ids:
            kwargs["position_ids"] = position_ids_from_mask(attention_mask)
        return self.base_model(**kwargs).last_hidden_state

    def heads_forward(self, pooled: torch.Tensor, prompt_pooled: torch.Tensor | None = None) -> RewardOutput:
        """Apply every head to ``pooled [N, d]``; the gate also reads ``prompt_pooled [N, d]``.

        With a prompt feature, ``extra["prompt_pooled"]`` holds it; with a gate, ``extra["gate"]`` is the
        gated reward ``[N]`` and ``gate_weights`` its ``[N, K]`` weights. Heads run in their own dtype even
        under bf16 autocast: bf16 would round every reward to ~3 significant digits and tie close pairs.
        """
        with torch.autocast(pooled.device.type, enabled=False):
            return self._heads_forward(pooled.to(self._head_dtype()), prompt_pooled)

    def _heads_forward(self, pooled: torch.Tensor, prompt_pooled: torch.Tensor | None) -> RewardOutput:
        single = self.heads["single"](pooled).squeeze(-1) if "single" in self.heads else None
        attributes = self.heads["multi"](pooled) if "multi" in self.heads else None
        extra = {
            name: head(pooled).squeeze(-1)
            for name, head in self.heads.items()
            if name not in ("single", "multi", GATE_HEAD)
        }
        gate_weights = None
        if prompt_pooled is not None:
            extra["prompt_pooled"] = prompt_pooled
        if GATE_HEAD in self.heads:
            if prompt_pooled is None:
                raise ValueError(
                    "this model has a gate (mode G), which reads the prompt's last token: pass "
                    "prompt_last_index (EncodedSequence.response_start - 1 per row) or prompt_pooled to "
                    "forward, or response_starts to score_token_ids"
                )
            extra[GATE_HEAD], gate_weights = self.heads[GATE_HEAD](prompt_pooled, attributes)
        if single is not None and attributes is not None:
            combined = combine_heads(single, attributes.mean(dim=-1), self.config.head_scales, self.config.mode_scale)
            if combined is not None:
                extra[COMBINED] = combined
        return RewardOutput(single=single, attributes=attributes, pooled=pooled, gate_weights=gate_weights,
                            extra=extra)

    def _head_dtype(self) -> torch.dtype:
        for parameter in self.heads.parameters():
            return parameter.dtype
        return torch.float32

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        hidden_states: torch.Tensor | None = None,
        pooled: torch.Tensor | None = None,
        return_hidden: bool = False,
        prompt_last_index: torch.Tensor | None = None,
        prompt_pooled: torch.Tensor | None = None,
        packed: Any = None,
        packed_slots: torch.Tensor | None = None,
    ) -> RewardOutput:
        """Score sequences.

        Args:
            input_ids: ``[N, T]`` token ids (full forward).
            attention_mask: ``[N, T]`` 1 on real tokens; needed unless ``pooled`` is given.
            hidden_states: ``[N, T, d]`` cached output of the frozen lower layers (top_k mode).
            pooled: ``[N, d]`` cached final pooled features (frozen mode): heads only.
            return_hidden: also return the last hidden states ``[N, T, d]`` in ``extra["hidden"]``.
            prompt_last_index: ``[N]`` index of each row's last prompt token, counted from its first
                real token (``response_start - 1``); the gate reads the hidden state there. Causal
                backbones only: that state has seen the prompt alone (004 Sec. 3.2).
            prompt_pooled: ``[N, d]`` the prompt feature computed elsewhere (cached, or a prompt-only
                pass for an encoder, whose states at the prompt have seen the response).
            packed: :class:`smorm.models.packing.PackedRows` (shared-prompt, padding-free rows, causal
                backbones); the output rows are the response segments named by ``packed_slots [N, 2]``
                (row, segment), in that order. With ``hidden_states`` (top_k), those are the cached
                lower-layer states laid out as the packed tokens and only the top layers run.
        """
        if packed is not None:
            if packed_slots is None:
                raise ValueError("packed rows need packed_slots naming the (row, segment) of each output")
            if return_hidden:
                raise ValueError("packed rows have no per-sequence hidden states to return (GRM trains unpacked)")
            return self.packed_forward(packed, packed_slots, hidden_states)
        if pooled is not None:
            return self.heads_forward(pooled, prompt_pooled)
        if attention_mask is None:
            raise ValueError("attention_mask is required unless pooled features are given")
        if hidden_states is not None:
            if self.upper_trunk is None:
                raise RuntimeError("hidden_states given but no upper trunk is set (top_k mode not set up)")
            last_hidden = self.upper_trunk(hidden_states, attention_mask)
        else:
            if input_ids is None:
                raise ValueError("give input_ids, hidden_states or pooled")
            last_hidden = self.encode(input_ids, attention_mask)
        if prompt_pooled is None and prompt_last_index is not None:
            if not self.config.is_decoder:
                raise ValueError(
                    "an encoder's hidden state at the prompt's last token has seen the response: give "
                    "prompt_pooled from a prompt-only pass (score_token_ids does this) instead of prompt_last_index"
                )
            positions = prompt_positions(attention_mask, prompt_last_index)
            prompt_pooled = last_hidden[torch.arange(last_hidden.shape[0], device=last_hidden.device), positions]
        output = self.heads_forward(pool_last_token(last_hidden, attention_mask), prompt_pooled)
        if return_hidden:
            output.extra["hidden"] = last_hidden
        return output

    def packed_forward(self, packed: Any, packed_slots: torch.Tensor, hidden_states: torch.Tensor | None = None,
                       with_prompt: bool = False) -> RewardOutput:
        """Score the response segments ``packed_slots [N, 2]`` (row, segment) of packed rows
        (:class:`smorm.models.packing.PackedRows`), in that order.

        With ``hidden_states`` (top_k) those are the cached lower-layer states laid out as the packed
        tokens (:func:`smorm.models.packing.pack_states`) and only the top layers run. The prompt feature
        (each segment's unit's last prompt token, 004 Sec. 3.2) is read from the same rows for a gate,
        or when ``with_prompt``.
        """
        from smorm.models.packing import packed_hidden_states

        if hidden_states is not None:
            if self.upper_trunk is None:
                raise RuntimeError("hidden_states given but no upper trunk is set (top_k mode not set up)")
            upper: Any = self.upper_trunk  # a smorm.models.trunk.UpperTrunk (not imported here: trunk imports this)
            hidden = upper.packed(hidden_states, packed)
        else:
            hidden = packed_hidden_states(self.base_model, packed)
        rows, segments = packed_slots[:, 0], packed_slots[:, 1]
        prompt = hidden[rows, packed.prompt_last[rows, segments]] if with_prompt or GATE_HEAD in self.heads else None
        return self.heads_forward(hidden[rows, packed.last_index[rows, segments]], prompt)

    # ---------------------------------------------------------------- scoring

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[str | list[Message]],
        responses: Sequence[str],
        mode: str | None = None,
        batch_size: int = 16,
        autocast_bf16: bool = False,
    ) -> Scores:
        """Score ``responses[i]`` to ``prompts[i]``; batches are length-sorted, results keep input order."""
        from smorm.data.formatting import Formatter

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        mode = mode or self.config.mode
        formatter = Formatter(self.tokenizer, self.config.max_length)
        encoded = [
            formatter.encode(p if isinstance(p, list) else [{"role": "user", "content": p}], r)
            for p, r in zip(prompts, responses)
        ]
        outputs = self.score_token_ids(
            [e.input_ids for e in encoded], batch_size=batch_size, autocast_bf16=autocast_bf16,
            response_starts=[e.response_start for e in encoded],
        )
        return scores_from_output(outputs, mode, self.config.attributes)

    @torch.no_grad()
    def score_token_ids(
        self,
        sequences: Sequence[list[int]],
        batch_size: int = 16,
        autocast_bf16: bool = False,
        response_starts: Sequence[int] | None = None,
        with_prompt_features: bool = False,
        pack: bool = False,
    ) -> RewardOutput:
        """Run token sequences through the model in length-sorted batches; rows come back in input order.

        Args:
            sequences: token ids of prompt + response, as :class:`~smorm.data.formatting.Formatter` gives.
            response_starts: ``EncodedSequence.response_start`` of each sequence; required when the model
                has a gate, which reads the prompt's last token (``response_start - 1``), and with ``pack``.
            with_prompt_features: also return the prompt features ``[N, d]`` in ``extra["prompt_pooled"]``
                (computed whenever a gate exists).
            pack: encode each prompt shared by several sequences once (packed rows); causal backbones
                only, others score unpacked. The outputs equal the unpacked ones up to float rounding.

        See :func:`smorm.models.scoring.score_token_ids`.
        """
        return score_token_ids(self, sequences, batch_size, autocast_bf16, response_starts, with_prompt_features,
                               pack)

    # ---------------------------------------------------------------- save / load

    def save_pretrained(
        self, folder: str | os.PathLike[str], backbone_weights: str | None = None,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Write the model atomically: config JSON, heads (safetensors), backbone, tokenizer.

        ``backbone_weights``: ``full`` | ``delta`` | ``reference``; default: ``reference`` if no backbone
        weight is trainable, ``delta`` if only some are, else ``full``.
        ``state_dict``: the whole model's tensors (``heads.*``, ``backbone.*``) to write instead of
        the module's own. Under DeepSpeed ZeRO-3 or FSDP each process holds only shards of the
        weights; the full tensors gathered by ``accelerator.get_state_dict`` are what is saved.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        trainable = {n: p for n, p in self.backbone.named_parameters() if p.requires_grad}
        heads_state, backbone_state = self._split_state_dict(state_dict)
        if backbone_weights is None:
            total = sum(1 for _ in self.backbone.parameters())
            backbone_weights = "reference" if not trainable else ("full" if len(trainable) == total else "delta")
        if backbone_weights not in ("full", "delta", "reference"):
            raise ValueError(f"backbone_weights must be full, delta or reference, not {backbone_weights!r}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:
            config = RewardModelConfig(**{**asdict(self.config), "backbone_weights": backbone_weights})
            heads = {k: v.detach().contiguous().cpu() for k, v in heads_state.items()}
            save_file(heads, tmp / HEADS_NAME)
            if backbone_weights == "full":
                self.backbone.save_pretrained(tmp / "backbone", safe_serialization=True, state_dict=backbone_state)
            elif backbone_weights == "delta":
                source = backbone_state if backbone_state is not None else dict(trainable)
                delta = {n: source[n].detach().contiguous().cpu() for n in trainable}
                save_file(delta, tmp / DELTA_NAME)
            self.tokenizer.save_pretrained(tmp)
            (tmp / CONFIG_NAME).write_text(json.dumps(asdict(config), indent=2) + "\n")
            replace_folder(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    def _split_state_dict(
        self, state_dict: dict[str, torch.Tensor] | None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """``(heads, backbone)`` tensors of a whole-model state dict; the module's own heads if None.

        The names must be the module's (a sharded module keeps its names, not its shapes, so only
        names are checked): a gathered dict that lost or renamed a tensor would otherwise save a
        folder that loads with random weights in its place.
        """
        if state_dict is None:
            return self.heads.state_dict(), None
        heads = {k.removeprefix("heads."): v for k, v in state_dict.items() if k.startswith("heads.")}
        backbone = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
        for part, given, module in (("heads", heads, self.heads), ("backbone", backbone, self.backbone)):
            missing = sorted(set(module.state_dict()) - set(given))
            if missing:
                raise ValueError(f"state_dict lacks {len(missing)} {part} tensor(s), e.g. {missing[:3]}")
        return heads, backbone

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike[str], trust_remote_code: bool = False, dtype: str | None = None,
        device: str | torch.device | None = None,
    ) -> RewardModel:
        """Load a folder written by :meth:`save_pretrained`, or the run folder holding it in ``model/``
        (safetensors only; never pickle).

        Args:
            dtype: backbone weight dtype; default bf16 on an accelerator, float32 on the host. The
                heads stay float32 (bf16 would tie close rewards).
            device: where to put the model (``auto``: the accelerator if present); default: the host.
        """
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        from smorm.models.backbone import load_backbone

        folder = model_folder(folder)
        config_path = folder / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(f"{folder} is not a smorm model folder (no {CONFIG_NAME}) nor a run folder "
                                    f"(no model/{CONFIG_NAME})")
        target = resolve_device(str(device)) if device is not None else host_device()
        dtype = preferred_dtype(target, dtype)
        attention = attention_implementation(target)
        config = RewardModelConfig.from_dict(json.loads(config_path.read_text()))
        if config.backbone_weights == "full":
            auto = AutoModelForCausalLM if config.with_lm_head else AutoModel
            backbone = auto.from_pretrained(
                folder / "backbone", use_safetensors=True, trust_remote_code=trust_remote_code,
                dtype=getattr(torch, dtype) if dtype != "auto" else "auto",
                **({"attn_implementation": attention} if attention else {}),
            )
        else:
            backbone = load_backbone(
                config.backbone, dtype=dtype, with_lm_head=config.with_lm_head,
                trust_remote_code=trust_remote_code, attn_implementation=attention,
            ).model
            if config.backbone_weights == "delta":
                delta = load_file(folder / DELTA_NAME)
                missing = set(delta) - {n for n, _ in backbone.named_parameters()}
                if missing:
                    raise ValueError(f"{folder / DELTA_NAME}: tensors not in the backbone: {sorted(missing)[:5]}")
                backbone.load_state_dict(delta, strict=False)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = cls(backbone, tokenizer, config)
        heads = load_file(folder / HEADS_NAME)
        model.heads.load_state_dict(heads, strict=True)
        model.eval()
        return model.to(target)


def scores_from_output(output: RewardOutput, mode: str, attribute_names: list[str]) -> Scores:
    """Turn a batched :class:`RewardOutput` into JSON-friendly :class:`Scores`."""
    reward = reward_for_mode(output, mode)
    attributes = {}
    if output.attributes is not None:
        attributes = {name: output.attributes[:, i].tolist() for i, name in enumerate(attribute_names)}
    return Scores(
        reward=reward.tolist(),
        mode=mode,
        single=None if output.single is None else output.single.tolist(),
        attributes=attributes,
        gate_weights=None if output.gate_weights is None else output.gate_weights.tolist(),
        gated=output.extra[GATE_HEAD].tolist() if GATE_HEAD in output.extra else None,
        combined=output.extra[COMBINED].tolist() if COMBINED in output.extra else None,
    )
