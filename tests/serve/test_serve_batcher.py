"""MicroBatcher: gathering, batch size bound, row order, bounded queue, error hand-back."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from smorm.data.formatting import EncodedSequence
from smorm.serve.batcher import MicroBatcher, QueueFull, slice_output
from smorm.types import RewardOutput


def seq(value: int, length: int = 1) -> EncodedSequence:
    return EncodedSequence([value] * length, truncated=False, response_start=0)


class FakeScorer:
    """Reward = first token id; records the size of every call."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.threads: set[str] = set()

    def __call__(self, sequences: list[EncodedSequence]) -> RewardOutput:
        self.calls.append(len(sequences))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        values = torch.tensor([float(s.input_ids[0]) for s in sequences])
        return RewardOutput(single=values, attributes=values[:, None].repeat(1, 2), pooled=values[:, None])


async def submit_all(batcher: MicroBatcher, requests: list[list[EncodedSequence]], stagger: float = 0.0):
    async def one(i, sequences):
        await asyncio.sleep(stagger * i)
        return await batcher.submit(sequences)

    return await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)), return_exceptions=True)


def test_requests_are_gathered_up_to_the_batch_size_and_rows_stay_in_order():
    scorer = FakeScorer(delay=0.05)
    batcher = MicroBatcher(scorer, max_batch_size=4, max_wait_ms=100, max_queue=100)
    batcher.start()
    try:
        requests = [[seq(10 * i + j) for j in range(1 + i % 2)] for i in range(8)]  # 12 sequences in 8 requests
        outputs = asyncio.run(submit_all(batcher, requests))
    finally:
        batcher.stop()
    for request, output in zip(requests, outputs):
        assert output.single.tolist() == [float(s.input_ids[0]) for s in request]
        assert output.attributes.shape == (len(request), 2)
    assert sum(scorer.calls) == 12
    assert max(scorer.calls) <= 4 and len(scorer.calls) < 8  # gathered, never past the batch size
    assert scorer.threads == {"smorm-scorer"}  # one worker thread runs every batch
    assert batcher.stats.requests == 8 and batcher.pending == 0


def test_a_request_larger_than_the_batch_is_taken_whole():
    scorer = FakeScorer()
    batcher = MicroBatcher(scorer, max_batch_size=2, max_wait_ms=0, max_queue=100)
    batcher.start()
    try:
        [output] = asyncio.run(submit_all(batcher, [[seq(i) for i in range(5)]]))
    finally:
        batcher.stop()
    assert output.single.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert scorer.calls == [5]


def test_queue_bound_in_sequences():
    scorer = FakeScorer(delay=1.0)  # the second request arrives while the first is being scored
    batcher = MicroBatcher(scorer, max_batch_size=8, max_wait_ms=0, max_queue=3)
    batcher.start()
    try:
        results = asyncio.run(submit_all(batcher, [[seq(1), seq(2)], [seq(3), seq(4)], [seq(5)]], stagger=0.01))
    finally:
        batcher.stop()
    assert isinstance(results[1], QueueFull)  # 2 + 2 > 3
    assert results[0].single.tolist() == [1.0, 2.0] and results[2].single.tolist() == [5.0]
    assert batcher.stats.rejected == 1 and batcher.pending == 0


def test_errors_reach_every_request_of_the_batch():
    def broken(sequences):
        raise RuntimeError("boom")

    batcher = MicroBatcher(broken, max_batch_size=8, max_wait_ms=50)
    batcher.start()
    try:
        results = asyncio.run(submit_all(batcher, [[seq(1)], [seq(2)]]))
    finally:
        batcher.stop()
    assert all(isinstance(r, RuntimeError) and str(r) == "boom" for r in results)
    assert batcher.pending == 0


def test_submit_needs_a_running_worker_and_sane_settings():
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(MicroBatcher(FakeScorer()).submit([seq(1)]))
    with pytest.raises(ValueError):
        MicroBatcher(FakeScorer(), max_batch_size=0)


def test_slice_output_cuts_every_tensor():
    values = torch.arange(4.0)
    output = RewardOutput(single=values, attributes=values[:, None], pooled=values[:, None],
                          gate_weights=values[:, None], extra={"gate": values})
    part = slice_output(output, 1, 3)
    assert part.single.tolist() == [1.0, 2.0] and part.gate_weights.tolist() == [[1.0], [2.0]]
    assert part.extra["gate"].tolist() == [1.0, 2.0]
