"""Turn request items into token ids, with the server's per-item token limit.

Two input shapes reach a reward server:

* ``/score`` items: a prompt (text or chat messages) and a response. They are formatted exactly
  as :meth:`RewardModel.score` and :func:`~smorm.models.composite.score_responses` format them
  (:class:`~smorm.data.formatting.Formatter` with the scorer's tokenizer), so the server's scores
  equal ``smorm score`` on the same inputs, whichever scorer is served.
* ``/get_reward`` queries (OpenRLHF's remote reward model): one string per sample holding the
  prompt AND the response, already rendered with a chat template. OpenRLHF's own ``serve_rm``
  strips pad and EOS tokens from both ends of the text, appends one EOS and tokenizes the whole
  string. We do the same kind of clean-up but close the text the way the reward model's own chat
  template closes an assistant turn (e.g. ``<|im_end|>\\n`` for ChatML), so that a query rendered
  with the reward model's template scores exactly like ``/score`` on the same conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smorm.data.formatting import EncodedSequence, Formatter
from smorm.types import Message

PROBE_PROMPT = "smorm-probe-prompt"
PROBE_RESPONSE = "smorm-probe-response"


class ItemTooLong(ValueError):
    """An item has more tokens than the server accepts."""

    def __init__(self, index: int, limit: int, count: int | None = None) -> None:
        self.index = index
        self.limit = limit
        self.count = count
        counted = f"{count} tokens" if count is not None else f"more than {limit} tokens"
        super().__init__(f"items[{index}] has {counted}; the limit is {limit} tokens per item (--max-item-tokens)")


@dataclass
class TokenLimits:
    """How long an item may be.

    Attributes:
        max_item_tokens: items longer than this are refused (422), never silently cut.
        model_max_length: the model's own budget (``RewardModelConfig.max_length``); an accepted item
            longer than this is truncated exactly as ``smorm score`` truncates it (the end of the
            response is kept, the prompt is cut from the left).
    """

    max_item_tokens: int
    model_max_length: int


def assistant_turn_closing(tokenizer: Any) -> str:
    """The text a chat template writes after an assistant message (``"<|im_end|>\\n"`` for ChatML).

    Found by rendering a probe conversation; ``""`` when the template does not show the response
    verbatim (then ``/get_reward`` queries are scored as sent, after pad/EOS clean-up).
    """
    conversation = [{"role": "user", "content": PROBE_PROMPT}, {"role": "assistant", "content": PROBE_RESPONSE}]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    position = text.rfind(PROBE_RESPONSE)
    return "" if position < 0 else text[position + len(PROBE_RESPONSE) :]


def generation_marker(tokenizer: Any) -> str:
    """The text a chat template writes to open the assistant's turn (``"<|im_start|>assistant\\n"``)."""
    conversation = [{"role": "user", "content": PROBE_PROMPT}]
    with_marker = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(conversation, tokenize=False)
    return with_marker[len(without) :] if with_marker.startswith(without) else ""


def encode_items(
    tokenizer: Any,
    prompts: Sequence[str | list[Message]],
    responses: Sequence[str],
    limits: TokenLimits,
) -> list[EncodedSequence]:
    """Token ids of each (prompt, response), formatted as :meth:`RewardModel.score` formats them.

    Raises:
        ItemTooLong: the first item with more than ``limits.max_item_tokens`` tokens.
    """
    checker = Formatter(tokenizer, limits.max_item_tokens)
    model_formatter = Formatter(tokenizer, limits.model_max_length)
    encoded_items: list[EncodedSequence] = []
    for index, (prompt, response) in enumerate(zip(prompts, responses)):
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        encoded = checker.encode(messages, response)
        if encoded.truncated:
            raise ItemTooLong(index, limits.max_item_tokens)
        if len(encoded.input_ids) > limits.model_max_length:
            # Accepted but longer than the model's budget: cut it as `smorm score` would.
            encoded = model_formatter.encode(messages, response)
        encoded_items.append(encoded)
    return encoded_items


class QueryEncoder:
    """Token ids of OpenRLHF-style full-text queries (prompt and response in one rendered string).

    The response is taken to start after the last assistant-turn opening the template writes
    (``<|im_start|>assistant\\n`` for ChatML); only a gated model (mode G) uses that boundary.

    Args:
        tokenizer: the reward model's tokenizer (chat template set).
        limits: token limits, as for ``/score`` items.
    """

    def __init__(self, tokenizer: Any, limits: TokenLimits) -> None:
        self.tokenizer = tokenizer
        self.limits = limits
        self.closing = assistant_turn_closing(tokenizer)
        self.marker = generation_marker(tokenizer)
        self.pad_token: str | None = tokenizer.pad_token
        self.eos_token: str | None = tokenizer.eos_token

    def normalize(self, query: str) -> str:
        """Strip padding and trailing EOS, then close the assistant turn as the template does.

        A policy's decoded sample may be left-padded, end in EOS followed by pads, or stop without
        EOS (cut at the generation budget); all three become ``rendered prompt + response + closing``.
        """
        text = query
        if self.pad_token:
            while text.startswith(self.pad_token):
                text = text[len(self.pad_token) :]
        trailing = [token for token in (self.pad_token, self.eos_token) if token]
        stripped = True
        while stripped:
            stripped = False
            for token in trailing:
                if text.endswith(token):
                    text = text[: -len(token)]
                    stripped = True
        if not self.closing or text.endswith(self.closing):
            return text
        closing_token = self.closing.rstrip()
        if closing_token and text.endswith(closing_token):
            # The end-of-turn token is there (it is not the EOS we strip) but its trailing
            # whitespace was dropped by the client's decoding.
            return text + self.closing[len(closing_token) :]
        return text + self.closing

    def response_boundary(self, text: str) -> int:
        """Character offset where the response starts: after the last assistant-turn opening, else 0."""
        if not self.marker:
            return 0
        position = text.rfind(self.marker)
        return 0 if position < 0 else position + len(self.marker)

    def encode(self, queries: Sequence[str]) -> list[EncodedSequence]:
        """Token ids of each normalized query, split, truncated and given special tokens as
        :class:`~smorm.data.formatting.Formatter` does for a (prompt, response).

        Raises:
            ItemTooLong: the first query with more than ``limits.max_item_tokens`` tokens.
        """
        checker = Formatter(self.tokenizer, self.limits.max_item_tokens)
        model_formatter = Formatter(self.tokenizer, self.limits.model_max_length)
        encoded_items: list[EncodedSequence] = []
        for index, query in enumerate(queries):
            text = self.normalize(query)
            prompt_ids, response_ids = checker._split_tokens(text, self.response_boundary(text))
            encoded = checker._assemble(prompt_ids, response_ids)
            if encoded.truncated:
                raise ItemTooLong(index, self.limits.max_item_tokens)
            if len(encoded.input_ids) > self.limits.model_max_length:
                encoded = model_formatter._assemble(prompt_ids, response_ids)
            encoded_items.append(encoded)
        return encoded_items
