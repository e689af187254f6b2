"""Chat-template formatting and truncation, with token counts worked out by hand.

The tiny tokenizer is byte-level without merges: one token per byte, and ``<|im_start|>`` /
``<|im_end|>`` one token each. So ``<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n`` is
1 + 4 + 1 + 2 + 1 + 1 + 1 + 9 + 1 = 21 tokens and the reply ``yo<|im_end|>\\n`` is 2 + 1 + 1 = 4.
"""

from __future__ import annotations

import pytest

from smorm.data import Formatter
from smorm.models.backbone import embedded_backbone_path
from smorm.testing import tiny_tokenizer

PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
HI = [{"role": "user", "content": "hi"}]


def test_prompt_and_response_tokens(tiny_tokenizer):
    formatter = Formatter(tiny_tokenizer, max_length=64)
    encoded = formatter.encode(HI, "yo")
    assert len(encoded.input_ids) == 25 and encoded.response_start == 21 and not encoded.truncated
    assert (
        tiny_tokenizer.decode(encoded.input_ids[:21])
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tiny_tokenizer.decode(encoded.input_ids[21:]) == "yo<|im_end|>\n"
    assert formatter.pad_id == tiny_tokenizer.pad_token_id
    assert Formatter(tiny_tokenizer, max_length=25).encode(HI, "yo").truncated is False  # exactly fits


def test_overlong_prompt_is_cut_from_the_left(tiny_tokenizer):
    formatter = Formatter(tiny_tokenizer, max_length=10)
    encoded = formatter.encode(HI, "yo")
    # 10 = the 4 reply tokens + the last 6 prompt tokens ("stant\n").
    assert tiny_tokenizer.decode(encoded.input_ids) == "stant\nyo<|im_end|>\n"
    assert encoded.truncated and encoded.response_start == 6
    assert (formatter.num_encoded, formatter.num_truncated) == (1, 1)


def test_overlong_response_keeps_its_end(tiny_tokenizer):
    formatter = Formatter(tiny_tokenizer, max_length=10)
    encoded = formatter.encode(HI, "abcdefghijklmnop")  # 16 + 2 reply tokens > 10
    assert tiny_tokenizer.decode(encoded.input_ids) == "ijklmnop<|im_end|>\n"
    assert encoded.response_start == 0 and encoded.truncated


def test_encode_prompt_ends_with_the_generation_prompt(tiny_tokenizer):
    encoded = Formatter(tiny_tokenizer, max_length=64).encode_prompt(HI)
    assert len(encoded.input_ids) == 21 and encoded.response_start == 21


def test_template_whose_prompt_is_not_a_prefix_of_the_conversation():
    tokenizer = tiny_tokenizer()
    # The generation prompt writes "A:\n" but a finished assistant turn is written "A: <reply>".
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}U: {{ m['content'] }}\n{% else %}A: {{ m['content'] }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}A:\n{% endif %}"
    )
    formatter = Formatter(tokenizer, max_length=64)
    encoded = formatter.encode(HI, "yo")
    # Rendered prompt "U: hi\nA:\n", conversation "U: hi\nA: yo\n": they agree on "U: hi\nA:" (8 chars).
    assert tokenizer.decode(encoded.input_ids[: encoded.response_start]) == "U: hi\nA:"
    assert tokenizer.decode(encoded.input_ids[encoded.response_start :]) == " yo\n"
    assert formatter.num_template_mismatch == 1


def test_bert_tokenizer_keeps_its_own_special_tokens():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_backbone_path("minilm-l6"))
    tokenizer.chat_template = PLAIN_TEMPLATE
    formatter = Formatter(tokenizer, max_length=12)
    encoded = formatter.encode([{"role": "user", "content": "hello there"}], "general kenobi")
    tokens = tokenizer.convert_ids_to_tokens(encoded.input_ids)
    assert tokens == [
        "[CLS]",
        "user",
        ":",
        "hello",
        "there",
        "assistant",
        ":",
        "general",
        "ken",
        "##ob",
        "##i",
        "[SEP]",
    ]
    assert encoded.response_start == 7 and not encoded.truncated
    long_prompt = [{"role": "user", "content": "one two three four five six seven"}]
    cut = tokenizer.convert_ids_to_tokens(formatter.encode(long_prompt, "general kenobi").input_ids)
    # 12 - [CLS] - [SEP] - 4 reply tokens = 6 prompt tokens, taken from the right.
    assert cut == [
        "[CLS]",
        "four",
        "five",
        "six",
        "seven",
        "assistant",
        ":",
        "general",
        "ken",
        "##ob",
        "##i",
        "[SEP]",
    ]


def test_tokenizer_without_chat_template_is_refused():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="has no chat_template"):
        Formatter(tokenizer, max_length=16)


def test_template_writing_the_tokenizers_own_bos_gets_it_once_even_when_cut():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_backbone_path("minilm-l6"))
    tokenizer.chat_template = "[CLS]" + PLAIN_TEMPLATE
    formatter = Formatter(tokenizer, max_length=12)
    long_prompt = [{"role": "user", "content": "one two three four five six seven"}]
    tokens = tokenizer.convert_ids_to_tokens(formatter.encode(long_prompt, "general kenobi").input_ids)
    assert tokens == [
        "[CLS]",
        "four",
        "five",
        "six",
        "seven",
        "assistant",
        ":",
        "general",
        "ken",
        "##ob",
        "##i",
        "[SEP]",
    ]
