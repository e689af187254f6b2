"""Adapters for public pairwise-preference datasets, read in their original formats.

``hh``, ``full-hh``, ``ultrafeedback``, ``argilla-ultrafeedback``, ``arena``, ``pku``,
``stack-exchange``, ``rmb`` and ``reward-bench``. Choices that are not forced by the data are
stated in each function's docstring.
"""

from __future__ import annotations

from typing import Any

from smorm.data.adapters.base import Adapter, Context, has, register
from smorm.data.adapters.generic import conversation_pair, optional_text
from smorm.data.errors import DropRecord, FieldError
from smorm.data.lists import ListCounts, all_pairs
from smorm.data.messages import (
    describe,
    get_field,
    json_list,
    merge_same_role,
    messages,
    parse_hh_transcript,
    require_number,
    require_response,
    require_text,
    split_hh_pair,
    user,
)
from smorm.types import Message, PreferencePair, RankedResponses, RatedResponse


def _is_transcript(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip(" ").startswith(("\n\nHuman:", "Human:"))


# --- Anthropic HH-RLHF -------------------------------------------------------------------------


def hh_pairs(record: dict[str, Any], ctx: Context) -> list[PreferencePair]:
    """Two whole transcripts; their shared prefix up to the last ``Assistant:`` is the prompt.

    Consecutive turns of one role (a few transcripts repeat ``Assistant:``) are merged, and counted.
    """
    chosen_text = require_text(get_field(record, "chosen"), "chosen")
    rejected_text = require_text(get_field(record, "rejected"), "rejected")
    prompt_text, chosen, rejected = split_hh_pair(chosen_text, rejected_text)
    turns = parse_hh_transcript(prompt_text, "chosen", merge=False)
    prompt = merge_same_role(turns)
    if len(prompt) < len(turns):
        ctx.counts["prompts with consecutive same-role turns merged"] += 1
    chosen = require_response(chosen, "chosen", ctx.allow_blank_responses)
    rejected = require_response(rejected, "rejected", ctx.allow_blank_responses)
    return [PreferencePair(prompt, chosen, rejected)]


def full_hh_pairs(record: dict[str, Any], ctx: Context) -> list[PreferencePair]:
    """Dahoas/full-hh-rlhf: a prompt transcript ending in ``Assistant:`` and two reply strings."""
    prompt = parse_hh_transcript(require_text(get_field(record, "prompt"), "prompt"), "prompt")
    chosen = require_response(get_field(record, "chosen"), "chosen", ctx.allow_blank_responses).strip()
    rejected = require_response(get_field(record, "rejected"), "rejected", ctx.allow_blank_responses).strip()
    return [PreferencePair(prompt, chosen, rejected)]


# --- UltraFeedback -----------------------------------------------------------------------------


def _score_pair(
    record: dict[str, Any], names: list[tuple[str, str]]
) -> tuple[float | None, float | None, str]:
    """The first (chosen, rejected) score fields present, looked up at top level and in ``metadata``."""
    places = [("", record)]
    if isinstance(record.get("metadata"), dict):
        places.append(("metadata.", record["metadata"]))
    for prefix, place in places:
        for chosen_name, rejected_name in names:
            if chosen_name in place or rejected_name in place:
                chosen = require_number(place.get(chosen_name), prefix + chosen_name)
                rejected = require_number(place.get(rejected_name), prefix + rejected_name)
                return chosen, rejected, prefix + chosen_name
    return None, None, ""


def _ultrafeedback_pairs(
    record: dict[str, Any], ctx: Context, names: list[tuple[str, str]]
) -> list[PreferencePair]:
    prompt, chosen, rejected = conversation_pair(record, allow_blank=ctx.allow_blank_responses)
    score_chosen, score_rejected, _ = _score_pair(record, names)
    margin = None if score_chosen is None or score_rejected is None else score_chosen - score_rejected
    if margin == 0 and ctx.option("drop_ties", False, (True, False)):
        raise DropRecord("equal scores (drop_ties)")
    meta = {k: v for k, v in (record.get("metadata") or {}).items() if not isinstance(v, (dict, list))}
    return [PreferencePair(prompt, chosen, rejected, margin=margin, meta=meta)]


def _ultrafeedback_ratings(
    record: dict[str, Any], ctx: Context, names: list[tuple[str, str]]
) -> list[RatedResponse]:
    prompt, chosen, rejected = conversation_pair(record, allow_blank=ctx.allow_blank_responses)
    score_chosen, score_rejected, _ = _score_pair(record, names)
    if score_chosen is None or score_rejected is None:
        raise FieldError(
            names[0][0], "missing (ratings need the chosen and rejected scores)", kind="missing field"
        )
    return [
        RatedResponse(prompt, chosen, {"overall": score_chosen}, meta={"side": "chosen"}),
        RatedResponse(prompt, rejected, {"overall": score_rejected}, meta={"side": "rejected"}),
    ]


UF_SCORES = [("score_chosen", "score_rejected")]
ARGILLA_SCORES = [
    ("rating_chosen", "rating_rejected"),
    ("chosen-rating", "rejected-rating"),
    ("chosen_rating", "rejected_rating"),
]


def _has_score(record: dict[str, Any], names: list[tuple[str, str]]) -> bool:
    metadata = record.get("metadata")
    meta: dict[str, Any] = metadata if isinstance(metadata, dict) else {}
    return any(c in record or c in meta for c, _ in names)


# --- Chatbot Arena -----------------------------------------------------------------------------


def arena_pairs(record: dict[str, Any], ctx: Context) -> list[PreferencePair]:
    """lmsys arena-human-preference-55k: JSON-encoded turn lists, a human winner (ties dropped).

    Multi-turn conversations (option ``multi_turn``): ``last`` (default) makes the earlier user turns
    and the *winning* model's earlier answers the prompt and compares the two last answers; ``first``
    compares the first answers to the first user turn (the only turn where both models saw the same
    context); ``drop`` drops multi-turn records. The human judged whole conversations, so no choice
    is exact.
    """
    mode = ctx.option("multi_turn", "last", ("last", "first", "drop"))
    labels = {
        name: require_number(get_field(record, name), name)
        for name in ("winner_model_a", "winner_model_b", "winner_tie")
    }
    if labels["winner_tie"] == 1:
        raise DropRecord("tie")
    if sorted(labels.values()) != [0.0, 0.0, 1.0]:
        raise FieldError(
            "winner_model_a",
            "exactly one of winner_model_a / winner_model_b / winner_tie must be 1",
            kind="bad label",
        )
    user_turns = json_list(get_field(record, "prompt"), "prompt")
    answers = {side: json_list(get_field(record, side), side) for side in ("response_a", "response_b")}
    for side, turns in answers.items():
        if len(turns) != len(user_turns):
            raise FieldError(
                side, f"{len(turns)} turns for {len(user_turns)} prompt turns", kind="turn count"
            )
    if not user_turns:
        raise FieldError("prompt", "no turns", kind="empty text")
    if len(user_turns) > 1 and mode == "drop":
        raise DropRecord("multi-turn (multi_turn=drop)")
    winner, loser = (
        ("response_a", "response_b") if labels["winner_model_a"] == 1 else ("response_b", "response_a")
    )
    last = 0 if mode == "first" else len(user_turns) - 1
    prompt: list[Message] = []
    for i in range(last):
        prompt.append(user(require_text(user_turns[i], f"prompt[{i}]", allow_empty=True)))
        prompt.append({"role": "assistant", "content": require_text(answers[winner][i], f"{winner}[{i}]")})
    prompt.append(user(require_text(user_turns[last], f"prompt[{last}]")))
    chosen = require_response(answers[winner][last], f"{winner}[{last}]", ctx.allow_blank_responses)
    rejected = require_response(answers[loser][last], f"{loser}[{last}]", ctx.allow_blank_responses)
    model = {"response_a": record.get("model_a"), "response_b": record.get("model_b")}
    meta = {
        "id": record.get("id"),
        "chosen_model": model[winner],
        "rejected_model": model[loser],
        "num_turns": len(user_turns),
    }
    return [PreferencePair(prompt, chosen, rejected, meta=meta)]


# --- PKU-SafeRLHF ------------------------------------------------------------------------------


def _response_index(record: dict[str, Any], name: str) -> int:
    value = get_field(record, name)
    if isinstance(value, bool) or value not in (0, 1):
        raise FieldError(name, f"expected 0 or 1, got {describe(value)}", kind="bad index")
    return int(value)


def pku_pairs(record: dict[str, Any], ctx: Context) -> list[PreferencePair]:
    """Pairs by ``better_response_id`` (helpfulness, default) or, with ``view: safer``, ``safer_response_id``."""
    view = ctx.option("view", "better", ("better", "safer"))
    best = _response_index(record, f"{view}_response_id")
    prompt = messages(get_field(record, "prompt"), "prompt")
    responses = [
        require_response(get_field(record, f"response_{i}"), f"response_{i}", ctx.allow_blank_responses) for i in (0, 1)
    ]
    meta = {
        "view": view,
        "chosen_safe": record.get(f"is_response_{best}_safe"),
        "rejected_safe": record.get(f"is_response_{1 - best}_safe"),
    }
    return [PreferencePair(prompt, responses[best], responses[1 - best], meta=meta)]


def pku_ratings(record: dict[str, Any], ctx: Context) -> list[RatedResponse]:
    """Two rated responses per row: ``safe`` = is_response_i_safe as 1/0, and ``harmlessness`` =
    3 - severity_level (severity 0–3, so 3 is harmless), rescaled to [0, 1] like every rating."""
    prompt = messages(get_field(record, "prompt"), "prompt")
    rated = []
    for i in (0, 1):
        field = f"response_{i}"
        response = require_response(get_field(record, field), field, ctx.allow_blank_responses)
        safe = get_field(record, f"is_response_{i}_safe")
        if not isinstance(safe, bool):
            raise FieldError(
                f"is_response_{i}_safe", f"expected true/false, got {describe(safe)}", kind="not a boolean"
            )
        severity = require_number(
            get_field(record, f"response_{i}_severity_level"), f"response_{i}_severity_level"
        )
        if severity not in (0, 1, 2, 3):
            raise FieldError(
                f"response_{i}_severity_level", f"{severity:g} outside the scale 0–3", kind="out of scale"
            )
        categories = record.get(f"response_{i}_harm_category") or {}
        harms = sorted(k for k, v in categories.items() if v is True) if isinstance(categories, dict) else []
        ratings = {"safe": float(safe), "harmlessness": 3.0 - severity}
        rated.append(
            RatedResponse(prompt, response, ratings, meta={"response_index": i, "harm_categories": harms})
        )
    return rated


# --- Stack Exchange ----------------------------------------------------------------------------


def _answers(record: dict[str, Any], ctx: Context) -> tuple[list[Message], list[str], list[float], int | None]:
    prompt = [user(require_text(get_field(record, "question"), "question"))]
    raw = get_field(record, "answers")
    if not isinstance(raw, list):
        raise FieldError("answers", f"expected a list, got {describe(raw)}", kind="not a list")
    texts, scores, accepted = [], [], None
    for i, answer in enumerate(raw):
        if not isinstance(answer, dict):
            raise FieldError(
                f"answers[{i}]", f"expected an object, got {describe(answer)}", kind="bad answer"
            )
        texts.append(require_response(answer.get("text"), f"answers[{i}].text", ctx.allow_blank_responses))
        scores.append(require_number(answer.get("pm_score"), f"answers[{i}].pm_score"))
        if answer.get("selected") is True and accepted is None:
            accepted = i
    return prompt, texts, scores, accepted


def stack_exchange_ranked(record: dict[str, Any], ctx: Context) -> list[RankedResponses]:
    """All answers with their ``pm_score`` (HuggingFaceH4's log-scaled vote score) as scores."""
    prompt, texts, scores, accepted = _answers(record, ctx)
    if not texts:
        raise DropRecord("no answers")
    return [
        RankedResponses(prompt, texts, scores=scores, meta={"qid": record.get("qid"), "accepted": accepted})
    ]


def stack_exchange_pairs(record: dict[str, Any], ctx: Context) -> list[PreferencePair]:
    """``pairs: extremes`` (default): the highest- vs the lowest-scored answer (the first in file order
    on equal scores); ``pairs: all``: every two answers with different scores. Questions whose
    answers all score the same are dropped. The margin is the ``pm_score`` difference."""
    mode = ctx.option("pairs", "extremes", ("extremes", "all"))
    prompt, texts, scores, _ = _answers(record, ctx)
    if len(texts) < 2:
        raise DropRecord("fewer than two answers")
    if max(scores) == min(scores):
        raise DropRecord("answers have equal scores")
    meta = {"qid": record.get("qid")}
    if mode == "all":
        return all_pairs(RankedResponses(prompt, texts, scores=scores, meta=meta), scores, ListCounts())
    i, j = scores.index(max(scores)), scores.index(min(scores))
    return [PreferencePair(prompt, texts[i], texts[j], margin=scores[i] - scores[j], meta=meta)]


# --- RMB and RewardBench -----------------------------------------------------------------------


def rmb_pairs(record: dict[str, Any], ctx: Context) -> list[PreferencePair]:
    """RMB Pairwise_set: ``conversation_input`` messages, ``chosen``/``reject`` ``{llm_name, answer}``;
    the subset is ``category_path`` (e.g. ``Pairwise_set/Harmlessness/S1``)."""
    prompt = messages(get_field(record, "conversation_input"), "conversation_input")
    chosen = require_response(get_field(record, "chosen.answer"), "chosen.answer", ctx.allow_blank_responses)
    rejected = require_response(get_field(record, "reject.answer"), "reject.answer", ctx.allow_blank_responses)
    meta = {
        "pair_uid": record.get("pair_uid"),
        "chosen_model": (record.get("chosen") or {}).get("llm_name"),
        "rejected_model": (record.get("reject") or {}).get("llm_name"),
    }
    return [
        PreferencePair(prompt, chosen, rejected, subset=optional_text(record, "category_path"), meta=meta)
    ]


def reward_bench_pairs(record: dict[str, Any], ctx: Context) -> list[PreferencePair]:
    prompt = messages(get_field(record, "prompt"), "prompt")
    chosen = require_response(get_field(record, "chosen"), "chosen", ctx.allow_blank_responses)
    rejected = require_response(get_field(record, "rejected"), "rejected", ctx.allow_blank_responses)
    subset = require_text(get_field(record, "subset"), "subset")
    meta: dict[str, Any] = {k: record.get(k) for k in ("id", "chosen_model", "rejected_model") if k in record}
    return [PreferencePair(prompt, chosen, rejected, subset=subset, meta=meta)]


def _pair_strings(r: dict[str, Any]) -> bool:
    return isinstance(r.get("chosen"), str) and isinstance(r.get("rejected"), str)


register(
    Adapter(
        "hh",
        "Anthropic HH-RLHF: two whole 'Human:/Assistant:' transcripts",
        detect=lambda p, r: _pair_strings(r) and "prompt" not in r and _is_transcript(r["chosen"]),
        pairs=hh_pairs,
        fields="chosen, rejected transcripts",
        priority=80,
    )
)
register(
    Adapter(
        "full-hh",
        "Dahoas/full-hh-rlhf: prompt transcript + chosen/rejected replies",
        detect=lambda p, r: _pair_strings(r) and _is_transcript(r.get("prompt")),
        pairs=full_hh_pairs,
        fields="prompt transcript, chosen, rejected",
        priority=80,
    )
)
register(
    Adapter(
        "ultrafeedback",
        "UltraFeedback binarized (trl-lib / H4): margin = GPT-4 score_chosen - score_rejected",
        detect=lambda p, r: has(r, "chosen", "rejected") and _has_score(r, UF_SCORES),
        pairs=lambda r, c: _ultrafeedback_pairs(r, c, UF_SCORES),
        ratings=lambda r, c: _ultrafeedback_ratings(r, c, UF_SCORES),
        scales={"overall": (1.0, 10.0)},
        options={"drop_ties": "drop pairs whose two scores are equal (default false)"},
        fields="prompt, chosen, rejected, metadata.score_chosen/score_rejected",
        priority=70,
    )
)
register(
    Adapter(
        "argilla-ultrafeedback",
        "Argilla UltraFeedback: margin = mean aspect rating of chosen - rejected (1–5)",
        detect=lambda p, r: has(r, "chosen", "rejected") and _has_score(r, ARGILLA_SCORES),
        pairs=lambda r, c: _ultrafeedback_pairs(r, c, ARGILLA_SCORES),
        ratings=lambda r, c: _ultrafeedback_ratings(r, c, ARGILLA_SCORES),
        scales={"overall": (1.0, 5.0)},
        options={"drop_ties": "drop pairs whose two ratings are equal (default false)"},
        fields="prompt, chosen, rejected, metadata.rating_chosen/rating_rejected",
        priority=70,
    )
)
register(
    Adapter(
        "arena",
        "lmsys Chatbot Arena human preferences (ties dropped)",
        detect=lambda p, r: has(r, "response_a", "response_b", "winner_model_a"),
        pairs=arena_pairs,
        options={"multi_turn": "last (default) | first | drop"},
        fields="prompt, response_a, response_b, winner_model_a/b, winner_tie",
        priority=80,
    )
)
register(
    Adapter(
        "pku",
        "PKU-SafeRLHF: pairs by better (or safer) response; per-response safety ratings",
        detect=lambda p, r: has(r, "response_0", "response_1", "better_response_id"),
        pairs=pku_pairs,
        ratings=pku_ratings,
        scales={"safe": (0.0, 1.0), "harmlessness": (0.0, 3.0)},
        options={"view": "better (default) | safer: which response id makes the chosen side"},
        fields="prompt, response_0/1, better_response_id, safer_response_id",
        priority=80,
    )
)
register(
    Adapter(
        "stack-exchange",
        "HuggingFaceH4 stack-exchange-preferences: answers ranked by vote score",
        detect=lambda p, r: has(r, "question", "answers"),
        pairs=stack_exchange_pairs,
        ranked=stack_exchange_ranked,
        options={"pairs": "extremes (default) | all"},
        fields="question, answers[{text, pm_score}]",
        priority=80,
    )
)
register(
    Adapter(
        "rmb",
        "RMB Pairwise_set (a folder is read recursively)",
        detect=lambda p, r: has(r, "conversation_input", "chosen", "reject"),
        pairs=rmb_pairs,
        fields="conversation_input, chosen.answer, reject.answer, category_path",
        priority=80,
    )
)
register(
    Adapter(
        "reward-bench",
        "RewardBench: prompt, chosen, rejected, subset",
        detect=lambda p, r: _pair_strings(r) and has(r, "prompt", "subset"),
        pairs=reward_bench_pairs,
        fields="prompt, chosen, rejected, subset",
        priority=60,
    )
)
