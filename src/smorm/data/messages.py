"""Field-level parsing shared by adapters: text, numbers, chat messages and transcripts.

Each helper either returns a clean value or raises :class:`FieldError` naming the field, so that
the loader can report ``path:line: field 'x': problem``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from smorm.data.errors import FieldError
from smorm.types import Message

ROLES = ("system", "user", "assistant")
# ShareGPT-style and other common spellings of the three roles.
ROLE_ALIASES = {
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "prompter": "user",
}
# Characters that render as nothing; a response made only of these is empty.
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
HELPSTEER2_TURN = re.compile(r"\n?<extra_id_1>(User|Assistant)\n")


def get_field(record: dict[str, Any], name: str) -> Any:
    """``record[name]``; a missing key (or a dotted path through dicts) is a FieldError."""
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            raise FieldError(name, "missing", kind="missing field")
        value = value[part]
    return value


def describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"a bare boolean {value}"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return f"a number {value!r}"
    return f"a {type(value).__name__}"


def is_blank(text: str) -> bool:
    return not text.strip().strip(INVISIBLE).strip()


def require_text(value: Any, field: str, allow_empty: bool = False) -> str:
    """A non-empty string; booleans, numbers, null and blank text are errors (never coerced)."""
    if not isinstance(value, str):
        kind = "missing" if value is None else "not text"
        raise FieldError(field, f"expected text, got {describe(value)}", kind=kind)
    if not allow_empty and is_blank(value):
        raise FieldError(field, "empty text", kind="empty text")
    return value


def require_response(value: Any, field: str, allow_blank: bool = False) -> str:
    """A response's text: as :func:`require_text`, but blank text passes when ``allow_blank``.

    Benchmarks allow it: a blank answer is what the benchmark published, and it is scored. In
    training data a blank response is an error (it would teach the model nothing true).
    """
    return require_text(value, field, allow_empty=allow_blank)


def to_number(value: Any, field: str, from_text: bool = False) -> float | None:
    """A finite float, or None when missing (null, or an empty cell of a text table).

    ``from_text`` accepts numbers written as strings (CSV cells). NaN and infinity are errors.
    """
    if value is None or (from_text and isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and from_text:
        try:
            value = float(value)
        except ValueError:
            raise FieldError(field, f"expected a number, got {value!r}", kind="not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(field, f"expected a number, got {describe(value)}", kind="not a number")
    if not math.isfinite(value):
        raise FieldError(field, f"{value} is not a finite number", kind="not finite")
    return float(value)


def require_number(value: Any, field: str, from_text: bool = False) -> float:
    number = to_number(value, field, from_text)
    if number is None:
        raise FieldError(field, "expected a number, got null", kind="missing")
    return number


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def message(item: Any, field: str) -> Message:
    """One chat turn from ``{"role", "content"}`` or ShareGPT ``{"from", "value"}``."""
    if not isinstance(item, dict):
        raise FieldError(field, f"expected a message object, got {describe(item)}", kind="bad message")
    role = item.get("role", item.get("from"))
    content = item.get("content", item.get("value"))
    if not isinstance(role, str):
        raise FieldError(field, f"message role must be text, got {describe(role)}", kind="bad message")
    role = ROLE_ALIASES.get(role.lower(), role.lower())
    if role not in ROLES:
        raise FieldError(
            field, f"unknown role {role!r} (expected one of {', '.join(ROLES)})", kind="bad message"
        )
    # A prompt turn may be empty (real conversations contain empty user turns); a response may not.
    return {"role": role, "content": require_text(content, f"{field}.content", allow_empty=True)}


def messages(value: Any, field: str) -> list[Message]:
    """A non-empty message list from a list of turns, or a single user turn from text."""
    if isinstance(value, str):
        return [user(require_text(value, field))]
    if not isinstance(value, list) or not value:
        raise FieldError(
            field, f"expected text or a non-empty list of messages, got {describe(value)}", kind="bad prompt"
        )
    turns = [message(item, f"{field}[{i}]") for i, item in enumerate(value)]
    if all(is_blank(t["content"]) for t in turns):
        raise FieldError(field, "every message is empty", kind="empty text")
    return turns


def merge_same_role(turns: list[Message]) -> list[Message]:
    """Join consecutive turns of one role (some transcripts repeat ``Assistant:``); templates expect alternation."""
    merged: list[Message] = []
    for turn in turns:
        if merged and merged[-1]["role"] == turn["role"]:
            merged[-1] = {"role": turn["role"], "content": merged[-1]["content"] + "\n\n" + turn["content"]}
        else:
            merged.append(dict(turn))
    return merged


def parse_hh_transcript(text: str, field: str, merge: bool = True) -> list[Message]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> ``[user a, assistant b]`` (Anthropic HH format).

    Turn text is stripped; consecutive turns of one role are merged unless ``merge`` is False. A
    trailing empty ``Assistant:`` (a prompt that ends where the response would start) is dropped.
    """
    pieces = HH_TURN.split(text)
    if pieces[0].strip():
        raise FieldError(
            field, "transcript does not start with 'Human:' or 'Assistant:'", kind="bad transcript"
        )
    turns = [
        {"role": "user" if role == "Human" else "assistant", "content": content.strip()}
        for role, content in zip(pieces[1::2], pieces[2::2], strict=True)
    ]
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()
    if not turns:
        raise FieldError(field, "transcript has no turns", kind="bad transcript")
    return merge_same_role(turns) if merge else turns


