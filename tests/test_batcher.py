"""The micro-batcher, with a controllable fake runtime (events decide timing, not sleeps)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server.batcher import MicroBatcher
from server.errors import DeadlineExpired, Overloaded, Unavailable


class GatedRuntime:
    """Doubles each item; each batch blocks until the test opens the gate."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.started.release()
        assert self.gate.wait(10), "the test never opened the gate"
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("injected batch failure")
        return [item * 2 for item in items]


async def wait_started(runtime: GatedRuntime) -> None:
    assert await asyncio.to_thread(runtime.started.acquire, True, 10)


def make(runtime: GatedRuntime, **overrides: float) -> MicroBatcher[int, int]:
    settings = {"max_batch_size": 4, "max_wait_ms": 0.0, "max_queued_items": 100}
    settings.update(overrides)
    return MicroBatcher(runtime, **settings)  # type: ignore[arg-type]


async def test_an_idle_runtime_takes_a_single_request_at_once() -> None:
    runtime = GatedRuntime()
    runtime.gate.set()
    batcher = make(runtime, max_wait_ms=0)
    await batcher.start()
    assert await batcher.submit([1, 2]) == [2, 4]
    assert runtime.batches == [[1, 2]]
    await batcher.stop()


async def test_requests_queued_behind_a_running_batch_are_batched_up_to_the_size_bound() -> None:
    runtime = GatedRuntime()
    batcher = make(runtime, max_batch_size=4)
    await batcher.start()
    first = asyncio.ensure_future(batcher.submit([0]))
    await wait_started(runtime)
    later = [asyncio.ensure_future(batcher.submit([value])) for value in range(1, 7)]
    await asyncio.sleep(0)
    runtime.gate.set()
    assert await first == [0]
    assert [await request for request in later] == [[2 * v] for v in range(1, 7)]
    assert runtime.batches == [[0], [1, 2, 3, 4], [5, 6]]
    await batcher.stop()


async def test_a_request_with_many_items_is_split_and_reassembled_in_order() -> None:
    runtime = GatedRuntime()
    runtime.gate.set()
    batcher = make(runtime, max_batch_size=3)
    await batcher.start()
    assert await batcher.submit(list(range(8))) == [2 * v for v in range(8)]
    assert [len(batch) for batch in runtime.batches] == [3, 3, 2]
    await batcher.stop()


async def test_a_full_queue_refuses_at_once_naming_the_limit() -> None:
    runtime = GatedRuntime()
    batcher = make(runtime, max_queued_items=3)
    await batcher.start()
    running = asyncio.ensure_future(batcher.submit([0]))
    await wait_started(runtime)
    queued = asyncio.ensure_future(batcher.submit([1, 2, 3]))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="max_queued_texts=3"):
        await batcher.submit([4])
    runtime.gate.set()
    assert await running == [0]
    assert await queued == [2, 4, 6]
    await batcher.stop()


async def test_a_failed_batch_fails_only_its_requests_and_the_worker_keeps_serving() -> None:
    runtime = GatedRuntime(fail_on=13)
    runtime.gate.set()
    batcher = make(runtime)
    await batcher.start()
    with pytest.raises(RuntimeError, match="injected"):
        await batcher.submit([13])
    assert await batcher.submit([5]) == [10]
    assert batcher.stats.batches_failed == 1
    await batcher.stop()


async def test_an_expired_request_is_dropped_before_inference() -> None:
    runtime = GatedRuntime()
    batcher = make(runtime)
    await batcher.start()
    running = asyncio.ensure_future(batcher.submit([0]))
    await wait_started(runtime)
    with pytest.raises(DeadlineExpired):
        await batcher.submit([99], timeout=0.01)
    runtime.gate.set()
    await running
    assert await batcher.submit([1]) == [2]
    assert all(99 not in batch for batch in runtime.batches)
    await batcher.stop()


async def test_a_cancelled_request_is_dropped_before_inference() -> None:
    runtime = GatedRuntime()
    batcher = make(runtime)
    await batcher.start()
    running = asyncio.ensure_future(batcher.submit([0]))
    await wait_started(runtime)
    abandoned = asyncio.ensure_future(batcher.submit([77]))
    await asyncio.sleep(0)
    abandoned.cancel()
    runtime.gate.set()
    await running
    assert await batcher.submit([1]) == [2]
    assert all(77 not in batch for batch in runtime.batches)
    assert batcher.stats.items_cancelled == 1
    await batcher.stop()


async def test_with_max_wait_a_partial_batch_waits_for_company() -> None:
    runtime = GatedRuntime()
    runtime.gate.set()
    batcher = make(runtime, max_batch_size=2, max_wait_ms=5_000)
    await batcher.start()
    first = asyncio.ensure_future(batcher.submit([1]))
    await asyncio.sleep(0.01)
    assert runtime.batches == []
    second = asyncio.ensure_future(batcher.submit([2]))
    assert (await first, await second) == ([2], [4])
    assert runtime.batches == [[1, 2]]
    await batcher.stop()


async def test_stop_fails_queued_requests_and_finishes_the_running_batch() -> None:
    runtime = GatedRuntime()
    batcher = make(runtime)
    await batcher.start()
    running = asyncio.ensure_future(batcher.submit([0]))
    await wait_started(runtime)
    queued = asyncio.ensure_future(batcher.submit([1]))
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(batcher.stop())
    await asyncio.sleep(0)
    runtime.gate.set()
    await stopping
    with pytest.raises(Unavailable):
        await queued
    with pytest.raises(Unavailable):
        await batcher.submit([2])
    assert await running == [0]
