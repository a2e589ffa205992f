"""Dynamic micro-batching: many small requests become the batch shapes the runtime runs best.

One asyncio class, a future per request. A request's items wait in a bounded queue. Whenever the
runtime is free (no added latency when idle) — or, with `max_wait_ms` > 0, once a batch is full
or its oldest item has waited that long — the worker forms a batch:

- bounded by `max_batch_size` items and by a padded-cost budget (items x costliest <=
  `max_batch_cost`; for texts the cost is the token count, so this is a padded-token budget);
- fair: candidates are taken round-robin over requests (each request's next item first), so one
  huge request cannot monopolise the runtime ahead of many small ones;
- length-grouped: the oldest waiting item always goes (no starvation, bounded reordering), and
  the rest are the candidates within a `lookahead` window whose lengths are closest to it, so
  padding waste stays low; an item joins only while real cost / padded cost stays at or above
  `min_efficiency` (on a CPU, padding costs as much as real work).

A batch runs in the worker's dedicated thread, off the event loop; each batch's `finish` step
(pooling, for texts) runs in a second thread, so it overlaps the next batch's run. Items of cancelled or
expired requests are dropped before a batch is formed and never computed. A failing batch fails
exactly its requests; the worker keeps serving. The module knows nothing of gRPC, nor of what
its items are: the inference batcher runs token sequences, the search batcher top-k searches.
Nothing here runs on the event loop but queue bookkeeping: every batch, however small, runs in
the worker's thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from embedrec.server.errors import DeadlineExpired, Overloaded, Unavailable
from embedrec.server.observability.tracing import BatchTracer

Item = TypeVar("Item")
Result = TypeVar("Result")

logger = logging.getLogger(__name__)


@dataclass
class BatcherStats:
    """Counters since start: what ran, and what was dropped without being computed."""

    batches: int = 0
    items_run: int = 0
    padded_cost: int = 0
    cost: int = 0
    items_expired: int = 0
    items_cancelled: int = 0
    batches_failed: int = 0
    worker_restarts: int = 0


class BatchObserver(Protocol):
    """Receives what the batcher does (e.g. to export metrics); every method must be cheap.

    `batch_ran`: a batch of `size` items with summed `cost` (padded: size x costliest) ran in
    `run_s` seconds, its items having waited `queue_seconds`. `queue_changed`: items waiting now.
    `items_dropped`: `count` queued items were dropped before running (reason: expired,
    cancelled, shutdown, worker_restart).
    """

    def batch_ran(
        self, size: int, cost: int, padded_cost: int, run_s: float, queue_seconds: Sequence[float]
    ) -> None: ...

    def queue_changed(self, depth: int) -> None: ...

    def items_dropped(self, reason: str, count: int) -> None: ...


class _NoObserver:
    def batch_ran(self, size: int, cost: int, padded_cost: int, run_s: float, queue_seconds: Sequence[float]) -> None:
        pass

    def queue_changed(self, depth: int) -> None:
        pass

    def items_dropped(self, reason: str, count: int) -> None:
        pass


@dataclass(frozen=True)
class BatchPolicy:
    """The knobs of batch formation and admission (see the module docstring)."""

    max_batch_size: int = 32
    max_batch_cost: int = 1024
    max_wait_ms: float = 0.0
    max_queued_items: int = 256
    group_by_length: bool = True
    lookahead: int = 64
    min_efficiency: float = 0.0

    def __post_init__(self) -> None:
        if min(self.max_batch_size, self.max_batch_cost, self.max_queued_items, self.lookahead) < 1:
            raise ValueError("max_batch_size, max_batch_cost, max_queued_items and lookahead must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        if not 0.0 <= self.min_efficiency <= 1.0:
            raise ValueError("min_efficiency must be in [0, 1]")


@dataclass(eq=False)
class _Request(Generic[Item, Result]):
    items: Sequence[Item]
    costs: list[int]
    future: asyncio.Future[list[Result]]
    deadline: float | None
    enqueued_at: float
    pending: list[int]
    results: list[Result | None] = field(default_factory=list)
    remaining: int = 0
    trace: Any = None  # with a tracer: (the caller's span context, wall-clock ns at submit)


@dataclass(frozen=True)
class _Slot:
    request: _Request[Any, Any]
    index: int
    cost: int
    order: int


class MicroBatcher(Generic[Item, Result]):
    """Groups items of concurrent `submit` calls into batches for `infer` and `finish`."""

    def __init__(
        self,
        infer: Callable[[list[Item]], Any] | Sequence[Callable[[list[Item]], Any]],
        finish: Callable[[list[Item], Any], Sequence[Result]] | None = None,
        *,
        policy: BatchPolicy,
        cost: Callable[[Item], int] = lambda _: 1,
        name: str = "batcher",
        unit: str = "items",
        queue_limit_name: str = "max_queued_items",
        observer: BatchObserver | None = None,
        niceness: int = 0,
        tracer: BatchTracer | None = None,
    ) -> None:
        """`infer(items)` does the work of a batch (worker thread); `finish(items, raw)` turns its
        output into one result per item, in order (finishing thread). A sequence of `infer`
        callables is one per instance (e.g. one ONNX Runtime session each): each has its own
        thread, and the next batch is formed as soon as any instance is free, for that instance;
        queue, fairness, length grouping, deadlines and the cost budget are the same for all. Without `finish`, `infer`
        must return the results itself. `cost(item)` is what an item costs (a text's token count;
        1 per search). `unit` and `queue_limit_name` name the items and the queue bound in
        Overloaded messages. `observer` hears about batches, queue depth and dropped items. If the
        worker itself dies (a bug, not a failed batch), every waiting request fails with
        Unavailable and the worker is restarted at once: health does not flip, because the
        restarted worker serves the next batch (a probe could act on nothing in between).
        `niceness` > 0 lowers the OS priority of the worker's threads (and of the threads a
        runtime creates from them), so that under contention they yield the cores to the rest.
        `tracer`, when given, captures each caller's trace context at submit and hears about every
        batch with wall-clock times (None, the default, costs nothing).
        """
        self._infers = list(infer) if isinstance(infer, Sequence) else [infer]
        if not self._infers:
            raise ValueError("infer: give at least one instance")
        self._finish = finish
        self._cost = cost
        self.policy = policy
        self.stats = BatcherStats()
        self._name = name
        self._unit = unit
        self._queue_limit_name = queue_limit_name
        self._queue: collections.deque[_Request[Item, Result]] = collections.deque()
        self._queued_items = 0
        self._arrived = asyncio.Event()
        self._infer_executors: list[ThreadPoolExecutor] = []
        self._idle_instances: asyncio.Queue[int] = asyncio.Queue()
        self._running: dict[asyncio.Task[None], list[_Slot]] = {}
        self._finish_executor: ThreadPoolExecutor | None = None
        self._worker: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Future[Any]] = set()
        self._accepting = False
        self._observer: BatchObserver = observer or _NoObserver()
        self._niceness = niceness
        self._tracer = tracer

    @property
    def instances(self) -> int:
        """How many batches can run at once (one per `infer` callable)."""
        return len(self._infers)

    @property
    def queued_items(self) -> int:
        """Items waiting in the queue (not counting batches that are running)."""
        return self._queued_items

    async def start(self) -> None:
        """Start the worker; submits are accepted from now on."""
        if self._worker is not None:
            return
        *self._infer_executors, self._finish_executor = (
            ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"{self._name}-{role}",
                initializer=lower_thread_priority,
                initargs=(self._niceness,),
            )
            for role in [*(f"infer{index}" for index in range(len(self._infers))), "finish"]
        )
        self._idle_instances = asyncio.Queue()
        for instance in range(len(self._infers)):
            self._idle_instances.put_nowait(instance)
        self._accepting = True
        self._worker = asyncio.get_running_loop().create_task(self._supervise(), name=self._name)

    async def stop(self) -> None:
        """Refuse new submits, fail queued items with Unavailable, let running batches finish."""
        self._accepting = False
        self._fail_queued(Unavailable("server is shutting down"), reason="shutdown")
        if self._worker is not None:
            self._arrived.set()
            await self._worker
            self._worker = None
        if self._running:
            await asyncio.wait(list(self._running))
        if self._finishing:
            await asyncio.wait(self._finishing)
        for executor in (*self._infer_executors, self._finish_executor):
            if executor is not None:
                executor.shutdown(wait=True)
        self._infer_executors, self._finish_executor = [], None

    def check_admission(self, count: int) -> None:
        """Raise Overloaded when `count` more items would exceed the queue bound.

        Callers may check before preparing items (e.g. tokenising) so that refused work costs
        nothing; `submit` checks again.
        """
        limit = self.policy.max_queued_items
        if self._queued_items + count > limit:
            raise Overloaded(
                f"server overloaded: {self._queued_items} {self._unit} queued, this request adds {count}, "
                f"limit {self._queue_limit_name}={limit}; retry with backoff"
            )

    async def submit(self, items: Sequence[Item], *, timeout: float | None = None) -> list[Result]:
        """Queue `items` and wait for their results, in order.

        Raises Overloaded when the queue bound would be exceeded, DeadlineExpired when
        `timeout` seconds pass first, Unavailable when not started or stopping, and whatever
        the runtime raised for a batch holding one of the items.
        """
        if not self._accepting:
            raise Unavailable("server is not accepting work (starting or shutting down)")
        if not items:
            return []
        self.check_admission(len(items))
        loop = asyncio.get_running_loop()
        now = loop.time()
        request: _Request[Item, Result] = _Request(
            items=items,
            costs=[self._cost(item) for item in items],
            future=loop.create_future(),
            deadline=None if timeout is None else now + timeout,
            enqueued_at=now,
            pending=list(range(len(items))),
            results=[None] * len(items),
            remaining=len(items),
        )
        if self._tracer is not None:
            request.trace = (self._tracer.capture(), time.time_ns())
        self._queue.append(request)
        self._queued_items += len(items)
        self._observer.queue_changed(self._queued_items)
        self._arrived.set()
        timer = None if timeout is None else loop.call_later(timeout, _expire, request)
        try:
            return await request.future
        finally:
            if timer is not None:
                timer.cancel()

    async def _supervise(self) -> None:
        """Run the worker; if it dies of a bug, answer everyone waiting and start it again."""
        while True:
            try:
                await self._work()
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.stats.worker_restarts += 1
                logger.critical("%s worker died; restarting it", self._name, exc_info=error)
                crash = Unavailable(f"{self._name} worker restarted; retry")
                for batch in self._running.values():
                    for slot in batch:
                        _fail(slot.request, crash)
                self._fail_queued(crash, reason="worker_restart")
                await asyncio.sleep(0)

    def _fail_queued(self, error: BaseException, *, reason: str) -> None:
        dropped = self._queued_items
        while self._queue:
            _fail(self._queue.popleft(), error)
        self._queued_items = 0
        self._observer.queue_changed(0)
        if dropped:
            self._observer.items_dropped(reason, dropped)

    async def _work(self) -> None:
        """Whenever an instance is free, form a batch for it and start it; on stop, wait for the
        running batches."""
        loop = asyncio.get_running_loop()
        while True:
            instance = await self._idle_instances.get()
            try:
                batch = await self._next_batch(loop)
            except BaseException:
                self._idle_instances.put_nowait(instance)
                raise
            if batch is None:
                self._idle_instances.put_nowait(instance)
                if self._running:
                    await asyncio.wait(list(self._running))
                return
            task = loop.create_task(self._run_batch(loop, instance, batch), name=f"{self._name}-batch")
            self._running[task] = batch

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, instance: int, batch: list[_Slot]) -> None:
        """Run `batch` on `instance` (its thread), deliver or hand it to the finishing thread; the
        instance is free again afterwards, whatever happened."""
        try:
            now = loop.time()
            started_ns = time.time_ns()
            queue_seconds = [now - slot.request.enqueued_at for slot in batch]
            items = [slot.request.items[slot.index] for slot in batch]
            executor = self._infer_executors[instance]
            try:
                raw, finished, inferred_ns = await loop.run_in_executor(
                    executor, self._infer_and_maybe_finish, instance, items
                )
            except Exception as error:  # noqa: BLE001 (a failed batch fails its requests, never the worker)
                self._trace(batch, started_ns, time.time_ns(), error)
                self._batch_failed(batch, error)
                return
            cost = sum(slot.cost for slot in batch)
            self._observer.batch_ran(
                len(batch), cost, len(batch) * max(slot.cost for slot in batch), loop.time() - now, queue_seconds
            )
            if finished:
                self._trace(batch, started_ns, inferred_ns)
                self._deliver(batch, raw)
                return
            assert self._finish is not None  # else _infer_and_maybe_finish finished it
            finishing = loop.run_in_executor(self._finish_executor, self._finish, items, raw)
            self._finishing.add(finishing)
            finishing.add_done_callback(functools.partial(self._finished, batch, started_ns, inferred_ns))
        finally:
            self._running.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            self._idle_instances.put_nowait(instance)

    def _infer_and_maybe_finish(self, instance: int, items: list[Item]) -> tuple[Any, bool, int]:
        """Run `instance`'s `infer`; also `finish` in this thread when no other batch is waiting
        (saves a thread hop at low load). Returns (output, whether it is finished, wall-clock ns
        when `infer` returned)."""
        raw = self._infers[instance](items)
        inferred_ns = time.time_ns()
        if self._finish is None:
            return raw, True, inferred_ns
        if self._queued_items == 0:  # read across threads: a stale value only costs the overlap
            return self._finish(items, raw), True, inferred_ns
        return raw, False, inferred_ns

    def _finished(self, batch: list[_Slot], started_ns: int, inferred_ns: int, done: asyncio.Future[Any]) -> None:
        self._finishing.discard(done)
        error = done.exception()
        self._trace(batch, started_ns, inferred_ns, error)
        if error is not None:
            self._batch_failed(batch, error)
        else:
            self._deliver(batch, done.result())

    def _trace(self, batch: list[_Slot], started_ns: int, inferred_ns: int, error: BaseException | None = None) -> None:
        """Hand the batch to the tracer, if any: one entry per request, with its items here."""
        if self._tracer is None:
            return
        per_request: dict[int, list[Any]] = {}
        for slot in batch:
            entry = per_request.setdefault(id(slot.request), [*(slot.request.trace or (None, started_ns)), 0])
            entry[2] += 1
        self._tracer.batch_ran(
            [(context, enqueued_ns, items) for context, enqueued_ns, items in per_request.values()],
            started_ns=started_ns,
            inferred_ns=inferred_ns,
            finished_ns=time.time_ns(),
            cost=sum(slot.cost for slot in batch),
            padded_cost=len(batch) * max(slot.cost for slot in batch),
            error=error,
        )

    def _deliver(self, batch: list[_Slot], results: Sequence[Any]) -> None:
        if len(results) != len(batch):
            self._batch_failed(batch, RuntimeError(f"runtime returned {len(results)} results for {len(batch)} items"))
            return
        self.stats.batches += 1
        self.stats.items_run += len(batch)
        self.stats.padded_cost += len(batch) * max(slot.cost for slot in batch)
        self.stats.cost += sum(slot.cost for slot in batch)
        for slot, result in zip(batch, results, strict=True):
            request = slot.request
            if request.future.done():
                continue
            request.results[slot.index] = result
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(request.results)

    def _batch_failed(self, batch: list[_Slot], error: BaseException) -> None:
        self.stats.batches_failed += 1
        logger.error("batch of %d items failed: %s", len(batch), error, exc_info=error)
        for slot in batch:
            _fail(slot.request, error)

    async def _next_batch(self, loop: asyncio.AbstractEventLoop) -> list[_Slot] | None:
        """Wait for live items, then form one batch; None once stopped and drained."""
        while True:
            self._drop_dead(loop.time())
            if not self._queue:
                if not self._accepting:
                    return None
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if await self._should_wait_for_company(loop):
                continue
            batch = self._form_batch()
            if batch:
                return batch

    async def _should_wait_for_company(self, loop: asyncio.AbstractEventLoop) -> bool:
        """With max_wait_ms, hold a partial batch until it fills or its oldest item waited long
        enough; True when the caller should re-check the queue."""
        wait_s = self.policy.max_wait_ms / 1000.0
        if wait_s <= 0 or self._queued_items >= self.policy.max_batch_size:
            return False
        waited = loop.time() - self._queue[0].enqueued_at
        if waited >= wait_s or not self._accepting:
            return False
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), wait_s - waited)
        return True

    def _candidates(self) -> list[_Slot]:
        """Up to `lookahead` pending items, round-robin over requests in arrival order."""
        limit = self.policy.lookahead
        slots: list[_Slot] = []
        depth = 0
        while len(slots) < limit:
            added = False
            for request in self._queue:
                if depth < len(request.pending):
                    index = request.pending[depth]
                    slots.append(_Slot(request, index, request.costs[index], len(slots)))
                    added = True
                    if len(slots) == limit:
                        break
            if not added:
                break
            depth += 1
        return slots

    def _form_batch(self) -> list[_Slot]:
        policy = self.policy
        candidates = self._candidates()
        head, others = candidates[0], candidates[1:]
        if policy.group_by_length:
            others = sorted(others, key=lambda slot: (abs(slot.cost - head.cost), slot.order))
        chosen, costliest, total = [head], head.cost, head.cost
        for slot in others:
            if len(chosen) == policy.max_batch_size:
                break
            widest = max(costliest, slot.cost)
            padded = widest * (len(chosen) + 1)
            if padded > policy.max_batch_cost or (total + slot.cost) < policy.min_efficiency * padded:
                if policy.group_by_length:
                    continue
                break
            chosen.append(slot)
            costliest, total = widest, total + slot.cost
        for slot in chosen:
            slot.request.pending.remove(slot.index)
        self._queued_items -= len(chosen)
        self._observer.queue_changed(self._queued_items)
        self._queue = collections.deque(request for request in self._queue if request.pending)
        return sorted(chosen, key=lambda slot: slot.order)

    def _drop_dead(self, now: float) -> None:
        """Remove requests whose caller is gone or whose deadline passed (answering the latter)."""
        live: collections.deque[_Request[Item, Result]] = collections.deque()
        for request in self._queue:
            dropped = len(request.pending)
            if request.future.done():
                # A caller cancelled at or past its deadline (gRPC cancels the call when the deadline
                # passes, racing this check) was dropped for expiry, not by choice.
                expired = request.deadline is not None and now >= request.deadline
                if request.future.cancelled() and not expired:
                    self.stats.items_cancelled += dropped
                    self._observer.items_dropped("cancelled", dropped)
                elif expired or isinstance(request.future.exception(), DeadlineExpired):
                    self.stats.items_expired += dropped
                    self._observer.items_dropped("expired", dropped)
            elif request.deadline is not None and now >= request.deadline:
                self.stats.items_expired += dropped
                self._observer.items_dropped("expired", dropped)
                request.future.set_exception(DeadlineExpired("deadline exceeded while queued"))
            else:
                live.append(request)
                continue
            self._queued_items -= dropped
            self._observer.queue_changed(self._queued_items)
        self._queue = live


def lower_thread_priority(niceness: int) -> None:
    """Raise the calling thread's nice value by `niceness` (Linux: per thread; threads it starts
    inherit it). Where the platform has no per-thread priority, nothing happens."""
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + niceness)


def _expire(request: _Request[Any, Any]) -> None:
    """The caller's deadline passed: answer now; queued items are dropped at the next batch."""
    _fail(request, DeadlineExpired("deadline exceeded while queued or running"))


def _fail(request: _Request[Any, Any], error: BaseException) -> None:
    if not request.future.done():
        request.future.set_exception(error)
