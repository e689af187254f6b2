"""A smorm reward model as a TRL reward function (``reward_funcs`` of ``GRPOTrainer`` / ``RLOOTrainer``).

TRL calls a reward function as ``func(prompts=..., completions=..., **columns) -> list[float]`` and
logs it under ``func.__name__``. Two dataset formats reach it:

* standard: ``prompts[i]`` and ``completions[i]`` are strings; the prompt becomes one user turn;
* conversational: ``prompts[i]`` is a list of chat messages and ``completions[i]`` a list of messages
  whose last one is the assistant's reply (earlier ones, e.g. tool turns, join the prompt).

The function is backed by a loaded scorer -- a :class:`~smorm.models.reward_model.RewardModel`
(gated ones included), an ensemble / Baseline SM composite or a Hugging Face sequence classifier -- or
by such a folder, scored in-process; or by a ``smorm serve`` URL (``POST /score``). TRL is not imported.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smorm.types import Message

DEFAULT_REQUEST_ITEMS = 64  # the server's default --max-items


def message_text(content: Any, where: str) -> str:
    """The text of a message's content: a string, or a list of ``{"type": "text", "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        if len(parts) == len(content):
            return "".join(parts)
    raise ValueError(f"{where}: message content must be text (or text parts), got {type(content).__name__}")


def _messages(value: Any, where: str) -> list[Message]:
    if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m for m in value):
        raise ValueError(f"{where}: expected a string or a list of {{'role', 'content'}} messages")
    return [{"role": str(m["role"]), "content": message_text(m.get("content", ""), where)} for m in value]


def to_prompt_response(prompt: Any, completion: Any, index: int = 0) -> tuple[list[Message], str]:
    """One TRL sample as (prompt messages, response text), for either dataset format."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else _messages(prompt, f"prompts[{index}]")
    if isinstance(completion, str):
        return messages, completion
    turns = _messages(completion, f"completions[{index}]")
    if not turns:
        return messages, ""
    if turns[-1]["role"] != "assistant":
        raise ValueError(f"completions[{index}]: the last message is {turns[-1]['role']!r}, not the assistant's reply")
    return [*messages, *turns[:-1]], turns[-1]["content"]


def score_url(url: str) -> str:
    """``http(s)://host:port[/score]`` -> the server's ``/score`` endpoint; other schemes are refused."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"reward server url must be http(s)://host:port, got {url!r}")
    base = url.rstrip("/")
    return base if base.endswith("/score") else base + "/score"


class SmormRewardFunction:
    """``reward_funcs`` entry: ``reward(prompts=..., completions=..., **kwargs) -> list[float]``.

    Args:
        model: a loaded scorer (RewardModel, composite, Hugging Face classifier), or a run / model /
            composite / classifier folder to load (exactly one of ``model``, ``url``).
        url: a ``smorm serve`` address (``http://127.0.0.1:8000`` or its ``/score`` endpoint).
        mode: inference mode (F, L, M, G); None = the model's (or the server's) default.
        batch_size: sequences per forward pass (local model).
        token: bearer token for the server; default ``$SMORM_SERVE_TOKEN``.
        request_items: items per HTTP request (keep at or below the server's ``--max-items``).
        timeout: seconds per HTTP request.
        name: ``__name__`` TRL logs the reward under (default ``smorm_<mode or default>``).
        device: where a model given as a folder scores (``auto``: the accelerator if present).
        autocast_bf16: score a local model under bf16 autocast (where the device multiplies bf16 natively).
    """

    def __init__(self, model: Any = None, *, url: str | None = None, mode: str | None = None, batch_size: int = 16,
                 token: str | None = None, request_items: int = DEFAULT_REQUEST_ITEMS, timeout: float = 300.0,
                 name: str | None = None, device: str | None = "auto", autocast_bf16: bool = False) -> None:
        if (model is None) == (url is None):
            raise ValueError("give exactly one of model (a RewardModel or folder) or url (a smorm serve address)")
        if isinstance(model, (str, os.PathLike)):
            from smorm.models.scorers import load_scorer

            model = load_scorer(Path(model), device=device)
        self.model = model
        self.url = None if url is None else score_url(url)
        self.mode = mode
        self.batch_size = batch_size
        self.autocast_bf16 = autocast_bf16
        self.token = token if token is not None else os.environ.get("SMORM_SERVE_TOKEN")
        self.request_items = request_items
        self.timeout = timeout
        self.__name__ = name or f"smorm_{mode or 'default'}"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        pairs = [to_prompt_response(p, c, i) for i, (p, c) in enumerate(zip(prompts, completions))]
        if not pairs:
            return []
        if self.model is not None:
            from smorm.models.composite import score_responses
            from smorm.models.reward_model import reward_for_mode

            # score_responses hands the model each response_start, which a gate (mode G) needs.
            output = score_responses(self.model, [p for p, _ in pairs], [r for _, r in pairs],
                                     batch_size=self.batch_size, autocast_bf16=self.autocast_bf16)
            mode = self.mode or getattr(self.model.config, "mode", "F")
            return [float(x) for x in reward_for_mode(output, mode)]
        rewards: list[float] = []
        for start in range(0, len(pairs), self.request_items):
            rewards.extend(self._post(pairs[start : start + self.request_items]))
        return rewards

    def _post(self, pairs: list[tuple[list[Message], str]]) -> list[float]:
        body: dict[str, Any] = {"items": [{"messages": p, "response": r} for p, r in pairs]}
        if self.mode is not None:
            body["mode"] = self.mode
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")  # type: ignore[arg-type]
        # A proxy from the environment must not capture requests meant for this machine.
        loopback = urllib.parse.urlsplit(self.url).hostname in ("127.0.0.1", "::1", "localhost")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if loopback else urllib.request.build_opener()
        try:
            with opener.open(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise RuntimeError(f"reward server {self.url} answered {error.code}: {detail}") from None
        results = answer.get("results")
        if not isinstance(results, list) or len(results) != len(pairs):
            raise RuntimeError(f"reward server {self.url} sent an unexpected answer: {str(answer)[:200]}")
        return [float(row["reward"]) for row in results]


def smorm_reward_function(model: Any = None, **options: Any) -> SmormRewardFunction:
    """Shorthand for :class:`SmormRewardFunction` (``reward_funcs=[smorm_reward_function("runs/smorm")]``)."""
    return SmormRewardFunction(model, **options)
