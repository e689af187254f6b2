"""Load a DataSpec into validated records: pick the adapter, apply the error policy, rescale ratings (or not).

Everything is checked here, while loading and before any training: a record that would fail later
fails now, with ``path:line: field 'x': problem``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

from smorm.data.adapters.base import COMMON_OPTIONS, Adapter, Context
from smorm.data.errors import DataError, DropRecord, FieldError
from smorm.data.lists import (
    ListCounts,
    all_pairs,
    check_score,
    distinct_responses,
    group_ratings,
    list_links,
    list_scores,
    usable,
)
from smorm.data.messages import is_blank, messages, require_response, to_number
from smorm.data.readers import read_records
from smorm.data.sampling import seeded_sample
from smorm.data.spec import ON_ERROR_POLICIES, DataSpec, LoadReport, PromptRecord, as_spec
from smorm.registry import DATA_ADAPTERS
from smorm.types import Message, PreferencePair, RankedResponses, RatedResponse, RMBenchItem

T = TypeVar("T")
LOADERS = {
    "pairs": "load_pairs",
    "ratings": "load_ratings",
    "ranked": "load_ranked",
    "rmbench": "load_rmbench",
    "prompts": "load_prompts",
}


def load_pairs(spec: DataSpec | str, on_error: str = "error") -> tuple[list[PreferencePair], LoadReport]:
    """Preference pairs (D_S) from any pairs format, or, with ``spec.ranking``, from a ranked or rated
    source (:func:`load_ranking_pairs`); see :class:`DataSpec` for the options."""
    spec = as_spec(spec)
    if spec.ranking is not None:
        return load_ranking_pairs(spec, on_error)
    return _load(spec, "pairs", on_error)


def load_ranking_pairs(spec: DataSpec, on_error: str = "error") -> tuple[list[PreferencePair], LoadReport]:
    """D_S pairs from the responses of each prompt ranked by a score (``spec.ranking``, see :class:`RankingSpec`).

    A ranked format (Stack Exchange, ``ranked``) gives its lists and scores; a ratings format
    (HelpSteer, Arena-Bench, UltraFeedback's two rated responses …) is grouped by prompt
    (:func:`smorm.data.lists.prompt_key`) and scored on the ratings rescaled to [0, 1]. Lists with one
    response or one score are dropped and counted; ``limit``/``sample`` then pick lists. The report's
    ``kept`` counts pairs.
    """
    assert spec.ranking is not None
    ranking = spec.ranking
    adapter = resolve_adapter(spec)
    kind = "ranked" if adapter.ranked is not None else "ratings" if adapter.ratings is not None else ""
    if not kind:
        raise DataError(f"{spec.path}: ranking needs a ranked or ratings format; format {adapter.name!r} gives "
                        f"{', '.join(adapter.kinds())} (read it without ranking)", field="ranking")
    policy = spec.on_error or on_error
    records, report = _load(dataclasses.replace(spec, limit=None, sample=None, ranking=None), kind, on_error, adapter)
    counts = ListCounts()
    if kind == "ranked":
        if ranking.score is not None:
            raise DataError(f"{spec.path}: ranking.score: format {adapter.name!r} ranks its responses with its own "
                            "scores; leave score out", field="ranking.score")
        lists, score_name = records, "the source's scores"
    else:
        found = list(dict.fromkeys(name for record in records for name in record.ratings))
        score = ranking.score if ranking.score is not None else _default_score(adapter, found, spec.path)
        check_score(score, found, spec.path)
        lists, score_name = group_ratings(records, score, counts), repr(score)
    scored = []
    for ranked in lists:
        scores = list_scores(ranked)
        if scores is None:
            _fail(DataError(f"{ranked.origin}: field 'scores': ranking needs scores or a best index",
                            origin=ranked.origin, field="scores", kind="no scores"), policy, report)
            continue
        ranked, scores = distinct_responses(ranked, scores, counts)
        if usable(ranked, scores, counts):
            scored.append((ranked, scores))
    if spec.limit is not None:
        scored = scored[: spec.limit]
    if spec.sample is not None:
        chosen = {id(r) for r in _sample([r for r, _ in scored], spec, report, "lists")}
        scored = [(r, s) for r, s in scored if id(r) in chosen]
    pairs: list[PreferencePair] = []
    for ranked, scores in scored:
        if ranking.into == "pairs":
            pairs.extend(all_pairs(ranked, scores, counts, ranking.max_pairs_per_prompt))
        else:
            pairs.extend(list_links(ranked, scores, list_id=ranked.origin))
    for reason, count in counts.dropped.items():
        report.skipped[reason] = report.skipped.get(reason, 0) + count
    responses = sum(len(r.responses) for r, _ in scored)
    report.notes.append(f"ranking by {score_name} into {ranking.into}: {len(scored)} lists of {responses} "
                        f"responses give {len(pairs)} pairs")
    if counts.tied_pairs:
        report.notes.append(f"tied response pairs left out: {counts.tied_pairs}")
    if counts.capped_pairs:
        report.notes.append(f"pairs over ranking.max_pairs_per_prompt left out: {counts.capped_pairs}")
    report.kept = len(pairs)
    return pairs, report


def _default_score(adapter: Adapter, found: list[str], path: str) -> str:
    """``ranking.score`` when the config gives none: the format's ranking attribute, or the only attribute."""
    if adapter.ranking_score is not None and adapter.ranking_score in found:
        return adapter.ranking_score
    if len(found) == 1:
        return found[0]
    raise DataError(f"{path}: ranking.score is needed: the ratings have attributes {', '.join(found) or 'none'}; "
                    "name one, or give weights {attribute: weight}", field="ranking.score")


RATING_SCALES = ("unit", "raw")
"""What a rating becomes: ``unit`` mapped linearly onto [0, 1] (the default), ``raw`` kept as the data gives it."""


def load_ratings(
    spec: DataSpec | str, on_error: str = "error", rating_scale: str = "unit"
) -> tuple[list[RatedResponse], LoadReport]:
    """Rated responses (D_M); by default every rating is rescaled to [0, 1], as ArmoRM does (004 App. A).

    The raw scale of an attribute is, in order: ``options.scales`` of the spec, the source's known
    scale (HelpSteer 0–4, Prometheus 1–5, Auto-J 1–10 …), or the min/max observed in the loaded
    records (recorded in the report). A rating outside a declared scale is an error.

    Args:
        spec: the source.
        on_error: ``error`` or ``skip`` for bad records.
        rating_scale: ``unit``: ``(r - lo) / (hi - lo)`` per attribute, the scales in
            ``LoadReport.scales``; ``raw``: the ratings as the data gives them (still checked
            against declared scales), ``LoadReport.scales`` left empty.
    """
    if rating_scale not in RATING_SCALES:
        raise ValueError(f"rating_scale must be one of {RATING_SCALES}, got {rating_scale!r}")
    return _load(as_spec(spec), "ratings", on_error, rating_scale=rating_scale)


def load_ranked(spec: DataSpec | str, on_error: str = "error") -> tuple[list[RankedResponses], LoadReport]:
    """Several responses per prompt with reference scores (Stack Exchange, generic ``ranked``)."""
    return _load(as_spec(spec), "ranked", on_error)


def load_rmbench(spec: DataSpec | str, on_error: str = "error") -> tuple[list[RMBenchItem], LoadReport]:
    """RM-Bench items (three styles of chosen and rejected responses per prompt)."""
    return _load(as_spec(spec), "rmbench", on_error)


def load_prompt_records(
    spec: DataSpec | str, on_error: str = "error"
) -> tuple[list[PromptRecord], LoadReport]:
    """Prompts for generation, with category when the source has one.

    Prompt formats (``mt-bench``, ``prompts``) give them directly; any other format gives the distinct
    prompts of its records, in file order (category = subset or domain).
    """
    spec = as_spec(spec)
    adapter = resolve_adapter(spec)
    if adapter.prompts is not None:
        return _load(spec, "prompts", on_error, adapter)
    kind = adapter.kinds()[0]
    whole = DataSpec(
        path=spec.path, format=adapter.name, name=spec.name, options=spec.options, on_error=spec.on_error,
        allow_blank_responses=spec.allow_blank_responses,
    )
    records, report = _load(whole, kind, on_error, adapter)
    prompts: list[PromptRecord] = []
    seen: set[str] = set()
    for record in records:
        key = json.dumps(record.prompt, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        category = getattr(record, "subset", None) or getattr(record, "domain", None) or None
        source = getattr(record, "source", "") or report.source  # RM-Bench items name no source of their own
        prompts.append(PromptRecord(record.prompt, category, source, record.origin))
        if spec.limit is not None and len(prompts) >= spec.limit:
            break
    if spec.sample is not None:
        prompts = _sample(prompts, spec, report, "distinct prompts")
    report.kept = len(prompts)
    report.notes.append(f"prompts taken from the {kind} of format {adapter.name!r}, duplicates removed")
    return prompts, report


def load_prompts(spec: DataSpec | str) -> list[list[Message]]:
    """Prompts for generation as chat message lists (MT-Bench: the first turn of each question)."""
    return [record.prompt for record in load_prompt_records(spec)[0]]


def resolve_adapter(spec: DataSpec) -> Adapter:
    """The spec's adapter, detecting it from the path and first record when ``format`` is ``auto``."""
    if spec.format != "auto":
        try:
            return DATA_ADAPTERS.get(spec.format)
        except KeyError as exc:
            raise DataError(f"{spec.path}: {exc.args[0]}") from None
    return detect_format(spec.path, spec.options.get("hf"))


def detect_format(path: str, hf_options: dict[str, Any] | None = None) -> Adapter:
    """The highest-priority adapter whose detector accepts the first parseable record."""
    first = None
    for raw in read_records(path, hf_options):
        if raw.error is None:
            first = raw
            break
    if first is None:
        raise DataError(f"{path}: no readable record to detect the format from")
    adapters: list[Adapter] = sorted((e.obj for e in DATA_ADAPTERS.entries()), key=lambda a: -a.priority)
    for adapter in adapters:
        if adapter.detect is not None and adapter.detect(first.path, first.fields):
            return adapter
    known = "; ".join(f"{a.name} ({a.fields})" for a in adapters if a.fields)
    fields = ", ".join(sorted(first.fields)[:20])
    raise DataError(
        f"{first.origin}: cannot detect the data format from fields [{fields}]; set format to one of: {known}"
    )


def _check_options(spec: DataSpec, adapter: Adapter) -> None:
    allowed = {**COMMON_OPTIONS, **adapter.options}
    unknown = sorted(set(spec.options) - set(allowed))
    if unknown:
        raise DataError(
            f"{spec.path}: unknown option(s) {unknown} for format {adapter.name!r} (known: {', '.join(sorted(allowed))})"
        )


def _load(
    spec: DataSpec, kind: str, on_error: str, adapter: Adapter | None = None, rating_scale: str = "unit"
) -> tuple[list[Any], LoadReport]:
    policy = spec.on_error or on_error
    if policy not in ON_ERROR_POLICIES:
        raise ValueError(f"on_error must be one of {ON_ERROR_POLICIES}, got {policy!r}")
    adapter = adapter or resolve_adapter(spec)
    convert: Callable[[dict[str, Any], Context], list[Any]] | None = getattr(adapter, kind)
    if convert is None:
        hints = ", ".join(f"{k} ({LOADERS[k]})" for k in adapter.kinds())
        raise DataError(
            f"{spec.path}: format {adapter.name!r} gives {hints}, not {kind}; use {LOADERS[kind]} for a {kind} format"
        )
    _check_options(spec, adapter)
    report = LoadReport(source=spec.source, path=spec.path, format=adapter.name)
    if spec.format == "auto":
        report.notes.append(f"format detected: {adapter.name}")
    ctx = Context(source=spec.source, options=spec.options, allow_blank_responses=spec.allow_blank_responses)
    scales = RatingScales(
        adapter.scales, spec.options.get("scales"), spec.options.get("rename"), spec.options.get("attributes")
    )
    kept: list[Any] = []
    records = read_records(spec.path, spec.options.get("hf"))
    try:
        for raw in records:
            if spec.limit is not None and len(kept) >= spec.limit:
                break
            report.read += 1
            if raw.error is not None:
                _fail(
                    DataError(f"{raw.origin}: {raw.error}", origin=raw.origin, kind="malformed record"),
                    policy,
                    report,
                )
                continue
            ctx.path, ctx.text_table = raw.path, raw.text_table
            try:
                produced = convert(raw.fields, ctx)
                for record in produced:
                    _finish(record, kind, raw.origin, ctx, scales)
            except DropRecord as drop:
                report.count_skip(drop.reason)
                continue
            except FieldError as exc:
                error = DataError(f"{raw.origin}: {exc}", origin=raw.origin, field=exc.field, kind=exc.kind)
                _fail(error, policy, report)
                continue
            kept.extend(produced)
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()
    if spec.limit is not None:
        kept = kept[: spec.limit]
    if spec.sample is not None:
        kept = _sample(kept, spec, report, "valid records")
    if kind == "ratings" and rating_scale == "unit":
        kept = scales.rescale(kept, spec.path, report)
    elif kind == "ratings":
        report.notes.append("ratings kept on their raw scale (rating_scale: raw)")
    report.kept = len(kept)
    report.blank_responses = sum(is_blank(text) for record in kept for text in _responses(record, kind))
    report.notes.extend(f"{fact}: {n}" for fact, n in sorted(ctx.counts.items()))
    return kept, report


def _sample(records: list[T], spec: DataSpec, report: LoadReport, what: str) -> list[T]:
    assert spec.sample is not None
    if spec.sample >= len(records):
        report.notes.append(f"sample of {spec.sample} asked for, {len(records)} {what}: all kept")
        return records
    report.notes.append(f"seeded sample (seed {spec.seed}) of {spec.sample} of {len(records)} {what}")
    return seeded_sample(records, spec.sample, spec.seed)


def _responses(record: Any, kind: str) -> list[str]:
    """The response texts of a record (what a blank-response count looks at)."""
    if kind == "pairs":
        return [record.chosen, record.rejected]
    if kind == "ratings":
        return [record.response]
    if kind == "ranked":
        return list(record.responses)
    if kind == "rmbench":
        return [*record.chosen, *record.rejected]
    return []


def _fail(error: DataError, policy: str, report: LoadReport) -> None:
    if policy == "error":
        raise error
    report.count_skip(f"{error.kind} ({error.field})" if error.field else error.kind)


def _finish(record: Any, kind: str, origin: str, ctx: Context, scales: RatingScales) -> None:
    """Check what every record of a kind must satisfy (whatever the adapter), and stamp origin and source."""
    record.origin = origin
    if hasattr(record, "source") and not record.source:
        record.source = ctx.source
    messages(record.prompt, "prompt")
    blank_ok = ctx.allow_blank_responses
    if kind == "pairs":
        require_response(record.chosen, "chosen", blank_ok)
        require_response(record.rejected, "rejected", blank_ok)
        if record.chosen == record.rejected:
            # Not malformed, but it carries no preference: dropped and counted, under either policy.
            raise DropRecord("identical chosen and rejected")
        record.margin = to_number(record.margin, "margin")
    elif kind == "ratings":
        require_response(record.response, "response", blank_ok)
        record.ratings = scales.select(record.ratings)
    elif kind == "ranked":
        for i, text in enumerate(record.responses):
            require_response(text, f"responses[{i}]", blank_ok)
    elif kind == "rmbench":
        if len(record.chosen) != 3 or len(record.rejected) != 3:
            raise FieldError(
                "chosen", "RM-Bench items need 3 chosen and 3 rejected responses", kind="bad responses"
            )


class RatingScales:
    """Which raw scale each attribute has, and the mapping of ratings onto [0, 1].

    Args:
        known: the adapter's scales by attribute name in the file.
        given: ``options.scales`` (by file name or renamed name), which win over ``known``.
        rename: ``options.rename`` ``{old: new}``.
        attributes: ``options.attributes``: keep only these (file names).
    """

    def __init__(
        self,
        known: dict[str, tuple[float, float]],
        given: dict[str, Any] | None,
        rename: dict[str, str] | None,
        attributes: list[str] | None,
    ) -> None:
        self.known = dict(known)
        self.given = {name: _scale(name, value) for name, value in (given or {}).items()}
        self.rename = dict(rename or {})
        self.attributes = set(attributes) if attributes else None

    def declared(self, name: str, final: str) -> tuple[float, float] | None:
        return self.given.get(final) or self.given.get(name) or self.known.get(name)

    def select(self, ratings: dict[str, float]) -> dict[str, float]:
        """Filter, rename, and check each rating against its declared scale (still raw values)."""
        out: dict[str, float] = {}
        for name, value in ratings.items():
            if self.attributes is not None and name not in self.attributes:
                continue
            final = self.rename.get(name, name)
            if final in out:
                raise FieldError(
                    name, f"renamed to {final!r}, which is already an attribute", kind="rename collision"
                )
            number = to_number(value, name)
            if number is None:
                continue  # missing stays missing
            scale = self.declared(name, final)
            if scale is not None and not scale[0] <= number <= scale[1]:
                raise FieldError(
                    name, f"{number:g} outside the scale [{scale[0]:g}, {scale[1]:g}]", kind="out of scale"
                )
            out[final] = number
        if not out:
            raise FieldError("ratings", "no ratings in this record", kind="no ratings")
        return out

    def rescale(self, records: list[RatedResponse], path: str, report: LoadReport) -> list[RatedResponse]:
        """Map every rating to [0, 1]: ``(r - lo) / (hi - lo)``; undeclared scales are observed min/max."""
        inverse = {new: old for old, new in self.rename.items()}
        names = sorted({name for record in records for name in record.ratings})
        for final in names:
            scale = self.declared(inverse.get(final, final), final)
            if scale is None:
                values = [r.ratings[final] for r in records if final in r.ratings]
                scale = (min(values), max(values))
                if scale[0] == scale[1]:
                    raise DataError(
                        f"{path}: attribute {final!r} has a single observed value {scale[0]:g}; "
                        "give its scale with options.scales: {" + repr(final) + ": [lo, hi]}"
                    )
                report.notes.append(
                    f"scale of {final!r} observed in the loaded records: [{scale[0]:g}, {scale[1]:g}]"
                )
            report.scales[final] = scale
        for record in records:
            record.ratings = {
                k: (v - report.scales[k][0]) / (report.scales[k][1] - report.scales[k][0])
                for k, v in record.ratings.items()
            }
        return records


def _scale(name: str, value: Any) -> tuple[float, float]:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if not ok or not all(math.isfinite(v) for v in value) or not value[0] < value[1]:
        raise DataError(f"options.scales[{name!r}]: expected [lo, hi] with lo < hi, got {value!r}")
    return float(value[0]), float(value[1])
