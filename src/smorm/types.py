"""Named records, batches and outputs that flow through smorm.

Records are what data readers produce (plain Python, no tensors); batches are what
collators produce (tensors with documented shapes); `RewardOutput` is what the model
returns. Nothing here is a positional tuple.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

Message = dict[str, str]
"""One chat turn: ``{"role": "system" | "user" | "assistant", "content": str}``."""


@dataclass
class ListLink:
    """Where a pair sits in a ranked list kept whole (a source read with ``ranking: {into: list}``).

    A list of n responses is carried by n - 1 strict pairs that together name every response
    (:func:`smorm.data.lists.list_links`); the trainer keeps them in one batch and the
    ``plackett_luce`` loss reads the list back from them.

    Attributes:
        list_id: the list's name, unique in a run (``file:line`` of its first response).
        chosen_item / rejected_item: index of each response in the list.
        chosen_rank / rejected_rank: 0 for the best score, 1 for the next, ...; tied responses share a rank.
    """

    list_id: str
    chosen_item: int
    rejected_item: int
    chosen_rank: int
    rejected_rank: int


@dataclass
class PreferencePair:
    """One pairwise preference (an element of D_S).

    Attributes:
        prompt: the conversation up to the response, as chat messages (last one is usually ``user``).
        chosen: text of the preferred final assistant turn.
        rejected: text of the dispreferred final assistant turn.
        source: dataset name, used for per-source batching (MORE) and reports.
        margin: optional preference strength (e.g. score difference) for the margin loss.
        subset: optional benchmark subset name (RewardBench-style evaluation).
        origin: ``file:line`` the record came from, for error messages.
        list_link: set when the pair is a link of a ranked list kept whole (see :class:`ListLink`).
    """

    prompt: list[Message]
    chosen: str
    rejected: str
    source: str = ""
    margin: float | None = None
    subset: str | None = None
    origin: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    list_link: ListLink | None = None


@dataclass
class RatedResponse:
    """One response with absolute attribute ratings (an element of D_M).

    Attributes:
        ratings: attribute name -> rating, rescaled to [0, 1] unless loaded with ``rating_scale='raw'``.
            A missing attribute is absent
            from the dict (it is masked in training, never treated as zero).
    """

    prompt: list[Message]
    response: str
    ratings: dict[str, float]
    source: str = ""
    origin: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RankedResponses:
    """Several responses to one prompt with reference scores (higher is better) or a best index."""

    prompt: list[Message]
    responses: list[str]
    scores: list[float] | None = None
    best: int | None = None
    source: str = ""
    origin: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SequenceBatch:
    """Tokenised prompt+response sequences.

    Attributes:
        input_ids: ``[batch, seq]`` token ids, padded with the tokenizer's pad id.
        attention_mask: ``[batch, seq]`` 1 for real tokens, 0 for padding (either side).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


@dataclass
class PairBatch:
    """A batch of B preference pairs laid out for ONE forward pass.

    Attributes:
        sequences: ``[2B, seq]``: rows ``0..B-1`` are chosen, rows ``B..2B-1`` rejected.
        margins: ``[B]`` preference margins (NaN where the data has none).
        source_ids: ``[B]`` integer id of each pair's source (index into ``sources``).
        sources: source names.
    """

    sequences: SequenceBatch
    margins: torch.Tensor
    source_ids: torch.Tensor
    sources: list[str]

    @property
    def num_pairs(self) -> int:
        return int(self.margins.shape[0])


@dataclass
class RatingBatch:
    """A batch of B rated responses.

    Attributes:
        sequences: ``[B, seq]``.
        ratings: ``[B, K]`` targets, in [0, 1] by default (0 where missing; see ``rating_mask``).
        rating_mask: ``[B, K]`` bool, True where the attribute was rated.
    """

    sequences: SequenceBatch
    ratings: torch.Tensor
    rating_mask: torch.Tensor


@dataclass
class RewardOutput:
    """What one forward pass of a RewardModel gives.

    Attributes:
        single: ``[N]`` output of the single-objective (BT) head, or None if the model has none.
        attributes: ``[N, K]`` multi-attribute head output, or None.
        pooled: ``[N, d]`` last-real-token hidden state the heads read.
        gate_weights: ``[N, K]`` gating weights over attributes (sum to 1), when a gate exists.
        extra: other head outputs by head name (e.g. ODIN's length head), each ``[N]`` or ``[N, *]``.
    """

    single: torch.Tensor | None
    attributes: torch.Tensor | None
    pooled: torch.Tensor
    gate_weights: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class RMBenchItem:
    """One RM-Bench item: three chosen and three rejected responses in matching styles.

    Attributes:
        chosen: ``[3]`` responses in styles (concise, detailed plain, detailed markdown).
        rejected: ``[3]`` same styles.
        domain: e.g. ``chat``, ``safety-refuse``, ``safety-response``, ``math``, ``code``.
    """

    prompt: list[Message]
    chosen: list[str]
    rejected: list[str]
    domain: str = ""
    origin: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
