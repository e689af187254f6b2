"""Request bodies of the scoring server, validated strictly (no type coercion, no unknown fields).

Strings are never made from numbers or booleans, and a prompt must have some text: a reward read
off an empty or mistyped request is a silent error in someone's RL run, so it is refused (422).
An empty *response* is accepted: an RL policy can stop at once, and that sample still needs a
reward.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from smorm.data.messages import is_blank


class ChatMessage(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: StrictStr


class ScoreItem(BaseModel):
    """A response to score, with its prompt as text (one user turn) or as chat messages."""

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr | None = None
    messages: list[ChatMessage] | None = None
    response: StrictStr

    @model_validator(mode="after")
    def one_prompt(self) -> ScoreItem:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' (text) or 'messages' (chat turns)")
        if self.prompt is not None and is_blank(self.prompt):
            raise ValueError("'prompt' is empty")
        if self.messages is not None and all(is_blank(message.content) for message in self.messages):
            raise ValueError("'messages' is empty or has no text")
        return self

    def prompt_value(self) -> str | list[dict[str, str]]:
        """The prompt as :meth:`RewardModel.score` takes it."""
        if self.messages is not None:
            return [message.model_dump() for message in self.messages]
        return self.prompt  # type: ignore[return-value]


class ScoreRequest(BaseModel):
    """``POST /score``: items and an optional inference mode (default: the server's)."""

    model_config = ConfigDict(extra="forbid")

    items: list[ScoreItem] = Field(min_length=1)
    mode: StrictStr | None = None


class GetRewardRequest(BaseModel):
    """``POST /get_reward`` as OpenRLHF's remote reward client sends it.

    ``query`` holds full texts (rendered prompt + response). OpenRLHF also sends ``prompts`` and
    ``labels`` (for rule-based rewards); they are checked for type and otherwise unused, as in
    OpenRLHF's own reward-model server.
    """

    model_config = ConfigDict(extra="ignore")

    query: list[StrictStr] = Field(min_length=1)
    prompts: list[StrictStr] | None = None
    labels: list[Any] | None = None

    @model_validator(mode="after")
    def non_empty_queries(self) -> GetRewardRequest:
        blank = [i for i, text in enumerate(self.query) if is_blank(text)]
        if blank:
            raise ValueError(f"query[{blank[0]}] is empty ({len(blank)} empty queries in all)")
        return self


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, ``location: message``, e.g. ``items.2.response: Input should be a valid string``."""
    lines = []
    for problem in error.errors()[:10]:
        location = ".".join(str(part) for part in problem.get("loc", ())) or "body"
        message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{location}: {message}")
    more = error.error_count() - len(lines)
    if more > 0:
        lines.append(f"... and {more} more")
    return "; ".join(lines)
