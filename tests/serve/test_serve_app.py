"""The scoring server in-process: scores equal RewardModel.score, bad input gets the right status."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from smorm.serve import ServeSettings, create_app

ITEMS = [
    {"prompt": "What is 2 + 2?", "response": "4"},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
                  {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another?"}],
     "response": "Green, like grass."},
    {"prompt": "Say nothing.", "response": ""},
    {"prompt": "Tell me about the sea.", "response": "The sea is wide and deep. " * 3},
]


def prompts_and_responses(items):
    prompts = [item.get("prompt", item.get("messages")) for item in items]
    return prompts, [item["response"] for item in items]


def client_for(model, **settings):
    from fastapi.testclient import TestClient

    return TestClient(create_app(model, ServeSettings(**settings)))


@pytest.mark.parametrize("mode", ["F", "L", "M"])
def test_served_scores_equal_model_score(reward_model, mode):
    expected = reward_model.score(*prompts_and_responses(ITEMS), mode=mode).rows()
    with client_for(reward_model) as client:
        answer = client.post("/score", json={"items": ITEMS, "mode": mode})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["mode"] == mode
    for got, want in zip(body["results"], expected, strict=True):
        assert got["reward"] == pytest.approx(want["reward"], abs=1e-5)
        for key in ("F", "L", "M"):
            assert got[key] == pytest.approx(want[key], abs=1e-5)
        assert set(got["attributes"]) == {"helpfulness", "correctness", "verbosity"}
        for name, value in want["attributes"].items():
            assert got["attributes"][name] == pytest.approx(value, abs=1e-5)
    # The mode picks the reward: F is the single head, L the attribute mean.
    assert body["results"][0]["reward"] == pytest.approx(body["results"][0][mode], abs=1e-6)


def test_default_mode_is_the_servers(reward_model):
    with client_for(reward_model, mode="L") as client:
        body = client.post("/score", json={"items": ITEMS[:1]}).json()
    assert body["mode"] == "L"
    assert body["results"][0]["reward"] == pytest.approx(body["results"][0]["L"], abs=1e-6)


def test_health_and_info(reward_model):
    with client_for(reward_model, max_items=8) as client:
        assert client.get("/health").json()["status"] == "ok"
        info = client.get("/info").json()
    assert info["attributes"] == ["helpfulness", "correctness", "verbosity"]
    assert info["modes"] == ["F", "L", "M"]  # no gate head: no G
    assert info["backbone"] == reward_model.config.backbone
    assert info["limits"]["max_items"] == 8
    assert info["limits"]["max_item_tokens"] == reward_model.config.max_length


LONG_PROMPT = "word " * 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe{}", 400, "not valid JSON"),
        (b"[1, 2]", 422, "valid dictionary"),
        (b'{"items": "hello"}', 422, "items: Input should be a valid list"),
        (b'{"items": []}', 422, "items"),
        (b'{"items": [{"prompt": 5, "response": "x"}]}', 422, "items.0.prompt"),
        (b'{"items": [{"prompt": "hi", "response": true}]}', 422, "items.0.response"),
        (b'{"items": [{"prompt": "hi", "response": null}]}', 422, "items.0.response"),
        (b'{"items": [{"prompt": "hi"}]}', 422, "response: Field required"),
        (b'{"items": [{"prompt": "", "response": "x"}]}', 422, "'prompt' is empty"),
        (b'{"items": [{"prompt": "  \\n ", "response": "x"}]}', 422, "'prompt' is empty"),
        (b'{"items": [{"messages": [], "response": "x"}]}', 422, "'messages' is empty"),
        (b'{"items": [{"messages": [{"role": "user", "content": ""}], "response": "x"}]}', 422, "no text"),
        (b'{"items": [{"messages": [{"role": "robot", "content": "hi"}], "response": "x"}]}', 422, "role"),
        (b'{"items": [{"prompt": "a", "messages": [{"role": "user", "content": "b"}], "response": "x"}]}', 422,
         "exactly one"),
        (b'{"items": [{"prompt": "a", "respons": "x"}]}', 422, "respons"),
        (b'{"items": [{"prompt": "a", "response": "x"}], "mode": "Z"}', 422, "mode 'Z' is not available"),
        (b'{"items": [{"prompt": "a", "response": "x"}], "mode": 1}', 422, "mode"),
        (json.dumps({"items": [{"prompt": "a", "response": "b"}] * 9}).encode(), 422, "limit of 8 (--max-items)"),
        (json.dumps({"items": [{"prompt": LONG_PROMPT, "response": "b"}]}).encode(), 422, "--max-item-tokens"),
        (json.dumps({"items": [{"prompt": "a" * 5000, "response": "b"}]}).encode(), 413, "--max-body-bytes"),
    ],
)
def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(reward_model, body, status, message):
    with client_for(reward_model, max_items=8, max_body_bytes=4096) as client:
        answer = client.post("/score", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == status, answer.text
        assert message in answer.json()["detail"]
        after = client.post("/score", json={"items": ITEMS[:1]})
        assert after.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"query": "one text"}', 422, "query: Input should be a valid list"),
        (b'{"query": []}', 422, "query"),
        (b'{"query": ["fine", ""]}', 422, "query[1] is empty"),
        (b'{"query": [3]}', 422, "query.0"),
        (b'{"prompts": ["x"]}', 422, "query: Field required"),
        (json.dumps({"query": ["x"] * 9}).encode(), 422, "9 queries"),
        (json.dumps({"query": [LONG_PROMPT]}).encode(), 422, "query[0]"),
    ],
)
def test_bad_get_reward_requests(reward_model, body, status, message):
    with client_for(reward_model, max_items=8) as client:
        answer = client.post("/get_reward", content=body)
        assert answer.status_code == status, answer.text
        assert message in answer.json()["detail"]
        assert client.post("/get_reward", json={"query": ["hello"]}).status_code == 200


def test_bearer_token(reward_model):
    good = {"Authorization": "Bearer s3cret-token"}
    with client_for(reward_model, token="s3cret-token") as client:
        assert client.get("/health").status_code == 200  # health checks need no token
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"},
                        {"Authorization": "Bearer s3cret-token-and-more"}):
            for method, path, kwargs in (("post", "/score", {"json": {"items": ITEMS[:1]}}),
                                         ("post", "/get_reward", {"json": {"query": ["x"]}}),
                                         ("get", "/info", {})):
                answer = getattr(client, method)(path, headers=headers, **kwargs)
                assert answer.status_code == 401, (headers, path)
                assert answer.headers["www-authenticate"] == "Bearer"
        assert client.post("/score", json={"items": ITEMS[:1]}, headers=good).status_code == 200
        assert client.get("/info", headers=good).status_code == 200


def test_unknown_paths_and_methods(reward_model):
    with client_for(reward_model) as client:
        assert client.get("/score").status_code == 405
        assert client.get("/nothing").status_code == 404
        assert client.get("/docs").status_code == 404  # no interactive docs exposed


def test_settings_are_checked(reward_model):
    with pytest.raises(ValueError, match="max_items"):
        create_app(reward_model, ServeSettings(max_items=10, max_queue=5))
    with pytest.raises(ValueError, match="not available"):
        create_app(reward_model, ServeSettings(mode="G"))
    with pytest.raises(ValueError, match="token is empty"):
        create_app(reward_model, ServeSettings(token=" "))


# ---------------------------------------------------------------- concurrency, in one event loop


async def _post_many(app, bodies):
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await asyncio.gather(*(client.post("/score", json=body) for body in bodies))


def _running(app):
    """ASGITransport runs no lifespan: start the worker by hand."""
    app.state.batcher.start()
    return app


def test_concurrent_requests_are_gathered_into_batches(reward_model):
    app = _running(create_app(reward_model, ServeSettings(max_batch_size=8, max_wait_ms=200)))
    try:
        bodies = [{"items": [item]} for item in ITEMS * 4]  # 16 one-item requests
        answers = asyncio.run(_post_many(app, bodies))
    finally:
        app.state.batcher.stop()
    stats = app.state.batcher.stats
    assert [a.status_code for a in answers] == [200] * 16
    assert stats.requests == 16 and stats.sequences == 16
    assert stats.batches < 16 and stats.largest_batch > 1  # gathered, never more than the batch size
    assert stats.largest_batch <= 8
    expected = reward_model.score(*prompts_and_responses(ITEMS * 4)).reward
    got = [a.json()["results"][0]["reward"] for a in answers]
    assert got == pytest.approx(expected, abs=1e-5)


def test_full_queue_answers_503_then_recovers(reward_model):
    app = _running(create_app(reward_model, ServeSettings(max_queue=4, max_items=4, max_wait_ms=0)))
    batcher = app.state.batcher
    score = batcher.score_fn

    def slow_score(sequences):
        time.sleep(1.0)  # long enough that the three requests all arrive while it runs
        return score(sequences)

    batcher.score_fn = slow_score
    try:
        two = {"items": ITEMS[:2]}
        answers = asyncio.run(_post_many(app, [two, two, two]))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 200, 503]
        refused = next(a for a in answers if a.status_code == 503)
        assert "queue is full" in refused.json()["detail"] and refused.headers["retry-after"] == "1"
        assert batcher.pending == 0
        batcher.score_fn = score
        assert [a.status_code for a in asyncio.run(_post_many(app, [two]))] == [200]
    finally:
        batcher.stop()
    assert batcher.stats.rejected == 1


def test_a_failing_batch_answers_500_and_the_server_keeps_serving(reward_model):
    app = _running(create_app(reward_model, ServeSettings()))
    batcher = app.state.batcher
    score = batcher.score_fn
    calls = {"n": 0}

    def flaky(sequences):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("out of memory (simulated)")
        return score(sequences)

    batcher.score_fn = flaky
    try:
        first = asyncio.run(_post_many(app, [{"items": ITEMS[:1]}]))[0]
        second = asyncio.run(_post_many(app, [{"items": ITEMS[:1]}]))[0]
    finally:
        batcher.stop()
    assert first.status_code == 500 and "out of memory (simulated)" in first.json()["detail"]
    assert second.status_code == 200


def test_gated_model_serves_mode_g_and_gate_weights(tiny_llama_dir):
    from fastapi.testclient import TestClient

    from tests.serve.conftest import build_reward_model

    gated = build_reward_model(tiny_llama_dir, heads={"single": {"kind": "linear"}, "multi": {"kind": "linear"},
                                                      "gate": {"kind": "gate", "hidden_sizes": [8]}})
    prompts, responses = prompts_and_responses(ITEMS)
    expected = gated.score(prompts, responses, mode="G").rows()
    with TestClient(create_app(gated, ServeSettings(mode="G"))) as client:
        info = client.get("/info").json()
        answer = client.post("/score", json={"items": ITEMS})
        queries = [gated.tokenizer.apply_chat_template(
            (p if isinstance(p, list) else [{"role": "user", "content": p}]) + [{"role": "assistant", "content": r}],
            tokenize=False) for p, r in zip(prompts, responses)]
        rewards = client.post("/get_reward", json={"query": queries})
    assert info["modes"] == ["F", "L", "M", "G"] and info["default_mode"] == "G"
    assert answer.status_code == 200, answer.text
    for got, want in zip(answer.json()["results"], expected, strict=True):
        assert got["reward"] == pytest.approx(want["G"], abs=1e-5)
        assert set(got["gate_weights"]) == {"helpfulness", "correctness", "verbosity"}
        assert sum(got["gate_weights"].values()) == pytest.approx(1.0, abs=1e-5)
        for name, weight in want["gate_weights"].items():
            assert got["gate_weights"][name] == pytest.approx(weight, abs=1e-5)
    # Full-text queries find the prompt/response boundary the gate reads from the template.
    assert rewards.json()["rewards"] == pytest.approx([row["G"] for row in expected], abs=1e-5)
