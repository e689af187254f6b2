"""The loss interface: what a loss reads (`LossInputs`), returns (`LossResult`) and declares (`LossDef`).

Every loss is registered once in ``smorm.registry.LOSSES`` as a `LossDef` whose ``fn`` takes a
`LossInputs` plus keyword options. Under each ``fn`` sits a pure tensor function with explicit
arguments (e.g. ``bt_loss(chosen_rewards, rejected_rewards)``) that the tests check by hand.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from smorm.registry import LOSSES

NEEDS = frozenset({"pairs", "ratings", "lm", "length_head", "lists"})
"""What a loss can ask the trainer to compute: pair rewards, rating predictions, LM log-probs, ODIN's length
head, the pair batch's ranked lists."""


@dataclass
class LossInputs:
    """Everything a loss may read; each loss uses only what it needs.

    A loss that finds a field it needs set to None raises a ValueError naming the field.

    Attributes:
        chosen_rewards: ``[B]`` reward of the head the loss is attached to, chosen responses.
        rejected_rewards: ``[B]`` same head, rejected responses.
        margins: ``[B]`` data margins, NaN where the record has none.
        source_ids: ``[B]`` long, index into ``sources``.
        sources: source names.
        predicted_ratings: ``[M, K]`` multi-attribute head output on D_M.
        target_ratings: ``[M, K]`` ratings, rescaled to [0, 1] unless ``data.rating_scale`` is raw.
        rating_mask: ``[M, K]`` bool, True where the attribute was rated.
        chosen_logps: ``[B]`` summed log-prob of the chosen response tokens under the kept LM head (GRM).
        rejected_logps: ``[B]`` same for the rejected response.
        chosen_response_tokens: ``[B]`` number of chosen response tokens (per-token mean NLL).
        chosen_lengths: ``[B]`` chosen response lengths in tokens (ODIN).
        rejected_lengths: ``[B]`` rejected response lengths in tokens (ODIN).
        chosen_length_rewards: ``[B]`` ODIN length-head output, chosen responses.
        rejected_length_rewards: ``[B]`` ODIN length-head output, rejected responses.
        quality_head_weight: ``[d]`` or ``[1, d]`` ODIN quality-head weight (orthogonality term).
        length_head_weight: ``[d]`` or ``[1, d]`` ODIN length-head weight.
        head_parameters: reward-head parameters, for MORE's per-source gradient solve.
        list_rewards: ``[N]`` reward of every distinct response of the pair batch's ranked lists (a list
            read with ``ranking: {into: list}`` joined back from its links; any other pair a list of two).
        list_ids: ``[N]`` long, the list of each response.
        list_ranks: ``[N]`` long, 0 for a list's best response; tied responses share a rank.
    """

    chosen_rewards: Tensor | None = None
    rejected_rewards: Tensor | None = None
    margins: Tensor | None = None
    source_ids: Tensor | None = None
    sources: list[str] | None = None
    predicted_ratings: Tensor | None = None
    target_ratings: Tensor | None = None
    rating_mask: Tensor | None = None
    chosen_logps: Tensor | None = None
    rejected_logps: Tensor | None = None
    chosen_response_tokens: Tensor | None = None
    chosen_lengths: Tensor | None = None
    rejected_lengths: Tensor | None = None
    chosen_length_rewards: Tensor | None = None
    rejected_length_rewards: Tensor | None = None
    quality_head_weight: Tensor | None = None
    length_head_weight: Tensor | None = None
    head_parameters: list[Tensor] | None = None
    list_rewards: Tensor | None = None
    list_ids: Tensor | None = None
    list_ranks: Tensor | None = None


@dataclass
class LossResult:
    """What a registered loss returns.

    Attributes:
        loss: scalar, differentiable.
        metrics: plain floats for logging (e.g. ``accuracy``, ``reward_margin``, MORE's ``lambda/<source>``).
    """

    loss: Tensor
    metrics: dict[str, float]


@dataclass(frozen=True)
class LossDef:
    """A registered loss.

    Attributes:
        fn: ``fn(inputs: LossInputs, **options) -> LossResult``.
        needs: subset of ``NEEDS``: what the trainer must compute for this loss.
        description: one line shown by ``smorm ls``.
        defaults: option name -> default value (from the paper; shown by ``smorm ls``).
        choices: option name -> allowed values, for string options with a fixed set.
    """

    fn: Callable[..., LossResult]
    needs: frozenset[str]
    description: str
    defaults: dict[str, Any]
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.needs) - NEEDS
        if unknown:
            raise ValueError(f"LossDef.needs has unknown entries {sorted(unknown)}; allowed: {sorted(NEEDS)}")
        for name, allowed in self.choices.items():
            if name not in self.defaults or self.defaults[name] not in allowed:
                raise ValueError(f"LossDef.choices[{name!r}] must list the default of a declared option")


