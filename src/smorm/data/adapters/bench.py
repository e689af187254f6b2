"""Benchmark and prompt-set adapters: ``rm-bench`` and ``mt-bench`` (questions).

RewardBench is a pairs format and lives with the preference adapters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smorm.data.adapters.base import Adapter, Context, has, register
from smorm.data.errors import DataError, FieldError
from smorm.data.messages import describe, get_field, messages, require_response, require_text, user
from smorm.data.spec import PromptRecord
from smorm.types import RMBenchItem

RM_BENCH_DOMAINS = ("chat", "code", "math", "safety-refuse", "safety-response")
RM_BENCH_STYLES = ("concise", "detailed_plain", "detailed_markdown")


def rm_bench_domain(record: dict[str, Any], ctx: Context) -> str:
    """The domain from option ``domain``, the record's ``domain``, an ``id`` like ``chat/12``, or the file name.

    The released files are one per domain (``chat_filtered.json`` …); ``total_dataset.json`` and the
    hub copy carry a ``domain`` field.
    """
    if ctx.options.get("domain"):
        return str(ctx.options["domain"])
    if isinstance(record.get("domain"), str) and record["domain"]:
        return record["domain"]
    ident = record.get("id")
    if isinstance(ident, str) and "/" in ident and ident.split("/", 1)[0] in RM_BENCH_DOMAINS:
        return ident.split("/", 1)[0]
    stem = Path(ctx.path).name.split(".", 1)[0]
    for domain in RM_BENCH_DOMAINS:
        if stem == domain or stem.startswith(domain + "_"):
            return domain
    raise FieldError(
        "domain",
        f"missing, and the file name does not name a domain ({', '.join(RM_BENCH_DOMAINS)})",
        kind="missing field",
    )


def _three(record: dict[str, Any], name: str, ctx: Context) -> list[str]:
    value = get_field(record, name)
    if not isinstance(value, list) or len(value) != 3:
        raise FieldError(
            name,
            f"expected a list of 3 responses (concise, detailed plain, detailed markdown), got {describe(value)}",
            kind="bad responses",
        )
    return [require_response(text, f"{name}[{i}]", ctx.allow_blank_responses) for i, text in enumerate(value)]


def rm_bench_items(record: dict[str, Any], ctx: Context) -> list[RMBenchItem]:
    prompt = messages(get_field(record, "prompt"), "prompt")
    meta: dict[str, Any] = {k: record[k] for k in ("id", "subset", "error_key", "error") if k in record}
    return [
        RMBenchItem(
            prompt,
            _three(record, "chosen", ctx),
            _three(record, "rejected", ctx),
            domain=rm_bench_domain(record, ctx),
            meta=meta,
        )
    ]


def mt_bench_prompts(record: dict[str, Any], ctx: Context) -> list[Any]:
    """MT-Bench ``question.jsonl``: the first turn as the prompt; category, all turns and references in meta."""
    turns = get_field(record, "turns")
    if not isinstance(turns, list) or not turns:
        raise FieldError(
            "turns", f"expected a non-empty list of questions, got {describe(turns)}", kind="bad prompt"
        )
    first = require_text(turns[0], "turns[0]")
    category = record.get("category") if isinstance(record.get("category"), str) else None
    meta = {"question_id": record.get("question_id"), "turns": turns, "reference": record.get("reference")}
    return [PromptRecord(prompt=[user(first)], category=category, meta=meta)]


def load_mt_bench_answers(path: str | Path) -> dict[int, list[str]]:
    """FastChat answer files (``reference_answer/gpt-4.jsonl``, ``model_answer/*.jsonl``): question id -> turns.

    These files hold answers only (no questions), so they are not an adapter; join them with the
    questions by ``question_id``.
    """
    from smorm.data.readers import iter_rows

    answers: dict[int, list[str]] = {}
    for number, row in iter_rows(path):
        try:
            question_id = row["question_id"]
            turns = row["choices"][0]["turns"]
        except (KeyError, IndexError, TypeError):
            raise DataError(
                f"{path}:{number}: field 'choices[0].turns': missing",
                origin=f"{path}:{number}",
                field="choices",
            ) from None
        answers[int(question_id)] = [require_text_or_error(t, path, number) for t in turns]
    return answers


def require_text_or_error(value: Any, path: str | Path, number: int) -> str:
    try:
        return require_text(value, "choices[0].turns")
    except FieldError as exc:
        raise DataError(
            f"{path}:{number}: {exc}", origin=f"{path}:{number}", field=exc.field, kind=exc.kind
        ) from None


def _is_rm_bench(record: dict[str, Any]) -> bool:
    return (
        has(record, "prompt", "chosen", "rejected")
        and isinstance(record["chosen"], list)
        and isinstance(record["rejected"], list)
        and all(isinstance(x, str) for x in record["chosen"])
    )


register(
    Adapter(
        "rm-bench",
        "RM-Bench: three chosen and three rejected responses per prompt, in three styles",
        detect=lambda p, r: _is_rm_bench(r),
        rmbench=rm_bench_items,
        options={
            "domain": f"domain for every item ({', '.join(RM_BENCH_DOMAINS)}); default from the data or file name"
        },
        fields="prompt, chosen[3], rejected[3] (+ domain / id)",
        priority=85,
    )
)
register(
    Adapter(
        "mt-bench",
        "MT-Bench question.jsonl: first turns as prompts for generation (category kept)",
        detect=lambda p, r: has(r, "question_id", "turns") and "choices" not in r,
        prompts=mt_bench_prompts,
        fields="question_id, category, turns",
        priority=80,
    )
)
