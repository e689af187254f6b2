"""Scoring a table of token sequences with any scorer (a RewardModel, a composite, a Hugging Face
classifier): globally length-sorted chunks, prompts shared by several sequences kept together for
packing, rows back in input order.

Benchmarks (:mod:`smorm.eval.runner`) and the Theorem 1 features (:mod:`smorm.eval.theory`) both score
through :func:`score_sequences`. torch, tqdm and smorm.models load inside the functions, so that
``import smorm.eval`` stays numpy-only.
"""

from __future__ import annotations

import inspect
from typing import Any


def packs_by_default(model: Any) -> bool:
    """Shared-prompt packing is on by default for a smorm RewardModel on a causal backbone."""
    from smorm.models.reward_model import RewardModel

    return isinstance(model, RewardModel) and bool(model.config.is_decoder)


def scoring_order(sequences: list[list[int]], response_starts: list[int] | None, pack: bool) -> list[list[int]]:
    """Chunks of input indices to score, longest first.

    Unpacked: one global length sort, cut every ``chunk`` sequences by the caller. Packed: sequences
    with identical prompt tokens are kept together (a group is sorted by its longest member, and its
    members follow each other), so the scorer can encode their prompt once.
    """
    if not pack or response_starts is None:
        return [sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))]
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (sequence, start) in enumerate(zip(sequences, response_starts, strict=True)):
        key = tuple(sequence[:start]) if 0 < start < len(sequence) else (-1 - index,)  # unique key: no prompt
        groups.setdefault(key, []).append(index)
    members = [sorted(group, key=lambda i: -len(sequences[i])) for group in groups.values()]
    members.sort(key=lambda group: -len(sequences[group[0]]))
    return members


def score_sequences(model: Any, sequences: list[list[int]], batch_size: int, bf16: bool, show_progress: bool,
                    description: str = "scoring", response_starts: list[int] | None = None,
                    pack: bool | None = None) -> Any:
    """Score token sequences in globally length-sorted chunks; rows come back in input order.

    Sorting all sequences once (not per chunk) keeps padding minimal; the chunks only exist so a
    progress bar can move. ``response_starts`` is passed on to scorers that take it (a gate
    reads the prompt's last token). ``pack`` (default: :func:`packs_by_default`) encodes a prompt
    shared by several sequences once; a chunk never splits such a group.
    """
    from tqdm.auto import tqdm

    parameters = inspect.signature(model.score_token_ids).parameters
    takes_starts = "response_starts" in parameters
    if pack is None:
        pack = packs_by_default(model)
    pack = bool(pack and "pack" in parameters and takes_starts and response_starts is not None)
    chunk = max(batch_size * 8, 1)
    chunks: list[list[int]] = []
    for group in scoring_order(sequences, response_starts, pack):
        if pack and chunks and len(chunks[-1]) + len(group) <= chunk:
            chunks[-1].extend(group)
        elif pack:
            chunks.append(list(group))
        else:
            chunks.extend(group[start : start + chunk] for start in range(0, len(group), chunk))
    parts = []
    with tqdm(total=len(sequences), desc=description, unit="seq", disable=not show_progress) as bar:
        for rows in chunks:
            kwargs: dict[str, Any] = {"batch_size": batch_size, "autocast_bf16": bf16}
            if takes_starts and response_starts is not None:
                kwargs["response_starts"] = [response_starts[i] for i in rows]
            if pack:
                kwargs["pack"] = True
            parts.append(model.score_token_ids([sequences[i] for i in rows], **kwargs))
            bar.update(len(rows))
    from smorm.models.scoring import in_input_order

    return in_input_order(list(zip(chunks, parts, strict=True)))
