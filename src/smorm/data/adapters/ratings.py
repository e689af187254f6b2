"""Adapters for public absolute-rating datasets: ``helpsteer``, ``prometheus``, ``autoj``, ``arena-bench``.

Ratings are returned on each source's own scale; the loader maps them to [0, 1] with the scales
declared here (ArmoRM, paper 004 App. A: "we linearly transform all ratings to [0, 1]").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from smorm.data.adapters.base import Adapter, Context, has, register
from smorm.data.errors import DropRecord, FieldError
from smorm.data.messages import (
    describe,
    get_field,
    parse_dialogue,
    parse_helpsteer2_prompt,
    require_number,
    require_response,
    require_text,
    to_number,
    user,
)
from smorm.types import RatedResponse

HELPSTEER_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


def helpsteer_ratings(record: dict[str, Any], ctx: Context) -> list[RatedResponse]:
    """nvidia/HelpSteer and HelpSteer2: five human ratings 0–4. A null attribute is missing.

    HelpSteer2 multi-turn prompts (``<extra_id_1>User`` / ``<extra_id_1>Assistant`` markers) become
    chat messages.
    """
    prompt_text = require_text(get_field(record, "prompt"), "prompt")
    prompt = parse_helpsteer2_prompt(prompt_text) if "<extra_id_1>" in prompt_text else [user(prompt_text)]
    response = require_response(get_field(record, "response"), "response", ctx.allow_blank_responses)
    ratings = {}
    for name in HELPSTEER_ATTRIBUTES:
        value = to_number(record.get(name), name, ctx.text_table)
        if value is not None:
            ratings[name] = value
    return [RatedResponse(prompt, response, ratings)]


PROMETHEUS_SECTIONS = re.compile(
    r"###The instruction to evaluate:\n(?P<instruction>.*?)\n*###Response to evaluate:\n(?P<response>.*?)"
    r"\n*###Reference Answer \(Score 5\):\n(?P<reference>.*?)\n*###Score Rubrics:\n(?P<rubric>.*?)\n*###Feedback:",
    re.DOTALL,
)
PROMETHEUS_DIALOGUE = "Here is a previous dialogue between an assistant and an user. Generate a human preferable response by the assistant."


def prometheus_ratings(record: dict[str, Any], ctx: Context) -> list[RatedResponse]:
    """Prometheus evaluation files: the ``instruction`` rubric prompt holds the question and the response.

    ``gpt4_score`` (three GPT-4 ratings 1–5) is averaged into one attribute, ``overall``. MT-Bench
    items write the conversation as ``User: … Assistant: …``; it becomes chat messages. The rubric
    and reference answer are kept in ``meta``: each item is rated against its own rubric.
    """
    text = require_text(get_field(record, "instruction"), "instruction")
    match = PROMETHEUS_SECTIONS.search(text)
    if match is None:
        raise FieldError(
            "instruction",
            "no '###The instruction to evaluate:' … '###Feedback:' sections",
            kind="unparsed prompt",
        )
    question = match["instruction"].strip()
    if question.startswith(PROMETHEUS_DIALOGUE):
        prompt = parse_dialogue(question[len(PROMETHEUS_DIALOGUE) :])
    else:
        prompt = [user(require_text(question, "instruction (question)"))]
    response = require_response(match["response"].strip(), "instruction (response)", ctx.allow_blank_responses)
    scores = get_field(record, "gpt4_score")
    if not isinstance(scores, list) or not scores:
        raise FieldError(
            "gpt4_score", f"expected a non-empty list of ratings, got {describe(scores)}", kind="bad scores"
        )
    values = [require_number(s, f"gpt4_score[{i}]") for i, s in enumerate(scores)]
    for i, value in enumerate(values):
        if not 1 <= value <= 5:
            raise FieldError(f"gpt4_score[{i}]", f"{value:g} outside the scale [1, 5]", kind="out of scale")
    meta: dict[str, Any] = {
        "rubric": match["rubric"].strip(),
        "reference": match["reference"].strip(),
        "gpt4_scores": values,
        **{k: record[k] for k in ("idx", "category", "response_source") if k in record},
    }
    return [RatedResponse(prompt, response, {"overall": sum(values) / len(values)}, meta=meta)]


AUTOJ_DATA = re.compile(
    r"\[Query\]:(?P<query>.*?)\n\*\*\*\n\[Response\]:(?P<response>.*?)\n\*\*\*\n\[END DATA\]", re.DOTALL
)


def autoj_ratings(record: dict[str, Any], ctx: Context) -> list[RatedResponse]:
    """GAIR Auto-J single-response data: ``usrmsg`` holds the query and response; ``pred_score`` 1–10
    (GPT-4) becomes the attribute ``overall``; the critique and scenario go to ``meta``."""
    text = require_text(get_field(record, "usrmsg"), "usrmsg")
    match = AUTOJ_DATA.search(text)
    if match is None:
        raise FieldError("usrmsg", "no '[Query]: … [Response]: … [END DATA]' block", kind="unparsed prompt")
    query = require_text(match["query"].strip(), "usrmsg (query)")
    response = require_response(match["response"].strip(), "usrmsg (response)", ctx.allow_blank_responses)
    score = require_number(get_field(record, "pred_score"), "pred_score", ctx.text_table)
    meta: dict[str, Any] = {k: record[k] for k in ("scenario", "source_dataset", "target_output") if k in record}
    return [RatedResponse([user(query)], response, {"overall": score}, meta=meta)]


ARENA_BENCH_PROMPT = re.compile(
    r"\[Question\]\n(?P<question>.*?)\n\n\[The Start of Reference Answer\]\n.*?\[The End of Reference Answer\]"
    r"\n\n\[The Start of Assistant's Answer\]\n(?P<answer>.*?)\n\[The End of Assistant's Answer\]",
    re.DOTALL,
)
ARENA_BENCH_WEAK_JUDGE = "arena-bench-judgment_judge_any"  # a llama-13b judge, not GPT-4 (data README)


def arena_bench_ratings(record: dict[str, Any], ctx: Context) -> list[RatedResponse]:
    """Arena-Bench v1 ``model_judgment`` rows: GPT-4's 1–10 ``score`` of one model's answer, as ``overall``.

    The question and the answer are read from the judge prompt (``user_prompt``), the text the score
    belongs to: for Llama-2-70b-chat and vicuna-33b-v1.3, 262 judged answers differ from the files in
    ``model_answer/`` (answers generated again later), so joining by ``question_id`` + ``model`` would
    pair a score with a text the judge never saw. A null score is dropped; so are the rows of the other
    files of the folder (questions, answers, references) and, unless ``judges: all``, those of the
    weaker llama-13b judge (``arena-bench-judgment_judge_any``).
    """
    judges = ctx.option("judges", "gpt-4", ("gpt-4", "all"))
    if "judgment" not in record:
        raise DropRecord("not a judgment (question, answer or reference file)")
    if judges == "gpt-4" and Path(ctx.path).name.startswith(ARENA_BENCH_WEAK_JUDGE):
        raise DropRecord("llama-13b judge (judges: all keeps it)")
    match = ARENA_BENCH_PROMPT.search(require_text(get_field(record, "user_prompt"), "user_prompt"))
    if match is None:
        raise FieldError("user_prompt", "no '[Question]' … \"[The End of Assistant's Answer]\" sections",
                         kind="unparsed prompt")
    score = record.get("score")
    if score is None:
        raise DropRecord("no score (the judge gave none)")
    overall = require_number(score, "score")
    response = require_response(match["answer"], "user_prompt (answer)", ctx.allow_blank_responses)
    meta = {"question_id": record.get("question_id"), "model": record.get("model")}
    return [RatedResponse([user(require_text(match["question"], "user_prompt (question)"))], response,
                          {"overall": overall}, meta=meta)]


register(
    Adapter(
        "helpsteer",
        "nvidia HelpSteer / HelpSteer2: five human ratings 0–4",
        detect=lambda p, r: has(r, "prompt", "response") and any(a in r for a in HELPSTEER_ATTRIBUTES),
        ratings=helpsteer_ratings,
        scales={name: (0.0, 4.0) for name in HELPSTEER_ATTRIBUTES},
        fields="prompt, response, helpfulness, correctness, coherence, complexity, verbosity",
        priority=80,
        # HelpSteer2 (Wang et al. 2024, Sec. 4.3) binarizes by helpfulness, ties discarded; 000 Table 5's
        # "HelpSteer2 (binarized)" names no other rule
        ranking_score="helpfulness",
    )
)
register(
    Adapter(
        "prometheus",
        "Prometheus rubric evaluations: mean of three GPT-4 ratings 1–5 as 'overall'",
        detect=lambda p, r: has(r, "instruction", "gpt4_score"),
        ratings=prometheus_ratings,
        scales={"overall": (1.0, 5.0)},
        fields="instruction (rubric prompt), gpt4_score",
        priority=80,
    )
)
register(
    Adapter(
        "autoj",
        "GAIR Auto-J single-response critiques: pred_score 1–10 as 'overall'",
        detect=lambda p, r: has(r, "usrmsg", "pred_score"),
        ratings=autoj_ratings,
        scales={"overall": (1.0, 10.0)},
        fields="usrmsg (critique prompt), pred_score",
        priority=80,
    )
)
register(
    Adapter(
        "arena-bench",
        "Arena-Bench v1 (early Arena-Hard): GPT-4 1–10 scores of model answers, as 'overall'",
        detect=lambda p, r: has(r, "question_id", "model", "user_prompt", "judgment", "score"),
        ratings=arena_bench_ratings,
        scales={"overall": (1.0, 10.0)},
        options={"judges": "gpt-4 (default) | all: also the llama-13b judge's file (arena-bench-judgment_judge_any)"},
        fields="question_id, model, user_prompt (judge prompt), judgment, score",
        priority=80,
    )
)
