"""Turn (prompt messages, response text) into token ids with the tokenizer's chat template.

The prompt is rendered with ``add_generation_prompt=True`` and the whole conversation with the
response as the final assistant turn; the response tokens are what follows the rendered prompt.
Truncation keeps the end of the response (the reward is read at the last token) and cuts the
prompt from the left. A preference pair is cut at one prompt start for both responses
(:meth:`Formatter.encode_pair`), so chosen and rejected share an identical prompt prefix and the
prompt can be encoded once (issue 8, shared-prompt packing).
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

    def encode_pair(
        self, prompt: list[Message], chosen: str, rejected: str
    ) -> tuple[EncodedSequence, EncodedSequence]:
        """Encode both responses of a preference pair, cut at the same prompt start.

        When either sequence is too long, both keep the same last prompt tokens: as many as fit
        beside the longer response (``max_length - specials - max(len(chosen), len(rejected))``), so
        ``chosen.input_ids[:response_start] == rejected.input_ids[:response_start]`` and the prompt
        can be packed once. A pair that fits is encoded exactly as :meth:`encode` would. A response
        that fills ``max_length`` alone, or a template whose two renderings tokenise the prompt
        differently, leaves each sequence encoded on its own (the pair then shares no prompt).
        A sequence counts as truncated when any of its tokens was cut.
        """
        parts = []
        for response in (chosen, rejected):
            text, boundary = self.render(prompt, response)
            parts.append(self._strip_specials(*self._split_tokens(text, boundary)))
        (chosen_prompt, chosen_response), (rejected_prompt, rejected_response) = parts
        shared_budget = self._budget - max(len(chosen_response), len(rejected_response))
        if chosen_prompt != rejected_prompt or shared_budget <= 0:
            return (self._fit(chosen_prompt, chosen_response, self._budget - len(chosen_response)),
                    self._fit(rejected_prompt, rejected_response, self._budget - len(rejected_response)))
        return (self._fit(chosen_prompt, chosen_response, shared_budget),
                self._fit(rejected_prompt, rejected_response, shared_budget))

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

    @property
    def _budget(self) -> int:
        """Tokens left for prompt + response besides the tokenizer's own special tokens."""
        return self.max_length - len(self.prefix_ids) - len(self.suffix_ids)

    def _assemble(self, prompt_ids: list[int], response_ids: list[int]) -> EncodedSequence:
        prompt_ids, response_ids = self._strip_specials(prompt_ids, response_ids)
        return self._fit(prompt_ids, response_ids, self._budget - len(response_ids))

    def _strip_specials(self, prompt_ids: list[int], response_ids: list[int]) -> tuple[list[int], list[int]]:
        prefix, suffix = self.prefix_ids, self.suffix_ids
        # A template that already writes the tokenizer's own BOS/EOS must not get it twice; taking
        # it out of the prompt/response also keeps it when the prompt is cut from the left.
        if prefix and prompt_ids[: len(prefix)] == prefix:
            prompt_ids = prompt_ids[len(prefix) :]
        if suffix and response_ids[-len(suffix) :] == suffix:
            response_ids = response_ids[: -len(suffix)]
        elif suffix and not response_ids and prompt_ids[-len(suffix) :] == suffix:
            prompt_ids = prompt_ids[: -len(suffix)]
        return prompt_ids, response_ids

    def _fit(self, prompt_ids: list[int], response_ids: list[int], prompt_budget: int) -> EncodedSequence:
        """Keep the last ``prompt_budget`` prompt tokens (a response filling the budget alone keeps
        its last tokens and no prompt), add the special tokens, and count the sequence."""
        budget = self._budget
        kept_prompt, kept_response = prompt_ids, response_ids
        if len(response_ids) >= budget:
            kept_prompt, kept_response = [], response_ids[len(response_ids) - budget :]
        else:
            keep = max(0, min(len(prompt_ids), prompt_budget, budget - len(response_ids)))
            kept_prompt = prompt_ids[len(prompt_ids) - keep :]
        truncated = len(kept_prompt) < len(prompt_ids) or len(kept_response) < len(response_ids)
        self.num_truncated += int(truncated)
        self.num_encoded += 1
        ids = [*self.prefix_ids, *kept_prompt, *kept_response, *self.suffix_ids]
        return EncodedSequence(ids, truncated, response_start=len(self.prefix_ids) + len(kept_prompt))
