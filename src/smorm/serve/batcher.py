"""Micro-batching: concurrent requests are gathered into batches that ONE thread runs, one at a time.

Each request hands its token sequences to :meth:`MicroBatcher.submit` and awaits its rows. The
worker thread takes the first waiting request, keeps taking more for at most ``max_wait_ms`` or
until ``max_batch_size`` sequences are gathered, runs them through the model in one call, and
hands each request back its own rows. Admission is bounded in sequences: a request that would
push the number of waiting sequences past ``max_queue`` is refused at once (the server answers
503), so a flood of requests costs memory for at most ``max_queue`` sequences.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from smorm.data.formatting import EncodedSequence
from smorm.models.scoring import select_rows
from smorm.types import RewardOutput

logger = logging.getLogger(__name__)

ScoreFn = Callable[[list[EncodedSequence]], RewardOutput]


class QueueFull(RuntimeError):
    """The batcher's queue cannot take the request now; retry later (HTTP 503)."""


@dataclass
class BatchStats:
    """Counters for ``/info`` and tests.

    Attributes:
        batches: model calls made.
        sequences: sequences scored.
        requests: requests answered (scored or failed).
        rejected: requests refused because the queue was full.
        largest_batch: most sequences in one model call.
    """

    batches: int = 0
    sequences: int = 0
    requests: int = 0
    rejected: int = 0
    largest_batch: int = 0


@dataclass
class _Job:
    sequences: list[EncodedSequence]
    future: asyncio.Future[RewardOutput]
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)


def slice_output(output: RewardOutput, start: int, stop: int) -> RewardOutput:
    """Rows ``start:stop`` of every tensor of a :class:`RewardOutput`, whichever scorer made it
    (a composite's ``pooled`` holds its members' features side by side, a classifier has no attributes)."""
    return select_rows(output, torch.arange(start, stop))


def _resolve(future: asyncio.Future[RewardOutput], result: RewardOutput | None, error: BaseException | None) -> None:
    """Runs on the event loop: set the outcome unless the client went away (future cancelled)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


class MicroBatcher:
    """Gather sequences from concurrent requests into batches scored by a single worker thread.

    Args:
        score_fn: scores a list of encoded sequences and returns their rows in order; called only
            from the worker thread, so the model never runs two batches at once.
        max_batch_size: most sequences gathered into one call (a single larger request is still
            taken whole; ``score_fn`` splits it into forward passes).
        max_wait_ms: how long the worker waits for more requests after the first one arrives.
        max_queue: most sequences waiting or being scored at once; beyond it ``submit`` refuses.
    """

    def __init__(self, score_fn: ScoreFn, max_batch_size: int = 16, max_wait_ms: float = 5.0,
                 max_queue: int = 1024) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be positive and max_wait_ms not negative")
        self.score_fn = score_fn
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._carry: _Job | None = None
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Sequences waiting or being scored."""
        return self._pending

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="smorm-scorer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in progress and stop the worker (waiting requests are failed)."""
        if self._thread is None:
            return
        self._jobs.put(None)
        self._thread.join(timeout)
        self._thread = None

    async def submit(self, sequences: list[EncodedSequence]) -> RewardOutput:
        """Score ``sequences`` in some upcoming batch; rows come back in the order given.

        Raises:
            QueueFull: accepting them would exceed ``max_queue`` waiting sequences.
        """
        if self._thread is None:
            raise RuntimeError("the batcher is not running (call start())")
        count = len(sequences)
        with self._lock:
            if self._pending + count > self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(
                    f"the scoring queue is full ({self._pending} sequences waiting, limit {self.max_queue}); "
                    "retry later"
                )
            self._pending += count
        loop = asyncio.get_running_loop()
        job = _Job(sequences=sequences, future=loop.create_future(), loop=loop)
        self._jobs.put(job)
        return await job.future

    # ---------------------------------------------------------------- worker thread

    def _next_batch(self) -> list[_Job] | None:
        """Block for the first job, then gather more until the batch is full or the wait is over."""
        first = self._carry if self._carry is not None else self._jobs.get()
        self._carry = None
        if first is None:
            return None
        batch, size = [first], len(first.sequences)
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = self._jobs.get(timeout=remaining) if remaining > 0 else self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._jobs.put(None)  # seen again after this batch, which is finished first
                break
            if size + len(job.sequences) > self.max_batch_size:
                self._carry = job  # would overflow this batch: it opens the next one
                break
            batch.append(job)
            size += len(job.sequences)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                break
            self._score(batch)
        self._fail_waiting(RuntimeError("the server is shutting down"))

    def _score(self, batch: list[_Job]) -> None:
        sequences = [encoded for job in batch for encoded in job.sequences]
        result: RewardOutput | None = None
        error: BaseException | None = None
        try:
            result = self.score_fn(sequences)
        except Exception as caught:  # noqa: BLE001 - handed to the requests, the worker keeps going
            logger.exception("scoring a batch of %d sequences failed", len(sequences))
            error = caught
        # The books are settled before any request is answered, so a client that has its answer
        # never sees its own sequences still counted as pending.
        with self._lock:
            self._pending -= len(sequences)
            self.stats.batches += 1
            self.stats.sequences += len(sequences)
            self.stats.requests += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(sequences))
        start = 0
        for job in batch:
            stop = start + len(job.sequences)
            rows = None if result is None else slice_output(result, start, stop)
            job.loop.call_soon_threadsafe(_resolve, job.future, rows, error)
            start = stop

    def _fail_waiting(self, error: BaseException) -> None:
        leftovers = [self._carry] if self._carry is not None else []
        self._carry = None
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                leftovers.append(job)
        for job in leftovers:
            with self._lock:
                self._pending -= len(job.sequences)
            try:
                job.loop.call_soon_threadsafe(_resolve, job.future, None, error)
            except RuntimeError:  # the event loop is already closed
                pass
