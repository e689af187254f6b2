"""The scoring server: a FastAPI app around one scorer and one micro-batching worker.

The scorer is anything :func:`smorm.models.scorers.load_scorer` opens (a run or model folder, a
composite folder: ensemble or Baseline SM, a Hugging Face sequence classifier), served through the
:class:`~smorm.models.scorers.Scorer` surface only; it answers the modes it offers
(:func:`~smorm.models.scorers.available_modes`).

Endpoints:

* ``POST /score``: ``{"items": [{"prompt" | "messages", "response"}], "mode"?}`` ->
  ``{"mode", "results": [{"reward", "F", "L", "M", "attributes", "gate_weights"?}]}``, the same rows
  ``smorm score`` writes.
* ``POST /get_reward``: ``{"query": [full texts]}`` -> ``{"rewards": [...]}``, OpenRLHF's remote
  reward-model protocol (``--remote_rm_url http://127.0.0.1:PORT/get_reward``).
* ``GET /health`` (no token needed) and ``GET /info`` (backbone, attributes, modes, limits, counters).

Every request is bounded before any work is done: body bytes (413), items per request and tokens
per item (422), and waiting sequences (503). Errors are ``{"detail": "..."}`` naming the limit or
field at fault. An optional bearer token is compared in constant time.
"""

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from smorm.data.formatting import EncodedSequence
from smorm.models.composite import CompositeScorer
from smorm.models.reward_model import reward_for_mode, scores_from_output
from smorm.models.scorers import Scorer, available_modes, load_scorer
from smorm.serve.batcher import MicroBatcher, QueueFull
from smorm.serve.inputs import ItemTooLong, QueryEncoder, TokenLimits, encode_items
from smorm.serve.settings import ServeSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def unavailable_mode(mode: str, modes: list[str], scorer: Scorer) -> str:
    """The message for a mode the scorer does not offer, naming the ones it does."""
    return (f"mode {mode!r} is not available for this model ({type(scorer).__name__}); "
            f"available: {', '.join(modes)}")


def model_info(scorer: Scorer, modes: list[str], default_mode: str) -> dict[str, Any]:
    """What ``/info`` says about the scorer: its kind, what it is built on, its heads and modes."""
    config = scorer.config
    info: dict[str, Any] = {
        "scorer": type(scorer).__name__,
        # A RewardModel's backbone, a classifier's folder or hub id; a composite has one per member.
        "backbone": getattr(config, "backbone", None),
        "attributes": list(config.attributes),
        "heads": list(scorer.heads),
        "modes": modes,
        "default_mode": default_mode,
        "max_length": config.max_length,
    }
    if isinstance(scorer, CompositeScorer):
        spec = scorer.spec
        info["composite"] = {"kind": spec.kind, "combine": spec.combine,
                             "members": dict(zip(spec.roles, spec.members, strict=True))}
        if spec.uwo_lambda is not None:
            info["composite"]["uwo_lambda"] = spec.uwo_lambda
    return info


