"""Prompt sets for the reward-hacking lab: in distribution (held out from the proxies' own D_S) and out.

In distribution (000 Sec. 5.3): the proxies are trained on a sample of a preference source and
the policy is evaluated on held-out prompts of the same source. Here the proxies' run folders say
what they trained on (``RUN/config.json``, a ``RunConfig`` dump): every prompt of the records a
proxy loaded (the first ``limit`` valid records of each pair source) is excluded, and a seeded
sample of the remaining prompts of those same sources is taken.

Out of distribution: any other prompt file, e.g. the MT-Bench questions
(``../shared/data/eval/mt-bench/question.jsonl``; the first turn of each question).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smorm.data.spec import PromptRecord
from smorm.rlhf.generate import prompt_key
from smorm.run_config import read_run_config


def _source_spec(source: Any, limit: int | None) -> Any:
    from smorm.data import DataSpec

    return DataSpec(path=source.path, format=source.format, name=source.name, limit=limit,
                    options=dict(source.options), on_error=source.on_error)


def heldout_prompts(
    runs: Sequence[str | Path], count: int, seed: int = 0, max_prompt_chars: int | None = None
) -> tuple[list[PromptRecord], dict[str, Any]]:
    """A seeded sample of prompts from the runs' pair sources that none of the runs trained on.

    Args:
        runs: proxy run folders (each with ``config.json``).
        count: prompts to return (fewer if fewer are held out).
        seed: sampling seed.
        max_prompt_chars: skip prompts longer than this (all message contents together), to keep
            generation cheap; None keeps all.
    Returns:
        ``(prompts in file order, report)``; the report names the sources and counts.

    Raises:
        ValueError: a run trained on a whole source (no ``limit``) leaves nothing of it held out and
            no source has held-out prompts.
    """
    return heldout_from_sources(run_sources(runs), count, seed, max_prompt_chars, where=f"the runs {[str(r) for r in runs]}")


def trained_prompt_keys(trained_sources: Sequence[tuple[Any, int | None, str]]) -> set[str]:
    """The prompt keys of the first ``limit`` valid records of each ``(source, limit, on_error)``."""
    from smorm.data import load_pairs

    keys: set[str] = set()
    for source, limit, on_error in trained_sources:
        records, _ = load_pairs(_source_spec(source, limit), on_error=on_error)
        keys.update(prompt_key(r.prompt) for r in records)
    return keys


def run_sources(runs: Sequence[str | Path]) -> list[tuple[Any, int | None, str]]:
    """``(pair source, limit, on_error)`` of every pair source the runs trained on (from their config.json)."""
    return config_sources([read_run_config(run, needed_for="held-out prompts need the run's config to know which "
                                           "records it trained on") for run in runs])


def config_sources(configs: Sequence[Any]) -> list[tuple[Any, int | None, str]]:
    """``(pair source, limit, on_error)`` of every pair source of these run configs."""
    return [(source, source.limit, config.data.on_error) for config in configs for source in config.data.pairs]


def heldout_from_sources(
    trained_sources: Sequence[tuple[Any, int | None, str]], count: int, seed: int = 0,
    max_prompt_chars: int | None = None, where: Any = "the sources",
) -> tuple[list[PromptRecord], dict[str, Any]]:
    """:func:`heldout_prompts` from ``(pair source, records trained on, on_error)`` triples: the prompts of
    the first ``limit`` valid records of each source are excluded (all of them when ``limit`` is None)."""
    from smorm.data import load_pairs

    trained = trained_prompt_keys(trained_sources)
    sources: dict[str, Any] = {}
    for source, _, _ in trained_sources:
        sources.setdefault(json.dumps([source.path, source.format, source.options], sort_keys=True), source)
    candidates: list[PromptRecord] = []
    seen: set[str] = set()
    per_source: dict[str, int] = {}
    for source in sources.values():
        records, report = load_pairs(_source_spec(source, None), on_error="skip")
        for record in records:
            key = prompt_key(record.prompt)
            if key in trained or key in seen:
                continue
            if max_prompt_chars is not None and sum(len(m["content"]) for m in record.prompt) > max_prompt_chars:
                continue
            seen.add(key)
            candidates.append(PromptRecord(record.prompt, category=report.source, source=report.source,
                                           origin=record.origin))
            per_source[report.source] = per_source.get(report.source, 0) + 1
    if not candidates:
        raise ValueError(
            f"no held-out prompts: {where} trained on every prompt of their pair sources; "
            "train the proxies with a `limit` on each source, or give an explicit prompt file"
        )
    chosen = sorted(random.Random(seed).sample(range(len(candidates)), min(count, len(candidates))))
    prompts = [candidates[i] for i in chosen]
    report = {
        "kind": "in-distribution (held out from the proxies' D_S)",
        "held_out_available": per_source,
        "trained_prompts_excluded": len(trained),
        "sampled": len(prompts),
        "seed": seed,
    }
    return prompts, report


def file_prompts(path: str, count: int | None, seed: int = 0) -> tuple[list[PromptRecord], dict[str, Any]]:
    """A seeded sample of ``count`` prompts (all when None) of a prompt or data file, in file order."""
    from smorm.data import load_prompt_records

    records, report = load_prompt_records(path)
    if count is not None and count < len(records):
        keep = sorted(random.Random(seed).sample(range(len(records)), count))
        records = [records[i] for i in keep]
    return records, {"kind": f"prompt file {Path(str(path)).name}", "available": report.kept,
                     "sampled": len(records), "seed": seed}
