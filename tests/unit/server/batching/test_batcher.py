"""The micro-batcher, with a controllable fake runtime (events decide timing, not sleeps)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from embedrec.server.batching.batcher import IdlePath, MicroBatcher
from embedrec.server.batching.policy import BatchPolicy
from embedrec.server.errors import DeadlineExpired, Overloaded, Unavailable


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


def make(runtime: GatedRuntime, **overrides: Any) -> MicroBatcher[int, int]:
    """A batcher whose items are ints; an item's token cost is its value."""
    settings: dict[str, Any] = {
        "max_batch_size": 4,
        "max_wait_ms": 0.0,
        "max_queued_texts": 100,
        "min_batch_efficiency": 0.0,
    }
    settings.update(overrides)
    return MicroBatcher(runtime, policy=BatchPolicy(**settings), cost=lambda item: item)


async def queue_behind_a_running_batch(
    batcher: MicroBatcher[int, int], runtime: GatedRuntime, requests: list[list[int]]
) -> list[asyncio.Future[list[int]]]:
    """Start a blocking batch [0]... then queue `requests` in order while it runs."""
    running = asyncio.ensure_future(batcher.submit([1000]))
    await wait_started(runtime)
    queued = [asyncio.ensure_future(batcher.submit(items)) for items in requests]
    await asyncio.sleep(0)
    return [running, *queued]


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
    batcher = make(runtime, max_queued_texts=3)
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


async def test_with_max_wait_a_lone_partial_batch_leaves_once_its_wait_is_over() -> None:
    runtime = GatedRuntime()
    runtime.gate.set()
    batcher = make(runtime, max_batch_size=4, max_wait_ms=50)
    await batcher.start()
    assert await asyncio.wait_for(batcher.submit([1]), 5) == [2]
    assert runtime.batches == [[1]]
    await batcher.stop()


async def test_requests_arriving_together_while_busy_leave_together_when_the_runtime_frees() -> None:
    runtime = GatedRuntime()
    batcher = make(runtime, max_batch_size=8)
    await batcher.start()
    futures = await queue_behind_a_running_batch(batcher, runtime, [[1], [2], [3]])
    runtime.gate.set()
    assert [await future for future in futures] == [[2000], [2], [4], [6]]
    assert runtime.batches == [[1000], [1, 2, 3]]
    await batcher.stop()


async def test_a_bug_in_batch_formation_fails_the_queued_requests_and_the_next_one_is_served() -> None:
    runtime = GatedRuntime()
    runtime.gate.set()
    batcher = make(runtime)
    await batcher.start()
    original = batcher._form_batch
    batcher._form_batch = lambda: (_ for _ in ()).throw(RuntimeError("injected bug"))  # type: ignore[method-assign]
    with pytest.raises(Unavailable, match="worker restarted"):
        await batcher.submit([1])
    batcher._form_batch = original  # type: ignore[method-assign]
    assert await asyncio.wait_for(batcher.submit([2]), 5) == [4]
    assert batcher.stats.worker_restarts == 1
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


async def test_the_padded_token_budget_bounds_a_batch() -> None:
    runtime = GatedRuntime()
    batcher = make(runtime, max_batch_size=8, max_batch_tokens=100, length_grouping=False)
    await batcher.start()
    calls = await queue_behind_a_running_batch(batcher, runtime, [[10], [20], [30], [40], [50]])
    runtime.gate.set()
    await asyncio.gather(*calls)
    # FIFO under the budget: 3 x 30 = 90 fits, 4 x 40 = 160 does not; 2 x 50 = 100 fits.
    assert runtime.batches[1:] == [[10, 20, 30], [40, 50]]
    await batcher.stop()


async def test_a_single_text_over_the_token_budget_still_runs_alone() -> None:
    runtime = GatedRuntime()
    runtime.gate.set()
    batcher = make(runtime, max_batch_tokens=50)
    await batcher.start()
    assert await batcher.submit([80, 5]) == [160, 10]
    assert runtime.batches == [[80], [5]]
    await batcher.stop()


async def test_queued_texts_are_grouped_by_length() -> None:
    runtime = GatedRuntime()
    batcher = make(runtime, max_batch_size=3, max_batch_tokens=10_000)
    await batcher.start()
    lengths = [5, 100, 6, 101, 7, 102]
    calls = await queue_behind_a_running_batch(batcher, runtime, [[n] for n in lengths])
    runtime.gate.set()
    results = await asyncio.gather(*calls)
    assert results[1:] == [[2 * n] for n in lengths]
    assert runtime.batches[1:] == [[5, 6, 7], [100, 101, 102]]
    assert batcher.stats.padded_cost - batcher.stats.cost == (1000 - 1000) + (7 * 3 - 18) + (102 * 3 - 303)
    await batcher.stop()


