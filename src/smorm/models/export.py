"""Export a smorm reward model as a plain Hugging Face ``AutoModelForSequenceClassification`` folder.

The exported folder loads with ``transformers`` alone (no smorm import, no remote code) and gives
the smorm score of one inference mode, so vLLM, TRL, OpenRLHF and RewardBench can serve it:

* F: the single head's weight ``w_S`` becomes the ``score`` layer (000 Sec. 3, SMORM-F);
* L: the mean of the attribute head's rows, ``mean_k w_M[k]`` (the mean of linear heads is linear);
* M: ``0.5 * (w_S + mean_k w_M[k])``, or, where the model puts its heads on one scale (``head_scales``,
  ``mode_scale: standardized``), ``0.5 * (w_S / sd_F + mean_k w_M[k] / sd_L)``: smorm's mode M up
  to the constant ``-0.5 * (mu_F / sd_F + mu_L / sd_L)``, which the bias-free score layer cannot hold
  and which changes no comparison between responses (recorded as ``score_offset`` in the metadata).

A mode that is not one linear map of the pooled state (an MLP head, a prompt-dependent gate) is
refused. Pooling must agree as well: smorm reads the hidden state at the last attention-mask token,
while ``*ForSequenceClassification`` reads the rightmost token that is not ``config.pad_token_id``.
The two agree as long as no sequence ENDS with the pad id, which breaks when the pad token is the
token that closes every formatted conversation (pad = EOS with a template ending in EOS, as for a
base LM with no pad token or a Llama-3 style ``<|eot_id|>``). :func:`choose_pad_token` then picks
another special token (or adds one) and the exported tokenizer pads with it.

Before the folder is published, it is loaded back with ``AutoModelForSequenceClassification`` and
its scores on probe conversations are compared with smorm's (padded batch); any difference larger
than ``tolerance`` refuses the export.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from smorm.io import replace_folder
from smorm.models.heads import LinearHead
from smorm.models.reward_model import RewardModel, model_folder

EXPORT_MODES = ("F", "L", "M")
EXPORT_META_NAME = "smorm_export.json"
ADDED_PAD_TOKEN = "<|smorm_pad|>"
PROBE_CONVERSATIONS: list[tuple[list[dict[str, str]], str]] = [
    # Short and of different lengths, so the check runs a padded batch even for a small max_length.
    ([{"role": "user", "content": "2+2?"}], "4"),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Colour?"}], "Blue, like the sky."),
    ([{"role": "user", "content": "Hello"}], "Hi! How can I help?"),
]


class ExportError(ValueError):
    """The model (or the requested mode) cannot be written as one HF sequence-classification head."""


@dataclass
class PadChoice:
    """Which pad token the exported model uses, and why.

    Attributes:
        token: the pad token string.
        token_id: its id (``config.pad_token_id`` of the export).
        changed: True when it differs from the smorm tokenizer's pad token.
        added: True when it is a new token (the embedding matrix grew by rows that are never read).
        reason: one line for the export metadata and the CLI.
    """

    token: str
    token_id: int
    changed: bool
    added: bool
    reason: str


# --------------------------------------------------------------------------------------------
# The score layer
# --------------------------------------------------------------------------------------------


def _linear_weight(model: RewardModel, head_name: str, mode: str) -> torch.Tensor:
    if head_name not in model.heads:
        raise ExportError(f"mode {mode} needs the {head_name!r} head, which this model does not have "
                          f"(heads: {', '.join(model.heads) or 'none'})")
    head = model.heads[head_name]
    if not isinstance(head, LinearHead) or head.proj.bias is not None:
        kind = model.config.heads.get(head_name, {}).get("kind", type(head).__name__)
        raise ExportError(
            f"mode {mode} cannot be exported as one linear score layer: the {head_name!r} head is {kind!r}, "
            "not a bias-free linear map (an MLP head has a hidden layer and a ReLU). Serve it with "
            "`smorm serve` instead."
        )
    return head.weight.detach().float()


def score_weight(model: RewardModel, mode: str) -> torch.Tensor:
    """``[1, d]`` weight of the one linear layer that gives mode ``mode`` from the pooled state.

    Raises:
        ExportError: the mode is not F, L or M (e.g. G: the gate's weights depend on the prompt),
            or a head it needs is missing or not linear.
    """
    if mode not in EXPORT_MODES:
        raise ExportError(
            f"mode {mode!r} cannot be exported as one linear score layer"
            + (": the gate weights depend on the prompt, so the reward is not a fixed linear map of the "
               "pooled state; serve it with `smorm serve`" if mode == "G" else "")
            + f". Exportable modes: {', '.join(EXPORT_MODES)}"
        )
    if mode == "F":
        return _linear_weight(model, "single", mode)
    mean_attributes = _linear_weight(model, "multi", mode).mean(dim=0, keepdim=True)  # [1, d]
    if mode == "L":
        return mean_attributes
    single = _linear_weight(model, "single", mode)
    scales = m_scales(model)
    if scales is None:
        return 0.5 * (single + mean_attributes)
    (_, sd_f), (_, sd_l) = scales
    return 0.5 * (single / sd_f + mean_attributes / sd_l)


def m_scales(model: RewardModel) -> tuple[list[float], list[float]] | None:
    """``(F's [mean, sd], L's [mean, sd])`` where mode M standardises the heads, else None."""
    scales = model.config.head_scales
    if model.config.mode_scale != "standardized" or "F" not in scales or "L" not in scales:
        return None
    return scales["F"], scales["L"]


def score_offset(model: RewardModel, mode: str) -> float:
    """smorm's reward minus the exported score: the constant a bias-free layer cannot carry."""
    scales = m_scales(model) if mode == "M" else None
    if scales is None:
        return 0.0
    (mu_f, sd_f), (mu_l, sd_l) = scales
    return -0.5 * (mu_f / sd_f + mu_l / sd_l)


# --------------------------------------------------------------------------------------------
# Pooling: the pad token
# --------------------------------------------------------------------------------------------


def closing_token_ids(tokenizer: Any, max_length: int) -> list[int]:
    """Token ids that end EVERY formatted sequence (the template's end of turn, a ``[SEP]`` ...).

    Found as the common tail of two probe conversations whose responses end differently; empty
    when the template writes nothing after the response.
    """
    from smorm.data.formatting import Formatter

    formatter = Formatter(tokenizer, max(max_length, 4096))
    prompt = [{"role": "user", "content": "Hi"}]
    first = formatter.encode(prompt, "Alpha beta.").input_ids
    second = formatter.encode(prompt, "Gamma delta!").input_ids
    common = 0
    while common < min(len(first), len(second)) and first[-1 - common] == second[-1 - common]:
        common += 1
    return first[len(first) - common :]


def choose_pad_token(tokenizer: Any, max_length: int) -> PadChoice:
    """A pad token that never ends a formatted sequence, so HF's pooling finds smorm's last token.

    Keeps the tokenizer's own pad token when it is safe; otherwise takes the first special token
    that is neither the closing token nor written by the template, then any special token that is
    not the closing token; failing all, adds ``<|smorm_pad|>``.
    """
    from smorm.data.formatting import Formatter

    closing = closing_token_ids(tokenizer, max_length)
    final = closing[-1] if closing else None
    pad_id = tokenizer.pad_token_id
    if pad_id is not None and pad_id != final:
        return PadChoice(tokenizer.pad_token, int(pad_id), False, False,
                         "the tokenizer's pad token never ends a formatted sequence")
    formatter = Formatter(tokenizer, max(max_length, 4096))
    scaffold = set(formatter.encode([{"role": "user", "content": "Hi"}], "Alpha beta.").input_ids)
    specials = [int(i) for i in tokenizer.all_special_ids if i != final]
    unused = [i for i in specials if i not in scaffold]
    why = ("the tokenizer's pad token" + (f" ({tokenizer.pad_token!r})" if pad_id is not None else " (none)")
           + " is the token that ends every formatted sequence, so HF pooling would skip it")
    for candidates in (unused, specials):
        if candidates:
            token_id = candidates[0]
            return PadChoice(tokenizer.convert_ids_to_tokens(token_id), token_id, True, False,
                             f"{why}; padding with {tokenizer.convert_ids_to_tokens(token_id)!r} instead")
    return PadChoice(ADDED_PAD_TOKEN, -1, True, True, f"{why}; no other special token exists, so "
                     f"{ADDED_PAD_TOKEN!r} is added")


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def _sequence_classifier(model: RewardModel) -> PreTrainedModel:
    """An ``AutoModelForSequenceClassification`` (num_labels 1) holding the smorm backbone's weights."""
    from transformers import AutoModelForSequenceClassification

    if hasattr(model.backbone, "peft_config"):
        raise ExportError("the backbone still carries LoRA adapters; merge them first "
                          "(smorm.models.trunk.merge_lora; models saved by `smorm train` are already merged)")
    if not model.config.is_decoder:
        raise ExportError(
            "encoder backbones cannot be exported: smorm reads the last real token ([SEP]), while HF's "
            "*ForSequenceClassification for encoders reads [CLS] through a pooler layer"
        )
    config = model.backbone.config.__class__.from_dict(model.backbone.config.to_dict())
    config.num_labels = 1
    config.id2label, config.label2id = {0: "reward"}, {"reward": 0}
    # problem_type "regression" makes HF pipelines return the raw reward instead of a sigmoid.
    config.problem_type = "regression"
    config.architectures = None
    try:
        classifier = AutoModelForSequenceClassification.from_config(config, dtype=model.backbone.dtype)
    except ValueError as error:
        raise ExportError(f"transformers has no sequence-classification class for {config.model_type!r}: {error}") from None
    score = getattr(classifier, "score", None)
    if not isinstance(score, nn.Linear) or score.bias is not None:
        raise ExportError(
            f"{type(classifier).__name__} has no bias-free linear `score` layer over the last token; only "
            "decoder classes of that kind (Llama, Qwen, Mistral, Gemma, GPT-2 ...) can be exported"
        )
    trunk = getattr(classifier, classifier.base_model_prefix)
    missing, unexpected = trunk.load_state_dict(model.base_model.state_dict(), strict=False)
    if missing or unexpected:
        raise ExportError(f"backbone weights do not fit {type(classifier).__name__}: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    classifier.config.architectures = [type(classifier).__name__]
    return classifier


def export_reward_model(
    model: RewardModel, out_dir: str | os.PathLike[str], mode: str = "F", tolerance: float = 1e-4,
    source: str | None = None,
) -> dict[str, Any]:
    """Write ``out_dir`` as a standard sequence-classification folder giving smorm's mode ``mode``.

    The folder is written beside ``out_dir`` and renamed into place only after its scores on the
    probe conversations match smorm's within ``tolerance``.

    Returns:
        The export metadata (also written to ``smorm_export.json``): mode, pad choice, max deviation.

    Raises:
        ExportError: the mode or the model cannot be expressed as one linear score layer, or the
            reloaded folder does not reproduce smorm's scores.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    weight = score_weight(model, mode)
    # Any: the score layer and embeddings are attributes of the architecture's own class.
    classifier: Any = _sequence_classifier(model)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the export is meant to be shared
        model.tokenizer.save_pretrained(tmp)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        pad = choose_pad_token(tokenizer, model.config.max_length)
        if pad.added:
            tokenizer.add_special_tokens({"pad_token": ADDED_PAD_TOKEN})
            pad.token_id = int(tokenizer.pad_token_id)
            if pad.token_id >= classifier.get_input_embeddings().weight.shape[0]:
                classifier.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        elif pad.changed:
            tokenizer.pad_token = pad.token
        # Right padding and left truncation match smorm: positions count from the first real token,
        # and the end of the response (where the reward is read) is kept.
        tokenizer.padding_side = "right"
        tokenizer.truncation_side = "left"
        tokenizer.save_pretrained(tmp)

        with torch.no_grad():
            classifier.score.weight.copy_(weight.to(classifier.score.weight.dtype))
        classifier.config.pad_token_id = pad.token_id
        classifier.save_pretrained(tmp, safe_serialization=True)

        reloaded = AutoModelForSequenceClassification.from_pretrained(tmp, use_safetensors=True).eval()
        deviation = max_score_deviation(model, mode, reloaded, AutoTokenizer.from_pretrained(tmp))
        if deviation > tolerance:
            raise ExportError(f"the exported model's scores differ from smorm's by {deviation:.2e} "
                              f"(> {tolerance:g}) on the probe conversations; not exported")
        meta = {
            "source": source,
            "mode": mode,
            "backbone": model.config.backbone,
            "attributes": list(model.config.attributes),
            "max_length": model.config.max_length,
            "pad": asdict(pad),
            "probe_max_abs_deviation": deviation,
            "score_offset": score_offset(model, mode),
            "how_to_score": "tokenizer(tokenizer.apply_chat_template(messages + [assistant turn], tokenize=False), "
                            "add_special_tokens=False) -> model(...).logits[:, 0]",
        }
        (tmp / EXPORT_META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def max_score_deviation(model: RewardModel, mode: str, classifier: nn.Module, tokenizer: Any) -> float:
    """Largest |HF score - smorm score| over the probe conversations, scored as ONE padded batch."""
    prompts = [prompt for prompt, _ in PROBE_CONVERSATIONS]
    responses = [response for _, response in PROBE_CONVERSATIONS]
    expected = torch.tensor(model.score(prompts, responses, mode=mode).reward) - score_offset(model, mode)
    from smorm.data.formatting import Formatter

    # Token ids as smorm builds them (special tokens the tokenizer adds itself included once).
    formatter = Formatter(tokenizer, model.config.max_length)
    ids = [formatter.encode(p, r).input_ids for p, r in PROBE_CONVERSATIONS]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), int(tokenizer.pad_token_id))
    mask = torch.zeros(len(ids), width, dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    with torch.no_grad():
        got = classifier(input_ids=input_ids, attention_mask=mask).logits[:, 0].float()
    return float((got - expected).abs().max())


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; an existing folder is replaced only if it is an earlier export."""
    if out_dir.exists():
        if not (out_dir / EXPORT_META_NAME).is_file():
            raise FileExistsError(f"{out_dir} exists and is not a smorm export; refusing to replace it")
    replace_folder(tmp, out_dir)


def export_run(run: str | os.PathLike[str], out_dir: str | os.PathLike[str], mode: str = "F",
               tolerance: float = 1e-4) -> dict[str, Any]:
    """Load a run folder (or its ``model/``) and export it; LoRA/delta/reference backbones are resolved
    by :meth:`RewardModel.from_pretrained` (smorm train saves LoRA runs merged)."""
    model_dir = model_folder(run)
    model = RewardModel.from_pretrained(model_dir)
    return export_reward_model(model, out_dir, mode=mode, tolerance=tolerance, source=str(model_dir))
