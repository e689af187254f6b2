"""OpenRLHF-style full-text queries: clean-up, and scores equal to /score on the same conversation."""

from __future__ import annotations

import pytest

from smorm.serve import ServeSettings, create_app
from smorm.serve.inputs import (
    QueryEncoder,
    TokenLimits,
    assistant_turn_closing,
    encode_items,
    generation_marker,
)

CONVERSATIONS = [
    ([{"role": "user", "content": "What is 2 + 2?"}], "4"),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A colour?"}], "Green."),
    ([{"role": "user", "content": "Hello"}], "Hi there!\nHow can I help?"),
]


def rendered(tokenizer, messages, response):
    return tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": response}], tokenize=False)


def test_template_pieces_of_chatml(tiny_tokenizer):
    assert assistant_turn_closing(tiny_tokenizer) == "<|im_end|>\n"
    assert generation_marker(tiny_tokenizer) == "<|im_start|>assistant\n"


def test_normalize_handles_what_a_policy_decodes(tiny_tokenizer):
    encoder = QueryEncoder(tiny_tokenizer, TokenLimits(512, 512))
    full = rendered(tiny_tokenizer, *CONVERSATIONS[0])
    body = full[: -len("<|im_end|>\n")]
    assert encoder.normalize(full) == full  # already what the template writes
    assert encoder.normalize(body + "<|im_end|>" + "<|pad|>" * 3) == full  # EOS then right padding
    assert encoder.normalize("<|pad|>" * 2 + body + "<|im_end|>") == full  # left padding, EOS, no newline
    assert encoder.normalize(body) == full  # cut at the generation budget: no EOS at all
    assert encoder.normalize(body + "<|pad|><|im_end|><|pad|>") == full


def test_query_tokens_equal_item_tokens(tiny_tokenizer):
    limits = TokenLimits(512, 512)
    items = encode_items(tiny_tokenizer, [m for m, _ in CONVERSATIONS], [r for _, r in CONVERSATIONS], limits)
    queries = QueryEncoder(tiny_tokenizer, limits).encode(
        [rendered(tiny_tokenizer, m, r)[: -len("\n")] + "<|pad|>" for m, r in CONVERSATIONS]
    )
    assert [q.input_ids for q in queries] == [i.input_ids for i in items]
    assert [q.response_start for q in queries] == [i.response_start for i in items]


def test_query_truncation_keeps_the_end_like_the_formatter(tiny_tokenizer):
    messages, response = [{"role": "user", "content": "x" * 200}], "the end"
    limits = TokenLimits(max_item_tokens=1000, model_max_length=64)
    item = encode_items(tiny_tokenizer, [messages], [response], limits)[0]
    query = QueryEncoder(tiny_tokenizer, limits).encode([rendered(tiny_tokenizer, messages, response)])[0]
    assert len(item.input_ids) == 64 and query.input_ids == item.input_ids
    with pytest.raises(ValueError, match=r"items\[0\] has more than 100 tokens"):
        encode_items(tiny_tokenizer, [messages], [response], TokenLimits(100, 64))


def test_get_reward_equals_score_on_the_same_conversations(reward_model):
    from fastapi.testclient import TestClient

    tokenizer = reward_model.tokenizer
    queries = [
        rendered(tokenizer, *CONVERSATIONS[0]),
        rendered(tokenizer, *CONVERSATIONS[1])[: -len("<|im_end|>\n")] + "<|im_end|><|pad|><|pad|>",
        rendered(tokenizer, *CONVERSATIONS[2])[: -len("<|im_end|>\n")],
    ]
    for mode in ("F", "M"):
        expected = reward_model.score([m for m, _ in CONVERSATIONS], [r for _, r in CONVERSATIONS], mode=mode).reward
        with TestClient(create_app(reward_model, ServeSettings(mode=mode))) as client:
            answer = client.post("/get_reward", json={"query": queries, "prompts": ["ignored"] * 3,
                                                      "labels": [None, 1, "x"]})
            scored = client.post("/score", json={"items": [{"messages": m, "response": r} for m, r in CONVERSATIONS]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["rewards"] == pytest.approx(expected, abs=1e-5)
        assert answer.json()["rewards"] == pytest.approx([row["reward"] for row in scored.json()["results"]], abs=1e-5)
