"""Formatter.encode_pair: both responses of a pair cut at the same prompt start.

Token counts with the tiny byte-level tokenizer (one token per byte, ``<|im_start|>``/``<|im_end|>``
one token each): the prompt ``<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n`` is 21
tokens, the reply ``yo<|im_end|>\\n`` is 4 and ``abcdef<|im_end|>\\n`` is 8.
"""

from __future__ import annotations

from smorm.data import Formatter
from smorm.models.backbone import embedded_backbone_path

PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
HI = [{"role": "user", "content": "hi"}]


def test_long_prompt_pair_shares_an_identical_prefix(tiny_tokenizer):
    formatter = Formatter(tiny_tokenizer, max_length=12)
    chosen, rejected = formatter.encode_pair(HI, "yo", "abcdef")
    # Room for 12 - 8 = 4 prompt tokens beside the longer reply: "ant\n" for both.
    assert tiny_tokenizer.decode(chosen.input_ids) == "ant\nyo<|im_end|>\n"
    assert tiny_tokenizer.decode(rejected.input_ids) == "ant\nabcdef<|im_end|>\n"
    assert chosen.response_start == rejected.response_start == 4
    assert chosen.input_ids[:4] == rejected.input_ids[:4]
    assert chosen.truncated and rejected.truncated
    assert (formatter.num_encoded, formatter.num_truncated) == (2, 2)
    # encode() alone cuts each at its own start: the chosen one keeps 8 prompt tokens, "sistant\n".
    alone = Formatter(tiny_tokenizer, max_length=12).encode(HI, "yo")
    assert tiny_tokenizer.decode(alone.input_ids) == "sistant\nyo<|im_end|>\n"


def test_pair_that_fits_is_encoded_as_encode_does(tiny_tokenizer):
    formatter = Formatter(tiny_tokenizer, max_length=64)
    chosen, rejected = formatter.encode_pair(HI, "yo", "abcdef")
    reference = Formatter(tiny_tokenizer, max_length=64)
    assert chosen == reference.encode(HI, "yo")
    assert rejected == reference.encode(HI, "abcdef")
    assert len(chosen.input_ids) == 25 and len(rejected.input_ids) == 29
    assert (formatter.num_encoded, formatter.num_truncated) == (2, 0)


def test_only_the_longer_sequence_too_long_still_cuts_both_prompts(tiny_tokenizer):
    # 21 + 4 = 25 fits in 27; 21 + 8 = 29 does not: both keep the last 27 - 8 = 19 prompt tokens.
    formatter = Formatter(tiny_tokenizer, max_length=27)
    chosen, rejected = formatter.encode_pair(HI, "yo", "abcdef")
    assert chosen.response_start == rejected.response_start == 19
    assert chosen.input_ids[:19] == rejected.input_ids[:19]
    assert len(chosen.input_ids) == 23 and len(rejected.input_ids) == 27
    # the first two prompt tokens, <|im_start|> and "u", are cut from both
    assert tiny_tokenizer.decode(chosen.input_ids[:19]) == "ser\nhi<|im_end|>\n<|im_start|>assistant\n"
    # the chosen sequence lost its first two prompt tokens, so it counts as truncated too
    assert chosen.truncated and rejected.truncated and formatter.num_truncated == 2


def test_response_longer_than_max_length_leaves_each_sequence_on_its_own(tiny_tokenizer):
    formatter = Formatter(tiny_tokenizer, max_length=10)
    chosen, rejected = formatter.encode_pair(HI, "yo", "abcdefghijklmnop")  # 16 + 2 reply tokens > 10
    assert tiny_tokenizer.decode(rejected.input_ids) == "ijklmnop<|im_end|>\n"
    assert rejected.response_start == 0
    # the chosen sequence keeps as much prompt as fits beside its own reply: 10 - 4 = 6 tokens
    assert tiny_tokenizer.decode(chosen.input_ids) == "stant\nyo<|im_end|>\n"
    assert chosen.response_start == 6
    assert (formatter.num_encoded, formatter.num_truncated) == (2, 2)


def test_encoder_tokenizer_pair_keeps_its_special_tokens_and_shares_the_prompt():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_backbone_path("minilm-l6"))
    tokenizer.chat_template = PLAIN_TEMPLATE
    formatter = Formatter(tokenizer, max_length=12)
    prompt = [{"role": "user", "content": "one two three four five six seven"}]
    chosen, rejected = formatter.encode_pair(prompt, "general kenobi", "hi")
    # 12 - [CLS] - [SEP] - 4 tokens of the longer reply = 6 prompt tokens for both.
    shared = ["[CLS]", "four", "five", "six", "seven", "assistant", ":"]
    assert tokenizer.convert_ids_to_tokens(chosen.input_ids) == [*shared, "general", "ken", "##ob", "##i", "[SEP]"]
    assert tokenizer.convert_ids_to_tokens(rejected.input_ids) == [*shared, "hi", "[SEP]"]
    assert chosen.response_start == rejected.response_start == 7