async def test_fifo_mode_keeps_arrival_order() -> None:
    runtime = GatedRuntime()
    batcher = make(runtime, max_batch_size=3, max_batch_tokens=10_000, length_grouping=False)
    await batcher.start()
    calls = await queue_behind_a_running_batch(batcher, runtime, [[n] for n in [5, 100, 6, 101, 7, 102]])
    runtime.gate.set()
    await asyncio.gather(*calls)
    assert runtime.batches[1:] == [[5, 100, 6], [101, 7, 102]]
    await batcher.stop()


async def test_the_oldest_text_always_leaves_with_the_next_batch() -> None:
    runtime = GatedRuntime()
    batcher = make(runtime, max_batch_size=2, max_batch_tokens=10_000, batch_lookahead=8)
    await batcher.start()
    # An odd-length text first, then many that group well with each other: it is not bypassed.
    calls = await queue_behind_a_running_batch(batcher, runtime, [[500], *([[10]] * 6)])
    runtime.gate.set()
    await asyncio.gather(*calls)
    assert 500 in runtime.batches[1]
    await batcher.stop()


async def test_a_huge_request_does_not_hold_back_small_ones() -> None:
    runtime = GatedRuntime()
    batcher = make(runtime, max_batch_size=4, length_grouping=False)
    await batcher.start()
    calls = await queue_behind_a_running_batch(batcher, runtime, [list(range(101, 113)), [1], [2], [3]])
    runtime.gate.set()
    results = await asyncio.gather(*calls)
    # Round-robin over requests: the small ones ride in the first batch with the big one's first text.
    assert runtime.batches[1] == [101, 1, 2, 3]
    assert results[1] == [2 * n for n in range(101, 113)]
    await batcher.stop()


async def test_finishing_a_batch_overlaps_the_next_inference() -> None:
    inferred: list[list[int]] = []
    finish_gate = threading.Event()
    second_inference_ran = threading.Event()

    def infer(items: list[int]) -> list[int]:
        inferred.append(items)
        if len(inferred) == 2:
            second_inference_ran.set()
        return items

    def finish(items: list[int], raw: list[int]) -> list[int]:
        if raw == [1]:  # the first batch's pooling waits until the second batch has been inferred
            assert finish_gate.wait(10)
        return [value * 2 for value in raw]

    batcher: MicroBatcher[int, int] = MicroBatcher(
        infer, finish, policy=BatchPolicy(max_batch_size=1, min_batch_efficiency=0.0)
    )
    await batcher.start()
    first = asyncio.ensure_future(batcher.submit([1]))
    second = asyncio.ensure_future(batcher.submit([2]))
    assert await asyncio.to_thread(second_inference_ran.wait, 10)
    assert not first.done()
    finish_gate.set()
    assert (await first, await second) == ([2], [4])
    await batcher.stop()


async def test_a_text_that_would_make_the_batch_mostly_padding_waits_for_its_own() -> None:
    runtime = GatedRuntime()
    batcher = make(runtime, max_batch_size=4, max_batch_tokens=10_000, min_batch_efficiency=0.8)
    await batcher.start()
    calls = await queue_behind_a_running_batch(batcher, runtime, [[100], [95], [10], [90]])
    runtime.gate.set()
    await asyncio.gather(*calls)
    # 100, 95, 90: 285 real of 300 padded; adding 10 would make it 295 of 400.
    assert runtime.batches[1:] == [[100, 95, 90], [10]]
    await batcher.stop()


async def test_the_observer_hears_each_batch_by_size_and_cost() -> None:
    runtime = GatedRuntime()
    runtime.gate.set()
    seen: list[tuple[int, int, int]] = []

    class Observer:
        def batch_ran(self, size: int, cost: int, padded: int, seconds: float, queued: Any) -> None:
            seen.append((size, cost, padded))

        def queue_changed(self, depth: int) -> None:
            pass

        def items_dropped(self, reason: str, count: int) -> None:
            pass

    batcher = MicroBatcher(
        runtime, policy=BatchPolicy(min_batch_efficiency=0.0), cost=lambda item: item, observer=Observer()
    )
    await batcher.start()
    assert await batcher.submit([3, 5]) == [6, 10]
    await batcher.stop()
    assert (batcher.stats.batches, batcher.stats.items_run, batcher.stats.cost) == (1, 2, 8)
    assert seen == [(2, 8, 10)]


def make_instances(*runtimes: GatedRuntime, **overrides: Any) -> MicroBatcher[int, int]:
    """A batcher with one model instance per runtime."""
    settings: dict[str, Any] = {
        "max_batch_size": 4,
        "max_wait_ms": 0.0,
        "max_queued_texts": 100,
        "min_batch_efficiency": 0.0,
    }
    settings.update(overrides)
    return MicroBatcher(list(runtimes), policy=BatchPolicy(**settings), cost=lambda item: item)


