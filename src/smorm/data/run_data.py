"""A run's training data: every source of D_S (pairs) and D_M (ratings) read and validated, and the
attribute names collected.

Training (:func:`smorm.train.prepare.load_training_data`) and the Theorem 1 check of a finished run
(:func:`smorm.eval.theory.load_theory_data`) both read a run's data through :func:`load_run_data`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, TypeVar

from smorm.data.lists import PROMPT_KEY_RULE, normalise_text, prompt_key
from smorm.data.loading import load_pairs, load_prompt_records, load_ratings
from smorm.data.sampling import seeded_sample
from smorm.data.spec import DataSpec
from smorm.types import PreferencePair, RatedResponse

T = TypeVar("T")


@dataclass
class LoadedData:
    pairs: list[PreferencePair]
    ratings: list[RatedResponse]
    attributes: list[str]
    rating_scales: dict[str, dict[str, list[float]]]
    reports: list[dict[str, Any]]


def _report_dict(report: Any) -> dict[str, Any]:
    return asdict(report) if is_dataclass(report) and not isinstance(report, type) else dict(report)


RATINGS_FILTERS = ("none", "shared_prompts")
SHARED_PROMPTS_DROP = "prompt not in D_S (ratings_filter: shared_prompts)"
DUPLICATE_PAIR = "duplicate of an earlier pair (data.dedup)"
REVERSED_PAIR = "the reverse of an earlier pair (data.dedup)"
DUPLICATE_RATED = "duplicate of an earlier rated response (data.dedup)"
EXCLUDED_PROMPT = "prompt of an excluded file (data.exclude_prompts_of)"
LENGTH_BALANCE_DROP = "surplus of its length side (data.length_balance)"


def length_balanced(pairs: list[PreferencePair], report: Any, seed: int = 0) -> list[PreferencePair]:
    """One source's pairs with as many whose chosen response is longer as whose chosen is shorter.

    Length balancing of preference data (Singhal et al. 2023, "A Long Way to Go: Investigating Length
    Correlations in RLHF", Sec. 4): where "the longer response wins" is right more often than not, a
    model can fit the data by length alone. The majority side (lengths in characters) keeps a seeded
    sample (:func:`~smorm.data.sampling.seeded_sample`) as large as the minority side; pairs of equal
    length and links of ranked lists kept whole are all kept. The drop is counted in ``report``.
    """
    longer = [p for p in pairs if p.list_link is None and len(p.chosen) > len(p.rejected)]
    shorter = [p for p in pairs if p.list_link is None and len(p.chosen) < len(p.rejected)]
    size = min(len(longer), len(shorter))
    keep = {id(p) for p in seeded_sample(longer, size, seed) + seeded_sample(shorter, size, seed)}
    balanced = [p for p in pairs if id(p) in keep or p.list_link is not None or len(p.chosen) == len(p.rejected)]
    if len(balanced) < len(pairs):
        report.skipped[LENGTH_BALANCE_DROP] = len(pairs) - len(balanced)
    report.kept = len(balanced)
    return balanced


def excluded_prompts(specs: Sequence[DataSpec]) -> set[str]:
    """The prompt keys (:func:`~smorm.data.lists.prompt_key`) of every record of ``specs``, e.g. the
    dev benchmarks, whose prompts must not be trained on."""
    keys: set[str] = set()
    for spec in specs:
        records, _ = load_prompt_records(spec)
        keys.update(prompt_key(record.prompt) for record in records)
    return keys


class _Dedup:
    """First-seen wins across every source, in config order; what a later source repeats is counted there.

    A pair is the same pair when its prompt key and both normalised responses are equal; a pair that
    swaps an earlier pair's responses contradicts it and is dropped too. Links of a ranked list kept
    whole (``list_link``) are not deduplicated: dropping one would break its list. A rated response is
    the same when its prompt key and normalised response are equal (the first one's ratings are kept).
    """

    def __init__(self) -> None:
        self.pairs: set[tuple[str, str, str]] = set()
        self.rated: set[tuple[str, str]] = set()

    def pair_reason(self, pair: PreferencePair, prompt: str) -> str | None:
        """Why ``pair`` (whose :func:`~smorm.data.lists.prompt_key` is ``prompt``) repeats an earlier one, or None."""
        if pair.list_link is not None:
            return None
        chosen, rejected = normalise_text(pair.chosen), normalise_text(pair.rejected)
        if (prompt, chosen, rejected) in self.pairs:
            return DUPLICATE_PAIR
        if (prompt, rejected, chosen) in self.pairs:
            return REVERSED_PAIR
        self.pairs.add((prompt, chosen, rejected))
        return None

    def rated_reason(self, record: RatedResponse, prompt: str) -> str | None:
        """Why ``record`` (whose prompt key is ``prompt``) repeats an earlier one, or None."""
        key = (prompt, normalise_text(record.response))
        if key in self.rated:
            return DUPLICATE_RATED
        self.rated.add(key)
        return None


def _drop(records: list[T], report: Any, reason_of: Callable[[T], str | None]) -> list[T]:
    """``records`` without those ``reason_of`` names a reason for; each reason counted in ``report.skipped``."""
    kept: list[T] = []
    for record in records:
        reason = reason_of(record)
        if reason is None:
            kept.append(record)
        else:
            report.skipped[reason] = report.skipped.get(reason, 0) + 1
    report.kept = len(kept)
    return kept


def load_run_data(pairs: Sequence[DataSpec], ratings: Sequence[DataSpec], on_error: str = "error",
                  attributes: Sequence[str] | None = None, rating_scale: str = "unit",
                  ratings_filter: str = "none", dedup: bool = False,
                  exclude_prompts_of: Sequence[DataSpec] = (), length_balance: bool = False) -> LoadedData:
    """Read and validate every source (no model needed).

    Args:
        pairs, ratings: the sources of D_S and D_M, in order.
        on_error: ``error`` or ``skip`` for bad records (a source's own ``on_error`` wins).
        attributes: the attribute names to use (default: every name found in the ratings, in order of
            appearance); a found name not listed is ignored, with a note in the reports.
        rating_scale: ``unit`` (ratings mapped onto [0, 1]) or ``raw`` (as the data gives them);
            see :func:`smorm.data.loading.load_ratings`.
        ratings_filter: ``shared_prompts`` keeps only the rated responses whose prompt is also the prompt
            of a pair of D_S (000 Sec. 3: "we filter D_M to retain only samples that also appear in
            D_S"), prompts compared by :func:`~smorm.data.lists.prompt_key`; each ratings report counts
            the dropped ones, and a ``ratings_filter`` report gives the totals.
        dedup: drop exact repeats across all sources (see :class:`_Dedup`), counted in each source's report.
        exclude_prompts_of: files (e.g. the dev benchmarks) whose prompts are dropped from D_S and D_M,
            compared by :func:`~smorm.data.lists.prompt_key`; counted in each source's report.
        length_balance: per source, as many pairs whose chosen is longer as shorter
            (:func:`length_balanced`), after dedup and exclusion.
    """
    if ratings_filter not in RATINGS_FILTERS:
        raise ValueError(f"data.ratings_filter must be one of {RATINGS_FILTERS}, got {ratings_filter!r}")
    pair_records: list[PreferencePair] = []
    rated: list[RatedResponse] = []
    reports: list[dict[str, Any]] = []
    scales: dict[str, dict[str, list[float]]] = {}
    excluded = excluded_prompts(exclude_prompts_of)
    seen = _Dedup()
    shared: set[str] | None = None  # the D_S prompt keys, once D_S is read (ratings_filter: shared_prompts)

    def pair_reason(pair: PreferencePair) -> str | None:
        prompt = prompt_key(pair.prompt)
        if prompt in excluded:
            return EXCLUDED_PROMPT
        return seen.pair_reason(pair, prompt) if dedup else None

    def rated_reason(record: RatedResponse) -> str | None:
        prompt = prompt_key(record.prompt)
        if prompt in excluded:
            return EXCLUDED_PROMPT
        if dedup and (repeat := seen.rated_reason(record, prompt)):
            return repeat
        return SHARED_PROMPTS_DROP if shared is not None and prompt not in shared else None

    for spec in pairs:
        records, report = load_pairs(spec, on_error=on_error)
        if excluded or dedup:
            records = _drop(records, report, pair_reason)  # a list's links share its prompt: it goes whole
        if length_balance:
            records = length_balanced(records, report)
        pair_records.extend(records)
        reports.append({"kind": "pairs", **_report_dict(report)})
    shared = {prompt_key(pair.prompt) for pair in pair_records} if ratings_filter == "shared_prompts" else None
    kept_total = dropped_total = 0
    for spec in ratings:
        rated_records, report = load_ratings(spec, on_error=on_error, rating_scale=rating_scale)
        if excluded or dedup or shared is not None:
            rated_records = _drop(rated_records, report, rated_reason)
        if shared is not None:
            kept_total += len(rated_records)
            dropped_total += report.skipped.get(SHARED_PROMPTS_DROP, 0)
        rated.extend(rated_records)
        report_dict = _report_dict(report)
        reports.append({"kind": "ratings", **report_dict})
        scales[report_dict.get("source", spec.path)] = {
            k: [float(v[0]), float(v[1])] for k, v in (report_dict.get("scales") or {}).items()
        }
    if excluded:
        reports.append({"kind": "note", "notes": [f"data.exclude_prompts_of: {len(excluded)} prompts of "
                        f"{', '.join(spec.path for spec in exclude_prompts_of)} are not trained on"]})
    if shared is not None:
        reports.append({"kind": "ratings_filter", "source": "data.ratings_filter", "path": ratings_filter,
                        "kept": kept_total, "skipped": {SHARED_PROMPTS_DROP: dropped_total} if dropped_total else {},
                        "d_s_prompts": len(shared), "prompts_compared_as": PROMPT_KEY_RULE})
    found: list[str] = []
    for record in rated:
        for name in record.ratings:
            if name not in found:
                found.append(name)
    chosen = list(attributes) if attributes else found
    if attributes:
        unknown = sorted(set(found) - set(chosen))
        if unknown:
            reports.append({"kind": "note", "notes": [f"attributes not in data.attributes are ignored: {unknown}"]})
    return LoadedData(pair_records, rated, chosen, scales, reports)
