"""Generic user formats: ``pairs``, ``ratings``, ``ranked`` and ``prompts``.

Fields:

- ``pairs``: ``prompt`` (text or messages), ``chosen``, ``rejected`` (text, or conversations whose
  last turn is the response; then ``prompt`` may be omitted and is the shared earlier turns),
  optional ``margin``, ``subset``, ``source``.
- ``ratings``: ``prompt``, ``response`` and one numeric field per attribute; every numeric field
  except known metadata (``id``, ``idx`` …) is an attribute unless ``options.attributes`` lists them.
  A null (or empty CSV cell) is a missing rating, never zero.
- ``ranked``: ``prompt``, ``responses`` (list), optional ``scores`` (higher is better), ``best``.
- ``prompts``: ``prompt`` and an optional ``category``.
"""

from __future__ import annotations

from typing import Any

from smorm.data.adapters.base import Adapter, Context, has, register
from smorm.data.errors import FieldError
from smorm.data.messages import describe, get_field, messages, response_text, to_number
from smorm.data.spec import PromptRecord
from smorm.types import Message, PreferencePair, RankedResponses, RatedResponse

# Numeric fields that describe a record rather than rate its response.
META_FIELDS = {
    "id", "idx", "index", "row", "row_id", "uid", "pair_uid", "qid", "question_id", "prompt_id", "source_index",
    "turn", "turns", "seed", "split", "length", "num_tokens", "timestamp", "tstamp", "year", "date",
}  # fmt: skip
TEXT_FIELDS = {"prompt", "response", "source", "subset", "category", "model", "origin"}


def conversation_pair(
    record: dict[str, Any],
    prompt_field: str = "prompt",
    chosen_field: str = "chosen",
    rejected_field: str = "rejected",
    allow_blank: bool = False,
) -> tuple[list[Message], str, str]:
    """(prompt messages, chosen text, rejected text) from text or conversation fields.

    With conversations and no prompt field (TRL's "implicit prompt" layout) the prompt is the turns
    before the last one, which must be the same in both conversations.
    """
    chosen, chosen_context = response_text(get_field(record, chosen_field), chosen_field, allow_blank)
    rejected, rejected_context = response_text(get_field(record, rejected_field), rejected_field, allow_blank)
    if prompt_field not in record or record[prompt_field] is None:
        if not chosen_context:
            raise FieldError(
                prompt_field,
                "missing (needed unless chosen/rejected are conversations)",
                kind="missing field",
            )
        if rejected_context and rejected_context != chosen_context:
            raise FieldError(
                rejected_field,
                "conversation differs from chosen before the last turn",
                kind="diverging transcripts",
            )
        return chosen_context, chosen, rejected
    prompt = messages(record[prompt_field], prompt_field)
    for context, name in ((chosen_context, chosen_field), (rejected_context, rejected_field)):
        if context and context != prompt:
            raise FieldError(name, "conversation does not continue the prompt", kind="diverging transcripts")
    return prompt, chosen, rejected