async def test_a_batch_runs_on_a_free_instance_while_another_is_busy() -> None:
    busy, free = GatedRuntime(), GatedRuntime()
    free.gate.set()
    batcher = make_instances(busy, free)
    await batcher.start()
    assert batcher.instances == 2
    held = asyncio.ensure_future(batcher.submit([1]))
    await wait_started(busy)
    assert await batcher.submit([2, 3]) == [4, 6]  # answered while the first instance is held
    assert (busy.batches, free.batches) == ([[1]], [[2, 3]])
    assert not held.done()
    busy.gate.set()
    assert await held == [2]
    await batcher.stop()


async def test_with_every_instance_busy_requests_queue_and_batch_for_the_first_free_one() -> None:
    first, second = GatedRuntime(), GatedRuntime()
    batcher = make_instances(first, second, max_batch_size=3)
    await batcher.start()
    running = [asyncio.ensure_future(batcher.submit([1]))]
    await wait_started(first)
    running.append(asyncio.ensure_future(batcher.submit([2])))
    await wait_started(second)
    queued = [asyncio.ensure_future(batcher.submit([value])) for value in (5, 6, 7)]
    await asyncio.sleep(0)
    second.gate.set()
    assert [await call for call in queued] == [[10], [12], [14]]
    assert second.batches == [[2], [5, 6, 7]]  # fair, in arrival order, one batch, on the free instance
    first.gate.set()
    assert [await call for call in running] == [[2], [4]]
    await batcher.stop()


async def test_a_failing_instance_fails_only_its_batch() -> None:
    failing, healthy = GatedRuntime(fail_on=1), GatedRuntime()
    batcher = make_instances(failing, healthy)
    await batcher.start()
    doomed = asyncio.ensure_future(batcher.submit([1]))
    await wait_started(failing)
    fine = asyncio.ensure_future(batcher.submit([2]))
    await wait_started(healthy)
    failing.gate.set()
    healthy.gate.set()
    with pytest.raises(RuntimeError, match="injected batch failure"):
        await doomed
    assert await fine == [4]
    assert await batcher.submit([3]) in ([6],)  # both instances serve on
    assert batcher.stats.batches_failed == 1
    await batcher.stop()


async def test_deadlines_hold_with_several_instances() -> None:
    first, second = GatedRuntime(), GatedRuntime()
    batcher = make_instances(first, second)
    await batcher.start()
    running = [asyncio.ensure_future(batcher.submit([1]))]
    await wait_started(first)
    running.append(asyncio.ensure_future(batcher.submit([2])))
    await wait_started(second)
    with pytest.raises(DeadlineExpired):
        await batcher.submit([9], timeout=0.05)
    first.gate.set()
    second.gate.set()
    await asyncio.gather(*running)
    assert [9] not in first.batches + second.batches  # expired while queued: never computed
    await batcher.stop()


async def test_a_batch_formed_at_an_idle_quiet_runtime_runs_on_the_idle_path_the_rest_on_infer() -> None:
    idle_runs: list[list[int]] = []

    def idle_infer(items: list[int]) -> list[int]:
        idle_runs.append(list(items))
        return [item * 2 for item in items]

    runtime = GatedRuntime()
    settings = BatchPolicy(max_batch_size=4, max_wait_ms=0.0, max_queued_texts=100, min_batch_efficiency=0.0)
    quiet = [True]
    batcher: MicroBatcher[int, int] = MicroBatcher(
        [runtime], policy=settings, cost=lambda item: item, idle_path=IdlePath([idle_infer], lambda: quiet[0])
    )
    await batcher.start()
    assert await batcher.submit([1]) == [2]  # nothing else ran or waited: the idle instance
    assert idle_runs == [[1]] and runtime.batches == []
    runtime.gate.set()
    idle_runs.clear()
    # Two calls arriving together: the first finds the runtime idle; the second's batch forms when
    # the first hands back, while that batch is still in progress: not idle.
    first, second = await asyncio.gather(batcher.submit([3]), batcher.submit([40]))
    assert (first, second) == ([6], [80])
    assert idle_runs == [[3]] and runtime.batches == [[40]]
    quiet[0] = False  # an idle runtime, but other calls in flight elsewhere in the server
    assert await batcher.submit([5]) == [10]
    assert idle_runs == [[3]] and runtime.batches == [[40], [5]]
    await batcher.stop()
    with pytest.raises(ValueError, match="one infer per instance"):
        MicroBatcher([runtime, runtime], policy=settings, idle_path=IdlePath([idle_infer]))