def create_app(scorer: Scorer, settings: ServeSettings | None = None) -> "FastAPI":
    """Build the FastAPI app; the scoring thread starts and stops with the app's lifespan.

    Args:
        scorer: a loaded scorer (:func:`smorm.models.scorers.load_scorer`); only the worker thread
            ever runs it.
        settings: limits and batching; defaults are :class:`ServeSettings`'s.
    """
    # No `from __future__ import annotations` in this module: FastAPI reads the endpoints'
    # annotations (``request: Request``) at definition time, and Request is imported only here.
    from fastapi import FastAPI, HTTPException, Request

    settings = settings or ServeSettings()
    if isinstance(scorer, torch.nn.Module):
        # load_scorer's scorers are in eval mode already; a RewardModel built in code may not be,
        # and dropout would make its rewards random.
        scorer.eval()
    modes = available_modes(scorer)
    default_mode = settings.mode or scorer.config.mode
    if default_mode not in modes:
        raise ValueError(unavailable_mode(default_mode, modes, scorer))
    limits = TokenLimits(
        max_item_tokens=settings.max_item_tokens or scorer.config.max_length,
        model_max_length=scorer.config.max_length,
    )
    query_encoder = QueryEncoder(scorer.tokenizer, limits)

    def score_sequences(sequences: list[EncodedSequence]) -> Any:
        with torch.inference_mode():
            return scorer.score_token_ids([s.input_ids for s in sequences], batch_size=settings.max_batch_size,
                                          response_starts=[s.response_start for s in sequences])

    batcher = MicroBatcher(score_sequences, settings.max_batch_size, settings.max_wait_ms, settings.max_queue)
    info = model_info(scorer, modes, default_mode)
    started = time.time()

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()

    app = FastAPI(title="smorm reward model server", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.batcher = batcher
    app.state.settings = settings

    def check_token(request: Request) -> None:
        if settings.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest takes time independent of where the strings differ.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                                headers={"WWW-Authenticate": "Bearer"})

    async def read_json(request: Request) -> Any:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise HTTPException(400, f"Content-Length {declared!r} is not a number")
            if int(declared) > limit:
                raise HTTPException(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes "
                                         "(--max-body-bytes)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # a chunked body without Content-Length is cut off as soon as it is too big
                raise HTTPException(413, f"request body exceeds the limit of {limit} bytes (--max-body-bytes)")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise HTTPException(400, f"request body is not valid JSON: {error}") from None

    def check_count(count: int, what: str) -> None:
        if count > settings.max_items:
            raise HTTPException(422, f"{count} {what} in one request exceeds the limit of {settings.max_items} "
                                     "(--max-items); split the request")

    async def run(sequences: list[EncodedSequence]) -> Any:
        try:
            return await asyncio.wait_for(batcher.submit(sequences), settings.request_timeout_s)
        except QueueFull as error:
            raise HTTPException(503, str(error), headers={"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            raise HTTPException(504, f"scoring took longer than {settings.request_timeout_s:g}s") from None
        except Exception as error:  # noqa: BLE001 - a failed batch; the server keeps serving
            raise HTTPException(500, f"scoring failed: {type(error).__name__}: {error}") from None

    def parse(schema: Any, data: Any) -> Any:
        from pydantic import ValidationError

        from smorm.serve.schemas import describe_validation_error

        try:
            return schema.model_validate(data)
        except ValidationError as error:
            raise HTTPException(422, describe_validation_error(error)) from None

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queued": batcher.pending}

    @app.get("/info")
    async def get_info(request: Request) -> dict[str, Any]:
        check_token(request)
        return {
            **info,
            "limits": {
                "max_body_bytes": settings.max_body_bytes,
                "max_items": settings.max_items,
                "max_item_tokens": limits.max_item_tokens,
                "max_queue": settings.max_queue,
            },
            "batching": {"max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms},
            "stats": asdict(batcher.stats),
            "uptime_s": round(time.time() - started, 1),
        }

    @app.post("/score")
    async def score(request: Request) -> dict[str, Any]:
        from smorm.serve.schemas import ScoreRequest

        check_token(request)
        data = await read_json(request)
        if isinstance(data, dict) and isinstance(data.get("items"), list):
            check_count(len(data["items"]), "items")  # before validating a huge list item by item
        body = parse(ScoreRequest, data)
        mode = body.mode or default_mode
        if mode not in modes:
            raise HTTPException(422, unavailable_mode(mode, modes, scorer))
        try:
            sequences = encode_items(scorer.tokenizer, [item.prompt_value() for item in body.items],
                                     [item.response for item in body.items], limits)
        except ItemTooLong as error:
            raise HTTPException(422, str(error)) from None
        output = await run(sequences)
        return {"mode": mode, "results": scores_from_output(output, mode, scorer.config.attributes).rows()}

    @app.post("/get_reward")
    async def get_reward(request: Request) -> dict[str, Any]:
        from smorm.serve.schemas import GetRewardRequest

        check_token(request)
        data = await read_json(request)
        if isinstance(data, dict) and isinstance(data.get("query"), list):
            check_count(len(data["query"]), "queries")
        body = parse(GetRewardRequest, data)
        try:
            sequences = query_encoder.encode(body.query)
        except ItemTooLong as error:
            raise HTTPException(422, str(error).replace("items[", "query[")) from None
        output = await run(sequences)
        rewards = reward_for_mode(output, default_mode).tolist()
        # OpenRLHF reads "rewards"; some of its versions read "scores" as well.
        return {"rewards": rewards, "scores": rewards}

    return app


def warn_if_exposed(settings: ServeSettings) -> str | None:
    """A warning when the server listens beyond loopback, louder without a token."""
    if settings.host in LOOPBACK_HOSTS:
        return None
    if settings.token is None:
        return (f"listening on {settings.host} WITHOUT a bearer token: anyone who can reach this port can use "
                "the model; set --token (or SMORM_SERVE_TOKEN) or bind 127.0.0.1")
    return f"listening on {settings.host}; requests need the bearer token"


def run_server(model_dir: str, settings: ServeSettings, log_level: str = "info", hf: bool | None = None) -> None:
    """Load the scorer at ``model_dir`` (any folder :func:`load_scorer` opens) and serve it with uvicorn
    until interrupted; ``hf`` as in :func:`load_scorer` (None: detected)."""
    import uvicorn

    scorer = load_scorer(model_dir, device=settings.device, hf=hf)
    app = create_app(scorer, settings)
    warning = warn_if_exposed(settings)
    if warning:
        logger.warning(warning)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False)
