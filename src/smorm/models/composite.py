"""Reward models made of several trained models: seed ensembles and Baseline SM.

* **Ensemble** (000 Sec. 5.1, App. G.1; Coste et al. 2024): k models trained with different seeds,
  scored by the mean, the minimum (worst-case optimisation, WCO) or the mean minus ``λ`` times the
  variance of their rewards (uncertainty-weighted optimisation, UWO; Coste et al. 2024 Sec. 3).
* **Baseline SM** (000 Sec. 3): a SORM and a MORM trained separately and averaged at scoring time,
  two forward passes per response: the system SMORM replaces by one backbone.

A composite is a folder holding ``smorm_composite.json`` (member folders and the combination rule,
written atomically); it points at its members and copies no weights. :func:`smorm.models.scorers.load_scorer` opens a
plain model folder (a `RewardModel`) or a composite folder (a `CompositeScorer`) behind one scoring
surface: ``.tokenizer``, ``.config`` (``max_length``, ``attributes``, ``mode``), ``.heads`` (names),
``score_token_ids`` and ``score``. `score_responses` formats and scores prompt/response text with any
scorer on that surface (a Hugging Face sequence classifier included), handing a gated model the
``response_starts`` its gate needs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from smorm.io import atomic_write_text, read_json
from smorm.models.reward_model import (
    COMBINED,
    CONFIG_NAME,
    GATE_HEAD,
    MODES,
    RewardModel,
    RewardModelConfig,
    Scores,
    combine_heads,
    model_folder,
    reward_for_mode,
)
from smorm.types import Message, RewardOutput

COMPOSITE_NAME = "smorm_composite.json"
KINDS = ("ensemble", "baseline_sm")
COMBINES = ("mean", "min", "uwo")
FORMAT_VERSION = 1


@dataclass
class CompositeSpec:
    """What ``smorm_composite.json`` holds.

    Attributes:
        kind: ``ensemble`` or ``baseline_sm``.
        combine: ``mean``, ``min`` or ``uwo`` (Baseline SM is always ``mean``).
        members: member model folders (run folders or their ``model/``), relative to the composite folder
            unless absolute. Baseline SM: ``[sorm, morm]``.
        roles: one label per member (``seed-0`` …, or ``sorm`` / ``morm``).
        mode: the mode each member is scored in before a ``min`` or ``uwo`` (None: the members' own
            default mode).
        uwo_lambda: ``λ >= 0`` of ``uwo``, the weight of the members' variance (None for the others).
    """

    kind: str
    combine: str
    members: list[str]
    roles: list[str]
    mode: str | None = None
    uwo_lambda: float | None = None
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2) + "\n"


@dataclass
class CompositeConfig:
    """The part of a model config the evaluator and ``smorm score`` read."""

    max_length: int
    attributes: list[str] = field(default_factory=list)
    mode: str = "F"


# ---------------------------------------------------------------- folders


def is_composite(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / COMPOSITE_NAME).is_file()


def member_config(path: Path) -> RewardModelConfig:
    """A member's ``smorm_config.json`` (read without loading weights)."""
    config_path = model_folder(path) / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{path} is not a smorm model or run folder (no {CONFIG_NAME} in it or its model/)")
    return RewardModelConfig.from_dict(read_json(config_path))


def read_composite(folder: str | os.PathLike[str]) -> CompositeSpec:
    """Read and check ``folder/smorm_composite.json``; errors name the file and the field."""
    path = Path(folder) / COMPOSITE_NAME
    try:
        raw = read_json(path)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None
    return parse_spec(raw, str(path))


