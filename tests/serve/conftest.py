"""Fixtures for the server, TRL and export tests: a tiny random reward model saved as smorm saves it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ATTRIBUTES = ["helpfulness", "correctness", "verbosity"]


def build_reward_model(backbone_dir: Path, heads: dict | None = None, max_length: int = 256, seed: int = 0):
    """A RewardModel on the tiny Llama with random single + multi heads (not trained: scores are random)."""
    from smorm.models.backbone import load_backbone
    from smorm.models.reward_model import RewardModel, RewardModelConfig

    backbone = load_backbone(str(backbone_dir))
    config = RewardModelConfig(
        backbone=str(backbone_dir),
        attributes=list(ATTRIBUTES),
        heads=heads or {"single": {"kind": "linear"}, "multi": {"kind": "linear"}},
        max_length=max_length,
    )
    torch.manual_seed(seed)
    return RewardModel(backbone.model, backbone.tokenizer, config).eval()


@pytest.fixture(scope="session")
def reward_model_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    """A smorm model folder (safetensors heads + full backbone + tokenizer)."""
    folder = tmp_path_factory.mktemp("serve-run") / "model"
    build_reward_model(tiny_llama_dir).save_pretrained(folder, backbone_weights="full")
    return folder


@pytest.fixture(scope="session")
def reward_model(reward_model_dir):
    from smorm.models.reward_model import RewardModel

    return RewardModel.from_pretrained(reward_model_dir)


class ThreadedServer:
    """A real uvicorn server on 127.0.0.1 in a thread of the test process."""

    def __init__(self, app, port: int) -> None:
        import uvicorn

        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        from smorm.serve.loadtest import wait_healthy

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        wait_healthy(self.url, timeout_s=30)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def threaded_server() -> Iterator[type[ThreadedServer]]:
    yield ThreadedServer
