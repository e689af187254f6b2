"""A real uvicorn on 127.0.0.1: a small bounded load test, abuse over a socket, and `smorm serve` itself."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest

from smorm.serve import ServeSettings, create_app
from smorm.serve.loadtest import (
    free_port,
    percentile,
    request_body,
    run_load,
    start_server,
    stop_server,
    wait_healthy,
)


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) == 0.0


def test_small_load_on_loopback_has_no_errors(reward_model, threaded_server):
    app = create_app(reward_model, ServeSettings(max_batch_size=16, max_wait_ms=5))
    with threaded_server(app, free_port()) as server:
        result = asyncio.run(run_load(server.url, requests=200, concurrency=16, max_seconds=120))
        stats = httpx.get(f"{server.url}/info", trust_env=False).json()["stats"]
    assert result.sent == 200 and result.ok == 200 and result.errors == 0, result.status_counts
    assert result.not_sent == 0 and result.requests_per_s > 0
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    assert stats["requests"] == 200 and stats["batches"] < 200  # concurrent requests were batched


def test_abuse_over_a_real_socket_and_the_server_keeps_serving(reward_model, threaded_server):
    app = create_app(reward_model, ServeSettings(max_body_bytes=2048, token="tok"))
    good = {"Authorization": "Bearer tok"}
    with threaded_server(app, free_port()) as server, httpx.Client(base_url=server.url, trust_env=False) as client:
        big = json.dumps({"items": [{"prompt": "x" * 10_000, "response": "y"}]}).encode()
        declared = client.post("/score", content=big, headers=good)
        assert declared.status_code == 413 and "2048 bytes" in declared.json()["detail"]

        def chunks():  # no Content-Length: the server must stop reading once past the limit
            for _ in range(100):
                yield b" " * 1024

        streamed = client.post("/score", content=chunks(), headers=good)
        assert streamed.status_code == 413
        assert client.post("/score", content=b'{"items": [', headers=good).status_code == 400
        assert client.post("/score", json=request_body(0, 1)).status_code == 401
        assert client.post("/score", json=request_body(0, 1), headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.post("/get_reward", json={"query": [1]}, headers=good).status_code == 422
        answer = client.post("/score", json=request_body(0, 2), headers=good)
        assert answer.status_code == 200 and len(answer.json()["results"]) == 2
        assert client.get("/health").status_code == 200


def test_serve_binds_loopback_by_default():
    from typer.testing import CliRunner

    from smorm.cli import app
    from smorm.serve.settings import ServeCommand

    assert ServeSettings().host == "127.0.0.1" and ServeCommand(run="x").host == "127.0.0.1"
    # The flag's help, generated from the settings, states the same default.
    help_text = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "interface to bind; loopback unless you mean to expose it [default: 127.0.0.1]" in help_text
    from smorm.serve.app import warn_if_exposed

    assert warn_if_exposed(ServeSettings()) is None
    assert "WITHOUT a bearer token" in warn_if_exposed(ServeSettings(host="0.0.0.0"))


@pytest.mark.slow
def test_smorm_serve_command_serves_the_same_scores(reward_model_dir, reward_model, tmp_path, monkeypatch):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("SMORM_SERVE_TOKEN", "from-env")
    process = start_server(reward_model_dir.parent, port, ["--mode", "M", "--max-items", "8"],
                           log_path=tmp_path / "server.log")
    try:
        wait_healthy(url, process, timeout_s=120)
        headers = {"Authorization": "Bearer from-env"}
        items = [request_body(i, 1)["items"][0] for i in range(5)]
        answer = httpx.post(f"{url}/score", json={"items": items}, headers=headers, trust_env=False, timeout=60)
        info = httpx.get(f"{url}/info", headers=headers, trust_env=False).json()
        refused = httpx.post(f"{url}/score", json={"items": items}, trust_env=False)
    finally:
        stop_server(process)
    assert answer.status_code == 200, answer.text
    expected = reward_model.score([i["prompt"] for i in items], [i["response"] for i in items], mode="M").reward
    assert [row["reward"] for row in answer.json()["results"]] == pytest.approx(expected, abs=1e-5)
    assert info["default_mode"] == "M" and info["limits"]["max_items"] == 8
    assert refused.status_code == 401
    assert process.returncode is not None and os.path.getsize(tmp_path / "server.log") > 0