def parse_spec(raw: Any, source: str) -> CompositeSpec:
    """Check a composite description (the parsed JSON); ``source`` names it in errors."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: the top level must be an object")
    unknown = set(raw) - set(CompositeSpec.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {sorted(unknown)}")
    for name in ("kind", "combine", "members", "roles"):
        if name not in raw:
            raise ValueError(f"{source}: field {name!r} is missing")
    spec = CompositeSpec(**raw)
    if spec.kind not in KINDS:
        raise ValueError(f"{source}: field 'kind' must be one of {KINDS}, got {spec.kind!r}")
    check_combine(spec.combine, spec.uwo_lambda, source)
    if spec.mode is not None and spec.mode not in MODES:
        raise ValueError(f"{source}: field 'mode' must be one of {MODES} or null, got {spec.mode!r}")
    if not isinstance(spec.members, list) or not all(isinstance(m, str) for m in spec.members):
        raise ValueError(f"{source}: field 'members' must be a list of folder paths")
    if not isinstance(spec.roles, list) or len(spec.roles) != len(spec.members):
        raise ValueError(f"{source}: field 'roles' must have one entry per member")
    if spec.kind == "baseline_sm" and (len(spec.members) != 2 or spec.combine != "mean"):
        raise ValueError(f"{source}: a baseline_sm composite has exactly 2 members [sorm, morm] and combine 'mean'")
    if spec.kind == "ensemble" and len(spec.members) < 2:
        raise ValueError(f"{source}: field 'members': an ensemble needs at least 2 members")
    return spec


def check_combine(combine: str, uwo_lambda: Any, source: str) -> None:
    """``combine`` is known and ``uwo_lambda`` is a number ``>= 0`` exactly when it is ``uwo``."""
    if combine not in COMBINES:
        raise ValueError(f"{source}: field 'combine' must be one of {COMBINES}, got {combine!r}")
    if combine != "uwo":
        if uwo_lambda is not None:
            raise ValueError(f"{source}: field 'uwo_lambda' is only read by combine 'uwo', not {combine!r}")
        return
    # bool is an int in Python; a lambda of `true` is a typo, not 1
    if isinstance(uwo_lambda, bool) or not isinstance(uwo_lambda, int | float):
        raise ValueError(f"{source}: field 'uwo_lambda' must be a number >= 0 for combine 'uwo', got {uwo_lambda!r}")
    if not math.isfinite(uwo_lambda) or uwo_lambda < 0:
        raise ValueError(f"{source}: field 'uwo_lambda' must be a finite number >= 0, got {uwo_lambda!r}")


def member_paths(folder: str | os.PathLike[str], spec: CompositeSpec) -> list[Path]:
    """Members' folders, relative paths resolved against the composite folder."""
    return [(Path(folder) / member).resolve() for member in spec.members]


def _stored_path(member: Path, folder: Path) -> str:
    # Relative paths keep a composite and its members movable together.
    return os.path.relpath(member.resolve(), folder.resolve())


def write_composite(folder: str | os.PathLike[str], spec: CompositeSpec) -> Path:
    """Check ``spec`` against its members, then write ``folder/smorm_composite.json`` atomically."""
    folder = Path(folder)
    path = folder / COMPOSITE_NAME
    spec = parse_spec(dict(spec.__dict__), str(path))
    folders = member_paths(folder, spec)
    surface(spec, [member_config(f) for f in folders], source=str(path))
    check_same_tokenizer([model_folder(f) for f in folders], spec.roles)
    atomic_write_text(path, spec.to_json())
    return path


def write_ensemble(
    folder: str | os.PathLike[str], members: Sequence[str | os.PathLike[str]], combine: str = "mean",
    mode: str | None = None, roles: Sequence[str] | None = None, uwo_lambda: float | None = None,
) -> Path:
    """Write an ensemble composite of ``members`` (000 App. G.1: 3 seeds, mean or min; Coste et al. 2024
    Sec. 3: ``uwo`` with its ``uwo_lambda``)."""
    folder = Path(folder)
    stored = [_stored_path(Path(m), folder) for m in members]
    labels = list(roles) if roles is not None else [f"member-{i}" for i in range(len(stored))]
    return write_composite(folder, CompositeSpec("ensemble", combine, stored, labels, mode, uwo_lambda))


def write_baseline_sm(
    folder: str | os.PathLike[str], sorm: str | os.PathLike[str], morm: str | os.PathLike[str]
) -> Path:
    """Write a Baseline SM composite: a SORM's F and a MORM's L, averaged (000 Sec. 3)."""
    folder = Path(folder)
    stored = [_stored_path(Path(sorm), folder), _stored_path(Path(morm), folder)]
    return write_composite(folder, CompositeSpec("baseline_sm", "mean", stored, ["sorm", "morm"]))


# ---------------------------------------------------------------- checks