def optional_text(record: dict[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise FieldError(name, f"expected text, got {describe(value)}", kind="not text")
    return value


def pairs_record(record: dict[str, Any], ctx: Context) -> list[PreferencePair]:
    prompt, chosen, rejected = conversation_pair(record, allow_blank=ctx.allow_blank_responses)
    pair = PreferencePair(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        margin=to_number(record.get("margin"), "margin", ctx.text_table),
        subset=optional_text(record, "subset"),
        source=optional_text(record, "source") or "",
    )
    return [pair]


def rating_value(value: Any, field: str, from_text: bool) -> float | None:
    """A rating: a finite number, a boolean as 1/0 (ArmoRM 004 App. A), or None when missing."""
    if isinstance(value, bool):
        return float(value)
    if from_text and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return float(value.strip().lower() == "true")
    return to_number(value, field, from_text)


def _numeric_text(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def infer_ratings(record: dict[str, Any], ctx: Context, skip: set[str]) -> dict[str, float]:
    """Every numeric field not in ``skip`` or :data:`META_FIELDS` is an attribute.

    A field once seen as a rating must stay numeric (or null) in later records; text there is an error
    rather than a silently missing label.
    """
    seen: set[str] = ctx.state.setdefault("rating_fields", set())
    ratings: dict[str, float] = {}
    for name, value in record.items():
        if name in skip or name in META_FIELDS or isinstance(value, bool):
            continue
        numeric = isinstance(value, (int, float)) or (
            ctx.text_table and isinstance(value, str) and _numeric_text(value)
        )
        missing = value is None or (ctx.text_table and isinstance(value, str) and not value.strip())
        if numeric:
            seen.add(name)
            number = to_number(value, name, ctx.text_table)
            if number is not None:
                ratings[name] = number
        elif name in seen and not missing:
            raise FieldError(name, f"expected a rating, got {describe(value)}", kind="not a number")
    return ratings


def listed_ratings(record: dict[str, Any], ctx: Context, attributes: list[str]) -> dict[str, float]:
    ratings: dict[str, float] = {}
    for name in attributes:
        value = rating_value(record.get(name), name, ctx.text_table)
        if value is not None:
            ratings[name] = value
    return ratings


def ratings_record(record: dict[str, Any], ctx: Context) -> list[RatedResponse]:
    response, context = response_text(get_field(record, "response"), "response", ctx.allow_blank_responses)
    if "prompt" in record and record["prompt"] is not None:
        prompt = messages(record["prompt"], "prompt")
    elif context:
        prompt = context
    else:
        raise FieldError("prompt", "missing", kind="missing field")
    attributes = ctx.options.get("attributes")
    if attributes:
        ratings = listed_ratings(record, ctx, list(attributes))
    else:
        ratings = infer_ratings(record, ctx, TEXT_FIELDS)
    return [
        RatedResponse(
            prompt=prompt, response=response, ratings=ratings, source=optional_text(record, "source") or ""
        )
    ]


def ranked_record(record: dict[str, Any], ctx: Context) -> list[RankedResponses]:
    prompt = messages(get_field(record, "prompt"), "prompt")
    raw = get_field(record, "responses")
    if not isinstance(raw, list) or not raw:
        raise FieldError("responses", f"expected a non-empty list, got {describe(raw)}", kind="not a list")
    blank_ok = ctx.allow_blank_responses
    responses = [response_text(item, f"responses[{i}]", blank_ok)[0] for i, item in enumerate(raw)]
    scores = None
    if record.get("scores") is not None:
        raw_scores = record["scores"]
        if not isinstance(raw_scores, list) or len(raw_scores) != len(responses):
            raise FieldError(
                "scores",
                f"expected a list of {len(responses)} numbers, got {describe(raw_scores)}",
                kind="bad scores",
            )
        scores = [to_number(s, f"scores[{i}]") for i, s in enumerate(raw_scores)]
        if any(s is None for s in scores):
            raise FieldError("scores", "a score is null", kind="missing")
    best = record.get("best")
    if best is not None and (
        isinstance(best, bool) or not isinstance(best, int) or not 0 <= best < len(responses)
    ):
        raise FieldError(
            "best", f"expected an index in [0, {len(responses) - 1}], got {best!r}", kind="bad index"
        )
    return [RankedResponses(prompt=prompt, responses=responses, scores=scores, best=best)]  # type: ignore[arg-type]


def prompts_record(record: dict[str, Any], ctx: Context) -> list[Any]:
    return [
        PromptRecord(
            prompt=messages(get_field(record, "prompt"), "prompt"), category=optional_text(record, "category")
        )
    ]


register(
    Adapter(
        name="pairs",
        description="generic preference pairs: prompt, chosen, rejected (+ margin, subset, source)",
        detect=lambda path, r: has(r, "chosen", "rejected"),
        pairs=pairs_record,
        fields="chosen, rejected (+ prompt)",
        priority=10,
    )
)
register(
    Adapter(
        name="ratings",
        description="generic rated responses: prompt, response and one numeric field per attribute",
        detect=lambda path, r: has(r, "response") and not has(r, "chosen"),
        ratings=ratings_record,
        fields="prompt, response, <attribute>: number …",
        priority=10,
    )
)
register(
    Adapter(
        name="ranked",
        description="generic ranked responses: prompt, responses, scores (higher is better) or best",
        detect=lambda path, r: has(r, "prompt", "responses"),
        ranked=ranked_record,
        fields="prompt, responses (+ scores, best)",
        priority=10,
    )
)
register(
    Adapter(
        name="prompts",
        description="generic prompts for generation: prompt (+ category)",
        detect=lambda path, r: has(r, "prompt") and not has(r, "chosen") and not has(r, "response"),
        prompts=prompts_record,
        fields="prompt (+ category)",
        priority=5,
    )
)
