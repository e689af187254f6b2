"""A bounded load test for ``smorm serve``: N requests at concurrency C against a loopback server.

Used by ``bench/serve_load.py`` (2,000 requests at concurrency 32, numbers in docs/serving.md) and by
the test suite (a small run). Bounded in count and in time: requests not started by ``max_seconds``
are not sent and are reported as ``not_sent``.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROMPTS = [
    "What is the capital of France?",
    "Explain photosynthesis in one sentence.",
    "Write a haiku about the sea.",
    "How do I reverse a list in Python?",
    "Give me three tips for better sleep.",
]
RESPONSES = [
    "Paris.",
    "Plants turn light, water and carbon dioxide into sugar and oxygen.",
    "Waves fold on the sand / salt wind carries gull voices / the tide keeps its time.",
    "Use reversed(xs) for an iterator or xs[::-1] for a copy; xs.reverse() works in place.",
    "Keep a fixed wake time, avoid screens late, and keep the bedroom cool and dark.",
]


@dataclass
class LoadResult:
    """What a load run measured.

    Attributes:
        requests: requests planned; ``sent`` of them were sent, ``ok`` answered 200.
        errors: sent requests that failed (non-200 status or a transport error).
        status_counts: HTTP status (or exception name) -> count.
        seconds: wall time from the first request to the last answer.
        requests_per_s / items_per_s: throughput over ``seconds`` (answered requests only).
        p50_ms / p99_ms / max_ms: latency of answered requests, nearest-rank percentiles.
    """

    requests: int
    concurrency: int
    items_per_request: int
    sent: int = 0
    ok: int = 0
    errors: int = 0
    not_sent: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    requests_per_s: float = 0.0
    items_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (``q`` in [0, 100]); 0.0 for an empty list."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def request_body(index: int, items_per_request: int) -> dict[str, Any]:
    """A deterministic ``/score`` body; requests differ so that batches mix lengths."""
    items = []
    for j in range(items_per_request):
        k = (index + j) % len(PROMPTS)
        items.append({"prompt": PROMPTS[k], "response": RESPONSES[(k + index // len(PROMPTS)) % len(RESPONSES)]})
    return {"items": items}


async def run_load(base_url: str, requests: int = 2000, concurrency: int = 32, items_per_request: int = 1,
                   token: str | None = None, timeout_s: float = 60.0, max_seconds: float = 600.0) -> LoadResult:
    """Send ``requests`` POST /score requests, ``concurrency`` at a time, and measure them."""
    import httpx

    result = LoadResult(requests=requests, concurrency=concurrency, items_per_request=items_per_request)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    next_index = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < requests and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            result.sent += 1
            t0 = time.perf_counter()
            try:
                response = await client.post("/score", json=request_body(index, items_per_request), headers=headers)
                status = str(response.status_code)
            except httpx.HTTPError as error:
                status = type(error).__name__
            result.status_counts[status] = result.status_counts.get(status, 0) + 1
            if status == "200":
                result.ok += 1
                latencies.append((time.perf_counter() - t0) * 1000.0)
            else:
                result.errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # trust_env=False: a proxy from the environment must not see loopback traffic.
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    result.not_sent = requests - result.sent
    latencies.sort()
    if result.seconds > 0:
        result.requests_per_s = result.ok / result.seconds
        result.items_per_s = result.ok * items_per_request / result.seconds
    result.p50_ms, result.p99_ms = percentile(latencies, 50), percentile(latencies, 99)
    result.max_ms = latencies[-1] if latencies else 0.0
    return result


# ---------------------------------------------------------------- a server process on loopback


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model_dir: str | os.PathLike[str], port: int, extra_args: list[str] | None = None,
                 log_path: str | os.PathLike[str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m smorm serve MODEL --host 127.0.0.1 --port PORT`` as a child process."""
    command = [sys.executable, "-m", "smorm", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
               *(extra_args or [])]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(base_url: str, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 120.0) -> None:
    """Poll ``GET /health`` until it answers 200; raise if the process dies or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was healthy")
        try:
            if httpx.get(f"{base_url}/health", timeout=2.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base_url}/health did not answer within {timeout_s:g}s")


def stop_server(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """Stop a server started by :func:`start_server` (SIGTERM, then SIGKILL)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)


def machine_summary() -> str:
    """One line about the machine, for the written results."""
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import platform

    import torch

    return (f"{os.cpu_count()} CPU cores ({cpu or platform.processor() or 'unknown CPU'}), "
            f"Python {platform.python_version()}, torch {torch.__version__} with {torch.get_num_threads()} threads")
