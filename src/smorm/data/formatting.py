"""Turn (prompt messages, response text) into token ids with the tokenizer's chat template.

The prompt is rendered with ``add_generation_prompt=True`` and the whole conversation with the
response as the final assistant turn; the response tokens are what follows the rendered prompt.
Truncation keeps the end of the response (the reward is read at the last token) and cuts the
prompt from the left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smorm.types import Message


@dataclass
class EncodedSequence:
    """Token ids of one prompt + response.

    Attributes:
        input_ids: ``[seq]`` token ids, special tokens included, at most ``max_length`` long.
        truncated: True when tokens were cut to fit ``max_length``.
        response_start: index in ``input_ids`` of the first response token (the prompt, with the
            template's generation prompt, is ``input_ids[:response_start]``).
    """

    input_ids: list[int]
    truncated: bool
    response_start: int = 0


def common_prefix_length(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def added_special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer adds before and after a text by itself (``[CLS]``/``[SEP]``, a BOS …)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    return [], []


class Formatter:
    """Chat-template formatting and truncation for reward-model inputs.

    Args:
        tokenizer: a Hugging Face tokenizer whose ``chat_template`` is set.
        max_length: the longest sequence to produce, special tokens included.

    Attributes:
        num_encoded: sequences encoded so far.
        num_truncated: of those, sequences that were cut to ``max_length``.
        num_template_mismatch: sequences whose rendered prompt was not a prefix of the rendered
            conversation (the response then starts where the two renderings first differ).
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"{type(tokenizer).__name__} has no chat_template; set one (the model loader gives plain tokenizers a simple template)"
            )
        if max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.prefix_ids, self.suffix_ids = added_special_tokens(tokenizer)
        if len(self.prefix_ids) + len(self.suffix_ids) >= max_length:
            raise ValueError(f"max_length {max_length} leaves no room besides the tokenizer's special tokens")
        self.num_encoded = 0
        self.num_truncated = 0
        self.num_template_mismatch = 0

    @property
    def pad_id(self) -> int:
        """The pad token id, else the end-of-sequence id (decoder tokenizers often have no pad token)."""
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return int(candidate)
        raise ValueError(
            f"{type(self.tokenizer).__name__} has neither a pad nor an eos token; set tokenizer.pad_token"
        )

    def render(self, prompt: list[Message], response: str) -> tuple[str, int]:
        """The conversation text and the character offset where the response part starts."""
        prompt_text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full_text = self.tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": response}], tokenize=False
        )
        if full_text.startswith(prompt_text):
            return full_text, len(prompt_text)
        # Some templates render the generation prompt differently from a finished assistant turn
        # (or rewrite earlier turns); the response part then starts at the first difference.
        self.num_template_mismatch += 1
        return full_text, common_prefix_length(prompt_text, full_text)

    def encode(self, prompt: list[Message], response: str) -> EncodedSequence:
        """Token ids of ``prompt`` followed by ``response`` as the final assistant turn.

        When too long: the response keeps its end and the prompt is cut from the left; a response
        longer than ``max_length`` alone keeps its last tokens. Special tokens the tokenizer adds
        itself (BOS, ``[CLS]``/``[SEP]``) are always kept.
        """
        text, boundary = self.render(prompt, response)
        prompt_ids, response_ids = self._split_tokens(text, boundary)
        return self._assemble(prompt_ids, response_ids)

    def encode_prompt(self, prompt: list[Message]) -> EncodedSequence:
        """Token ids of the prompt with the generation prompt (for gating features or generation)."""
        text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        prompt_ids, _ = self._split_tokens(text, len(text))
        encoded = self._assemble(prompt_ids, [])
        encoded.response_start = len(encoded.input_ids) - len(self.suffix_ids)
        return encoded

    def _split_tokens(self, text: str, boundary: int) -> tuple[list[int], list[int]]:
        """Tokenize once and split at the character ``boundary``; a token crossing it goes to the prompt."""
        if getattr(self.tokenizer, "is_fast", False):
            encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
            split = next(
                (i for i, (start, end) in enumerate(offsets) if start >= boundary and end > start), len(ids)
            )
            return ids[:split], ids[split:]
        # Slow tokenizers have no offsets: tokenize the two parts separately.
        head = self.tokenizer(text[:boundary], add_special_tokens=False)["input_ids"]
        tail = self.tokenizer(text[boundary:], add_special_tokens=False)["input_ids"]
        return list(head), list(tail)

    def _assemble(self, prompt_ids: list[int], response_ids: list[int]) -> EncodedSequence:
        prefix, suffix = self.prefix_ids, self.suffix_ids
        # A template that already writes the tokenizer's own BOS/EOS must not get it twice; taking
        # it out of the prompt/response also keeps it when the prompt is cut from the left.
        if prefix and prompt_ids[: len(prefix)] == prefix:
            prompt_ids = prompt_ids[len(prefix) :]
        if suffix and response_ids[-len(suffix) :] == suffix:
            response_ids = response_ids[: -len(suffix)]
        elif suffix and not response_ids and prompt_ids[-len(suffix) :] == suffix:
            prompt_ids = prompt_ids[: -len(suffix)]
        budget = self.max_length - len(prefix) - len(suffix)
        truncated = len(prompt_ids) + len(response_ids) > budget
        if truncated:
            if len(response_ids) >= budget:
                prompt_ids, response_ids = [], response_ids[len(response_ids) - budget :]
            else:
                prompt_ids = prompt_ids[len(prompt_ids) - (budget - len(response_ids)) :]
            self.num_truncated += 1
        self.num_encoded += 1
        ids = [*prefix, *prompt_ids, *response_ids, *suffix]
        return EncodedSequence(ids, truncated, response_start=len(prefix) + len(prompt_ids))