def split_hh_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH transcripts into (shared prompt transcript, chosen reply, rejected reply).

    The prompt is the longest common prefix cut back to its last ``\\n\\nAssistant:`` marker; the
    replies are what follows it. Replies that still contain a ``Human:`` turn mean the two
    transcripts diverged before the last assistant turn; that is a data problem, not a pair.
    """
    marker = "\n\nAssistant:"
    common = 0
    limit = min(len(chosen), len(rejected))
    while common < limit and chosen[common] == rejected[common]:
        common += 1
    cut = chosen.rfind(marker, 0, common)
    if cut < 0:
        raise FieldError(
            "chosen", "chosen and rejected share no prompt ending in 'Assistant:'", kind="bad transcript"
        )
    start = cut + len(marker)
    chosen_reply, rejected_reply = chosen[start:].strip(), rejected[start:].strip()
    for name, reply in (("chosen", chosen_reply), ("rejected", rejected_reply)):
        if "\n\nHuman:" in reply:
            raise FieldError(
                name,
                "chosen and rejected transcripts diverge before the last assistant turn",
                kind="diverging transcripts",
            )
    return chosen[:start], chosen_reply, rejected_reply


def parse_helpsteer2_prompt(text: str) -> list[Message]:
    """HelpSteer2 writes multi-turn prompts as ``u1<extra_id_1>Assistant\\na1<extra_id_1>User\\nu2``."""
    pieces = HELPSTEER2_TURN.split(text)
    turns = [user(pieces[0].strip())]
    for role, content in zip(pieces[1::2], pieces[2::2], strict=True):
        turns.append({"role": role.lower(), "content": content.strip()})
    return merge_same_role(turns)


def parse_dialogue(text: str, user_tag: str = "User:", assistant_tag: str = "Assistant:") -> list[Message]:
    """``"User: q\\n\\nAssistant: a\\n\\nUser: q2\\n\\nAssistant: "`` -> turns (trailing empty assistant dropped)."""
    pattern = re.compile(rf"(?:^|\n\n)({re.escape(user_tag)}|{re.escape(assistant_tag)})[ \t]?")
    pieces = pattern.split(text.strip())
    turns = [
        {"role": "user" if tag == user_tag else "assistant", "content": content.strip()}
        for tag, content in zip(pieces[1::2], pieces[2::2], strict=True)
    ]
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()
    return merge_same_role(turns) if turns else [user(text.strip())]


def json_list(value: Any, field: str) -> list[Any]:
    """A list, or a JSON-encoded list in a string (Chatbot Arena stores turns that way)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise FieldError(
                field, f"malformed JSON-encoded list: {exc.msg}", kind="malformed JSON"
            ) from None
    if not isinstance(value, list):
        raise FieldError(field, f"expected a list, got {describe(value)}", kind="not a list")
    return value


def response_text(value: Any, field: str, allow_blank: bool = False) -> tuple[str, list[Message] | None]:
    """A response given as text, or as a conversation whose last turn (assistant) is the response.

    Returns the response text and, for a conversation, the turns before it (else None). Blank text
    is an error unless ``allow_blank`` (see :func:`require_response`).
    """
    if isinstance(value, list):
        turns = [message(item, f"{field}[{i}]") for i, item in enumerate(value)]
        if not turns or turns[-1]["role"] != "assistant":
            raise FieldError(
                field,
                "a conversation given as a response must end with an assistant turn",
                kind="bad message",
            )
        content = turns[-1]["content"]
        return require_response(content, f"{field}[{len(turns) - 1}].content", allow_blank), turns[:-1]
    return require_response(value, field, allow_blank), None
