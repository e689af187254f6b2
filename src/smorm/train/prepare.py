"""Load, validate and tokenise the training data named by a config.

Everything is validated before any model is loaded, so a bad record stops the run in seconds
with ``file:line: field`` in the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from smorm.data.errors import DataError
from smorm.data.run_data import LoadedData
from smorm.run_config import RunConfig
from smorm.types import ListLink


@dataclass
class TokenizedData:
    """Token ids of every training sequence and the labels that go with them."""

    chosen: list[list[int]]
    rejected: list[list[int]]
    chosen_prompt_lengths: list[int]
    rejected_prompt_lengths: list[int]
    margins: list[float]
    pair_source_ids: list[int]
    sources: list[str]
    rating_ids: list[list[int]]
    rating_prompt_lengths: list[int]
    ratings: list[dict[str, float]]
    attributes: list[str]
    truncated: int = 0
    notes: list[str] = field(default_factory=list)
    pair_links: list[ListLink | None] = field(default_factory=list)
    """Per pair, its place in a ranked list read whole (None for a plain pair); empty: no lists."""

    @property
    def num_pairs(self) -> int:
        return len(self.chosen)

    @property
    def num_ratings(self) -> int:
        return len(self.rating_ids)

    def all_sequences(self) -> list[list[int]]:
        """Chosen, then rejected, then rated sequences: the global sequence index used by caches."""
        return self.chosen + self.rejected + self.rating_ids


def load_training_data(config: RunConfig) -> LoadedData:
    """Read and validate every source of ``config.data`` (no model needed).

    Raises:
        DataError: a bad record (under ``on_error: error``), or a loss left with no data to read
            once bad records are skipped (see :func:`require_data_for_losses`).
    """
    loaded = config.data.load()
    require_data_for_losses(config, loaded)
    return loaded


def require_data_for_losses(config: RunConfig, loaded: LoadedData) -> None:
    """A pair loss with no pairs left, or a rating loss with no rated responses, is a config error.

    The config check (:class:`RunConfig`) sees that sources are named; only reading them shows
    whether any record survives, e.g. when ``on_error: skip`` skipped them all. Failing here, before
    the backbone loads, names the losses, the sources and why their records were skipped.
    """
    from smorm.losses import get_loss

    for need, records, what in (("pairs", loaded.pairs, "preference pairs"),
                                ("ratings", loaded.ratings, "rated responses")):
        losses = [loss.name for loss in config.losses if need in get_loss(loss.name).needs]
        if records or not losses:
            continue
        sources = "; ".join(_source_summary(r) for r in loaded.reports if r.get("kind") == need)
        raise DataError(
            f"loss {', '.join(repr(name) for name in losses)} needs {what}, but no record of data.{need} is "
            f"left after reading: {sources or 'no sources'}",
            kind=f"no {need}",
        )


def _source_summary(report: dict[str, Any]) -> str:
    skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted((report.get("skipped") or {}).items()))
    return (f"{report.get('source', '')} ({report.get('path', '')}): {report.get('read', 0)} read, "
            f"{report.get('kept', 0)} kept, skipped " + (skipped or "none"))


def tokenize(data: LoadedData, tokenizer: Any, max_length: int, show_progress: bool = True) -> TokenizedData:
    """Format prompt + response with the chat template and tokenise every sequence once."""
    from tqdm.auto import tqdm

    from smorm.data.formatting import Formatter

    formatter = Formatter(tokenizer, max_length)
    sources: list[str] = []
    chosen, rejected, chosen_prompt, rejected_prompt, margins, source_ids = [], [], [], [], [], []
    total = len(data.pairs) + len(data.ratings)
    with tqdm(total=total, desc="tokenising", unit="rec", disable=not show_progress or total < 2000) as bar:
        for pair in data.pairs:
            # one prompt start for both responses, so train.shared_prompt can pack the prompt once
            c, r = formatter.encode_pair(pair.prompt, pair.chosen, pair.rejected)
            chosen.append(c.input_ids)
            rejected.append(r.input_ids)
            chosen_prompt.append(_prompt_length(c))
            rejected_prompt.append(_prompt_length(r))
            margins.append(float("nan") if pair.margin is None else float(pair.margin))
            if pair.source not in sources:
                sources.append(pair.source)
            source_ids.append(sources.index(pair.source))
            bar.update(1)
        rating_ids, rating_prompt, targets = [], [], []
        for record in data.ratings:
            encoded = formatter.encode(record.prompt, record.response)
            rating_ids.append(encoded.input_ids)
            rating_prompt.append(_prompt_length(encoded))
            targets.append({k: v for k, v in record.ratings.items() if k in data.attributes})
            bar.update(1)
    truncated = int(getattr(formatter, "num_truncated", 0))
    links = [pair.list_link for pair in data.pairs]
    return TokenizedData(
        chosen=chosen, rejected=rejected, chosen_prompt_lengths=chosen_prompt,
        rejected_prompt_lengths=rejected_prompt, margins=margins, pair_source_ids=source_ids,
        sources=sources, rating_ids=rating_ids, rating_prompt_lengths=rating_prompt, ratings=targets, attributes=data.attributes,
        truncated=truncated, pair_links=links if any(link is not None for link in links) else [],
    )


def _prompt_length(encoded: Any) -> int:
    for name in ("response_start", "prompt_length"):
        if hasattr(encoded, name):
            return int(getattr(encoded, name))
    return 0