def register_loss(
    name: str,
    fn: Callable[..., LossResult],
    needs: set[str] | frozenset[str],
    description: str,
    defaults: dict[str, Any],
    choices: Mapping[str, tuple[Any, ...]] | None = None,
) -> LossDef:
    """Build a `LossDef` and add it to ``LOSSES`` (refuses a second registration of ``name``)."""
    loss_def = LossDef(fn, frozenset(needs), description, dict(defaults), dict(choices or {}))
    LOSSES.add(name, loss_def, description)
    return loss_def


def get_loss(name: str) -> LossDef:
    """The registered loss ``name``; an unknown name raises KeyError listing the near names."""
    return LOSSES.get(name)


def _type_ok(value: Any, default: Any) -> bool:
    # bool is a subclass of int: keep a flag from passing as a number and vice versa.
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def validate_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a config's options for loss ``name`` before training; return defaults merged with them.

    Raises:
        KeyError: the loss is not registered (message lists near names).
        ValueError: an option name is unknown, has the wrong type, or is not one of the allowed values.
    """
    loss_def = get_loss(name)
    options = dict(options or {})
    for key, value in options.items():
        if key not in loss_def.defaults:
            near = difflib.get_close_matches(key, list(loss_def.defaults), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
            known = ", ".join(sorted(loss_def.defaults)) or "(none)"
            raise ValueError(f"loss {name!r} has no option {key!r}{hint} (options: {known})")
        default = loss_def.defaults[key]
        if not _type_ok(value, default):
            raise ValueError(
                f"loss {name!r} option {key!r} must be {type(default).__name__} "
                f"(default {default!r}), got {type(value).__name__} {value!r}"
            )
        allowed = loss_def.choices.get(key)
        if allowed is not None and value not in allowed:
            raise ValueError(f"loss {name!r} option {key!r} must be one of {list(allowed)}, got {value!r}")
    return {**loss_def.defaults, **options}


# ---------------------------------------------------------------- helpers shared by the wrappers


def require(inputs: LossInputs, field_name: str, loss_name: str) -> Any:
    """``inputs.<field_name>``, or a ValueError naming the loss and the missing field."""
    value = getattr(inputs, field_name)
    if value is None:
        raise ValueError(
            f"loss {loss_name!r} needs LossInputs.{field_name}, which is None "
            f"(check that the trainer computes what LossDef.needs declares)"
        )
    return value


def as_float(tensor: Tensor) -> Tensor:
    """Upcast half precision to float32 so log-sigmoids of large rewards stay exact; keep float64."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def check_vector(tensor: Tensor, field_name: str, loss_name: str, size: int | None = None) -> Tensor:
    """Check that a ``[B]`` field is 1-D, non-empty and (if ``size``) of length ``size``."""
    if not isinstance(tensor, Tensor):
        raise ValueError(
            f"loss {loss_name!r}: LossInputs.{field_name} must be a torch.Tensor, got {type(tensor).__name__}"
        )
    if tensor.dim() != 1:
        raise ValueError(
            f"loss {loss_name!r}: LossInputs.{field_name} must be 1-D [B], got shape {list(tensor.shape)}"
        )
    if tensor.numel() == 0:
        raise ValueError(
            f"loss {loss_name!r}: LossInputs.{field_name} is empty (a batch needs at least one pair)"
        )
    if size is not None and tensor.numel() != size:
        raise ValueError(
            f"loss {loss_name!r}: LossInputs.{field_name} has {tensor.numel()} entries, expected {size} "
            f"(one per pair)"
        )
    return tensor


def pair_rewards(inputs: LossInputs, loss_name: str) -> tuple[Tensor, Tensor]:
    """The ``[B]`` chosen and rejected rewards, checked and upcast."""
    chosen = check_vector(require(inputs, "chosen_rewards", loss_name), "chosen_rewards", loss_name)
    rejected = check_vector(
        require(inputs, "rejected_rewards", loss_name), "rejected_rewards", loss_name, chosen.numel()
    )
    return as_float(chosen), as_float(rejected)


def pairwise_metrics(chosen_rewards: Tensor, rejected_rewards: Tensor) -> dict[str, float]:
    """Accuracy (a tie counts wrong), mean margin and mean rewards of a batch of pairs."""
    with torch.no_grad():
        delta = chosen_rewards - rejected_rewards
        return {
            "accuracy": float((delta > 0).float().mean()),
            "reward_margin": float(delta.mean()),
            "chosen_reward": float(chosen_rewards.mean()),
            "rejected_reward": float(rejected_rewards.mean()),
        }