def tokenizer_signature(tokenizer: Any) -> str:
    """A hash of everything that decides token ids: vocabulary, merges, normalisation, specials, template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        # Padding/truncation settings are runtime switches, not part of the tokenisation.
        state.pop("padding", None)
        state.pop("truncation", None)
    else:
        state = sorted(tokenizer.get_vocab().items())
    payload = {
        "backend": state,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "specials": {name: str(getattr(tokenizer, name, None)) for name in ("bos_token", "eos_token", "pad_token")},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def check_same_tokenizer(folders: Sequence[Path], roles: Sequence[str]) -> None:
    """Members are scored on one set of token ids, so they must tokenise identically."""
    from transformers import AutoTokenizer

    signatures = [tokenizer_signature(AutoTokenizer.from_pretrained(f)) for f in folders]
    check_signatures(signatures, [f"{role} ({folder})" for role, folder in zip(roles, folders, strict=True)])


def check_signatures(signatures: Sequence[str], labels: Sequence[str]) -> None:
    different = [label for label, sig in zip(labels, signatures, strict=True) if sig != signatures[0]]
    if different:
        raise ValueError(
            f"composite members must share one tokenizer (vocabulary, specials and chat template); "
            f"{', '.join(different)} differ from {labels[0]}"
        )


def surface(spec: CompositeSpec, configs: Sequence[RewardModelConfig], source: str = COMPOSITE_NAME
            ) -> tuple[tuple[str, ...], CompositeConfig]:
    """The heads and config a composite exposes; raises if the members cannot be combined as asked.

    * ensemble, mean: the members' heads (all must have the same ones, the same attributes); each
      head's output is the members' mean, so every mode of the ensemble is the mean of the members'
      rewards in that mode (all three modes are linear in the heads).
    * ensemble, min or uwo: one head, ``single`` = the minimum over members of their reward in
      ``mode`` (or its mean minus ``λ`` times its variance); neither commutes with the L/M averages,
      so no attribute modes are offered: the mode is chosen when the ensemble is written.
    * ensemble, mean, every member gated: a ``gate`` head too, mode G = the members' mean G reward
      (the gate is not linear in the heads, so it is averaged reward by reward).
    * baseline_sm: ``single`` = the SORM's F, ``multi`` = the MORM's attributes, default mode M =
      their mean (the Baseline SM reward); F and L are the SORM and the MORM alone.
    """
    max_length = min(c.max_length for c in configs)
    if spec.kind == "baseline_sm":
        sorm, morm = configs
        if "single" not in sorm.heads:
            raise ValueError(f"{source}: member 'sorm' ({spec.members[0]}) has no single head")
        if "multi" not in morm.heads:
            raise ValueError(f"{source}: member 'morm' ({spec.members[1]}) has no multi head")
        return ("single", "multi"), CompositeConfig(max_length, list(morm.attributes), "M")
    modes = {c.mode for c in configs}
    mode = spec.mode
    if mode is None:
        if len(modes) != 1:
            raise ValueError(f"{source}: members default to different modes {sorted(modes)}; set field 'mode'")
        mode = modes.pop()
    needs = {"F": ("single",), "L": ("multi",), "M": ("single", "multi"), "G": ("multi", GATE_HEAD)}[mode]
    for role, config in zip(spec.roles, configs, strict=True):
        if not set(needs) <= set(config.heads):
            raise ValueError(f"{source}: member {role!r} has no {' and '.join(needs)} head for mode {mode}")
    if spec.combine in ("min", "uwo"):
        return ("single",), CompositeConfig(max_length, [], "F")
    heads = [tuple(h for h in ("single", "multi") if h in c.heads) for c in configs]
    if len(set(heads)) != 1 or not heads[0]:
        raise ValueError(f"{source}: ensemble members must have the same single/multi heads, got {heads}")
    attributes = [list(c.attributes) for c in configs]
    if "multi" in heads[0] and any(a != attributes[0] for a in attributes):
        raise ValueError(f"{source}: ensemble members have different attributes {attributes}")
    gated = (GATE_HEAD,) if all(GATE_HEAD in c.heads for c in configs) else ()
    return heads[0] + gated, CompositeConfig(max_length, attributes[0] if "multi" in heads[0] else [], mode)


# ---------------------------------------------------------------- combination (pure)


def uwo_rewards(member_rewards: torch.Tensor, uwo_lambda: float) -> torch.Tensor:
    """Uncertainty-weighted optimisation (Coste et al. 2024 Sec. 3): ``mean_i R_i - λ · var_i R_i``.

    The variance is the population variance over the k members (divided by k, not k - 1), per
    sequence: the penalty is the members' disagreement on that response, not a sample estimate.

    Args:
        member_rewards: ``[k, N]`` each member's reward of N sequences.
        uwo_lambda: ``λ >= 0``; 0 gives the plain mean.

    Returns:
        ``[N]`` the UWO reward.
    """
    mean = member_rewards.mean(dim=0)
    variance = (member_rewards - mean).pow(2).mean(dim=0)
    return mean - uwo_lambda * variance


def combine_ensemble(outputs: Sequence[RewardOutput], combine: str, mode: str = "F",
                     uwo_lambda: float | None = None) -> RewardOutput:
    """Combine k members' outputs on the same N sequences.

    Args:
        outputs: one `RewardOutput` per member, each ``single [N]``, ``attributes [N, K]``, ``pooled [N, d_i]``.
        combine: ``mean`` (head by head), ``min`` or ``uwo`` (of each member's reward in ``mode``).
        mode: the members' mode for ``min`` and ``uwo``.
        uwo_lambda: ``λ`` of ``uwo`` (see :func:`uwo_rewards`).

    Returns:
        ``single [N]``, ``attributes [N, K]`` (mean only, when every member has them), ``pooled [N, Σ d_i]``
        (the members' features side by side); with ``mean``, ``extra["gate"] [N]`` = the members' mean
        gated reward when every member has a gate.
    """
    check_combine(combine, uwo_lambda, "combine_ensemble")
    pooled = torch.cat([o.pooled for o in outputs], dim=-1)
    if combine in ("min", "uwo"):
        rewards = torch.stack([reward_for_mode(o, mode) for o in outputs])  # [k, N]
        single = rewards.min(dim=0).values if combine == "min" else uwo_rewards(rewards, float(uwo_lambda))  # type: ignore[arg-type]
        return RewardOutput(single=single, attributes=None, pooled=pooled)
    singles = [o.single for o in outputs]
    attributes = [o.attributes for o in outputs]
    extra = {}
    for key in (GATE_HEAD, COMBINED):  # the gated reward, mode M on one scale: where every member has it
        values = [o.extra.get(key) for o in outputs]
        if all(v is not None for v in values):
            extra[key] = torch.stack(values).mean(dim=0)  # type: ignore[arg-type]
    return RewardOutput(
        single=torch.stack(singles).mean(dim=0) if all(s is not None for s in singles) else None,  # type: ignore[arg-type]
        attributes=torch.stack(attributes).mean(dim=0) if all(a is not None for a in attributes) else None,  # type: ignore[arg-type]
        pooled=pooled,
        extra=extra,
    )


def combine_baseline_sm(sorm: RewardOutput, morm: RewardOutput, scales: dict[str, list[float]] | None = None,
                        mode_scale: str = "standardized") -> RewardOutput:
    """Baseline SM: the SORM's single head beside the MORM's attributes; mode M is their mean (000 Sec. 3).

    ``scales``: ``{"F": the SORM's [mean, std], "L": the MORM's}`` (each model's own ``head_scales``):
    mode M then puts the two models on one scale first, as a SMORM model does its two heads
    (:func:`~smorm.models.reward_model.combine_heads`); without them, or with ``mode_scale: raw``, the
    literal mean.
    """
    if sorm.single is None or morm.attributes is None:
        raise ValueError("baseline_sm needs the SORM's single head and the MORM's multi head")
    combined = combine_heads(sorm.single, morm.attributes.mean(dim=-1), scales or {}, mode_scale)
    return RewardOutput(single=sorm.single, attributes=morm.attributes,
                        pooled=torch.cat([sorm.pooled, morm.pooled], dim=-1),
                        extra={} if combined is None else {COMBINED: combined})


# ---------------------------------------------------------------- scorer


class CompositeScorer:
    """Several RewardModels behind the scoring surface of one (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str], spec: CompositeSpec, members: list[RewardModel]) -> None:
        self.folder = Path(folder)
        self.spec = spec
        self.members = members
        source = str(self.folder / COMPOSITE_NAME)
        check_signatures([tokenizer_signature(m.tokenizer) for m in members],
                         [f"{r} ({p})" for r, p in zip(spec.roles, spec.members, strict=True)])
        self.heads, self.config = surface(spec, [m.config for m in members], source=source)
        self.tokenizer = members[0].tokenizer
        self._member_mode = spec.mode or members[0].config.mode

    @torch.no_grad()
    def score_token_ids(
        self, sequences: Sequence[list[int]], batch_size: int = 16, autocast_bf16: bool = False,
        response_starts: Sequence[int] | None = None, pack: bool = False,
    ) -> RewardOutput:
        """Score token sequences with every member (one forward pass each) and combine.

        ``response_starts`` (``EncodedSequence.response_start`` per sequence) goes to every member; a
        gated member needs it to read each prompt's last token. ``pack`` is passed on too.
        """
        outputs = [m.score_token_ids(sequences, batch_size=batch_size, autocast_bf16=autocast_bf16,
                                     response_starts=response_starts, pack=pack)
                   for m in self.members]
        if self.spec.kind == "baseline_sm":
            sorm, morm = (m.config for m in self.members)
            scales = {head: member.head_scales[head] for head, member in (("F", sorm), ("L", morm))
                      if head in member.head_scales}
            return combine_baseline_sm(outputs[0], outputs[1], scales, sorm.mode_scale)
        return combine_ensemble(outputs, self.spec.combine, self._member_mode, self.spec.uwo_lambda)

    @torch.no_grad()
    def score(
        self, prompts: Sequence[str | list[Message]], responses: Sequence[str], mode: str | None = None,
        batch_size: int = 16, autocast_bf16: bool = False,
    ) -> Scores:
        """Score ``responses[i]`` to ``prompts[i]``, as `RewardModel.score` does."""
        from smorm.models.reward_model import scores_from_output

        output = score_responses(self, prompts, responses, batch_size=batch_size, autocast_bf16=autocast_bf16)
        return scores_from_output(output, mode or self.config.mode, self.config.attributes)


def score_responses(
    scorer: Any, prompts: Sequence[str | list[Message]], responses: Sequence[str], batch_size: int = 16,
    autocast_bf16: bool = False, pack: bool = True,
) -> RewardOutput:
    """Score ``responses[i]`` to ``prompts[i]`` with any scorer on the scoring surface.

    Each pair is formatted with the scorer's chat template (a plain-string prompt is one user turn) and
    scored with its ``response_start``, which a gate (mode G, 004 Sec. 3.2) needs to read the prompt's
    last token; scorers without a gate (a Hugging Face classifier) ignore it. With ``pack`` (default),
    responses to one prompt are encoded with the prompt once (issue 8; a Best-of-N pool is N responses
    to each prompt) by scorers that can (`score_token_ids` with a ``pack`` argument); the scores equal
    the unpacked ones up to float summation order.

    Returns:
        The scorer's `RewardOutput` for the ``N`` pairs, in input order (``single [N]``, ``attributes
        [N, K]``, ``extra["gate"] [N]`` when it has them).
    """
    from smorm.data.formatting import Formatter

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    formatter = Formatter(scorer.tokenizer, scorer.config.max_length)
    encoded = [
        formatter.encode(p if isinstance(p, list) else [{"role": "user", "content": p}], r)
        for p, r in zip(prompts, responses, strict=True)
    ]
    import inspect

    kwargs: dict[str, Any] = {"pack": True} if pack and "pack" in inspect.signature(
        scorer.score_token_ids).parameters else {}
    return scorer.score_token_ids([e.input_ids for e in encoded], batch_size=batch_size,
                                  autocast_bf16=autocast_bf16, response_starts=[e.response_start for e in encoded],
                                  **kwargs)


def load_composite(path: str | os.PathLike[str], trust_remote_code: bool = False, dtype: str | None = None,
                   device: torch.device | None = None) -> CompositeScorer:
    """Open a composite folder (ensemble, Baseline SM) with its members on ``device``.

    :func:`smorm.models.scorers.load_scorer` is the loader to call: it opens any folder.
    """
    path = Path(path)
    spec = read_composite(path)
    folders = member_paths(path, spec)
    for role, folder in zip(spec.roles, folders, strict=True):
        if not (model_folder(folder) / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path / COMPOSITE_NAME}: member {role!r} folder {folder} has no model")
    members = [RewardModel.from_pretrained(f, trust_remote_code=trust_remote_code, dtype=dtype, device=device)
               for f in folders]
    return CompositeScorer(path, spec, members)
