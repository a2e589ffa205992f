"""Dynamic micro-batching: many small requests become the batch shapes the runtime runs best.

One asyncio class, a future per request. A request's items wait in a bounded queue. Whenever the
runtime is free (no added latency when idle) — or, with `max_wait_ms` > 0, once a batch is full
or its oldest item has waited that long — a batch is formed:

- bounded by `max_batch_size` items and by a padded-cost budget (items x costliest <=
  `max_batch_tokens`; for texts the cost is the token count, so this is a padded-token budget);
- fair: candidates are taken round-robin over requests (each request's next item first), so one
  huge request cannot monopolise the runtime ahead of many small ones;
- length-grouped: the oldest waiting item always goes (no starvation, bounded reordering), and
  the rest are the candidates within a `batch_lookahead` window whose lengths are closest to it, so
  padding waste stays low; an item joins only while real cost / padded cost stays at or above
  `min_batch_efficiency` (on a CPU, padding costs as much as real work).

There is no worker task: batches are formed by events. A request arriving at an idle runtime
is formed into a batch inside `submit` and handed to an instance's lane (`lanes.Lane`, a
dedicated thread) at once; requests arriving in the same loop iteration as others leave together
at its end; a lane that finishes hands back with one `call_soon_threadsafe`, which frees its
instance, forms the next batch first, then completes the futures of the batch it ran. So an
idle call costs one thread hop each way and no queue wake-ups. `finish` (pooling, for texts) runs
in the lane itself when nothing else waits, else in a finishing lane so it overlaps the next
batch's run. Items of cancelled or expired requests are dropped before a batch is formed and
never computed. A failing batch fails exactly its requests. The module knows nothing of gRPC,
nor of what its items are: the inference batcher runs token sequences, the search batcher top-k
searches. Nothing here runs on the event loop but queue bookkeeping.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from embedrec.server.batching.lanes import Lane
from embedrec.server.batching.observer import BatcherStats, BatchObserver, NullObserver
from embedrec.server.batching.policy import BatchPolicy
from embedrec.server.errors import DeadlineExpired, Overloaded, Unavailable
from embedrec.server.observability.tracing import BatchTracer

Item = TypeVar("Item")
Result = TypeVar("Result")

logger = logging.getLogger(__name__)


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


@dataclass
class _Launch:
    """A batch on its way through a lane: what ran where, and when (for metrics and traces)."""

    instance: int
    batch: list[_Slot]
    items: list[Any]
    started: float  # loop time
    started_ns: int  # wall clock
    queue_seconds: list[float]
    idle: bool = False  # formed while no other batch ran or waited
    inferred_ns: int = 0


@dataclass(frozen=True)
class IdlePath:
    """Another way to run a batch that finds the whole server idle: `infers`, one per instance like
    the batcher's `infer` (e.g. sessions whose threads spin, faster alone but greedy under load),
    run a batch formed while no other batch of this batcher runs or waits and `quiet()` holds
    (e.g. no other call in flight); every other batch runs on `infer`."""

    infers: Sequence[Callable[[list[Any]], Any]]
    quiet: Callable[[], bool] = lambda: True


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
        queue_limit_name: str = "max_queued_texts",
        observer: BatchObserver | None = None,
        niceness: int = 0,
        tracer: BatchTracer | None = None,
        idle_path: IdlePath | None = None,
    ) -> None:
        """`infer(items)` does the work of a batch (an instance's lane); `finish(items, raw)` turns its
        output into one result per item, in order (finishing thread). A sequence of `infer`
        callables is one per instance (e.g. one ONNX Runtime session each): each has its own
        thread, and the next batch is formed as soon as any instance is free, for that instance;
        queue, fairness, length grouping, deadlines and the cost budget are the same for all. Without `finish`, `infer`
        must return the results itself. `cost(item)` is what an item costs (a text's token count;
        1 per search). `unit` and `queue_limit_name` name the items and the queue bound in
        Overloaded messages. `observer` hears about batches, queue depth and dropped items. If batch
        formation itself fails (a bug, not a failed batch), every waiting request fails with
        Unavailable ("worker restarted") and the next request is served as usual: health does
        not flip (a probe could act on nothing in between).
        `niceness` > 0 lowers the OS priority of the lanes' threads (and of the threads a runtime
        creates from them): under contention they yield the cores to the rest.
        `tracer`, when given, captures each caller's trace context at submit and hears about every
        batch with wall-clock times (None, the default, costs nothing). `idle_path`: see `IdlePath`.
        """
        self._infers = list(infer) if isinstance(infer, Sequence) else [infer]
        if not self._infers:
            raise ValueError("infer: give at least one instance")
        if idle_path is not None and len(idle_path.infers) != len(self._infers):
            raise ValueError("idle_path: give one infer per instance, as for infer")
        self._idle_path = idle_path
        self._finish = finish
        self._cost = cost
        self.policy = policy
        self.stats = BatcherStats()
        self._name = name
        self._unit = unit
        self._queue_limit_name = queue_limit_name
        self._queue: collections.deque[_Request[Item, Result]] = collections.deque()
        self._queued_items = 0
        self._lanes: list[Lane] = []
        self._finisher: Lane | None = None
        self._idle: collections.deque[int] = collections.deque()  # instances free to run a batch
        self._in_progress = 0  # batches running or finishing
        self._settled = asyncio.Event()  # set while nothing is in progress
        self._settled.set()
        self._dispatch_scheduled = False
        self._company_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop  # the running loop, from start()
        self._accepting = False
        self._observer: BatchObserver = observer or NullObserver()
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
        """Start the lanes (one thread per instance, one for finishing); submits are accepted
        from now on."""
        if self._lanes:
            return
        self._loop = asyncio.get_running_loop()
        self._lanes = [
            Lane(f"{self._name}-infer{index}", niceness=self._niceness) for index in range(len(self._infers))
        ]
        self._finisher = Lane(f"{self._name}-finish", niceness=self._niceness) if self._finish is not None else None
        self._idle = collections.deque(range(len(self._infers)))
        self._accepting = True

    async def stop(self) -> None:
        """Refuse new submits, fail queued items with Unavailable, let running batches finish."""
        self._accepting = False
        self._fail_queued(Unavailable("server is shutting down"), reason="shutdown")
        if self._company_timer is not None:
            self._company_timer.cancel()
            self._company_timer = None
        await self._settled.wait()
        for lane in (*self._lanes, *([self._finisher] if self._finisher is not None else [])):
            lane.close()
        self._lanes, self._finisher, self._idle = [], None, collections.deque()

    def check_admission(self, count: int) -> None:
        """Raise Overloaded when `count` more items would exceed the queue bound.

        Callers may check before preparing items (e.g. tokenising) so that refused work costs
        nothing; `submit` checks again.
        """
        limit = self.policy.max_queued_texts
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
        if self._idle:
            self._dispatch_now_or_soon()
        timer = None if timeout is None else loop.call_later(timeout, _expire, request)
        try:
            return await request.future
        finally:
            if timer is not None:
                timer.cancel()

    def _dispatch_now_or_soon(self) -> None:
        """A free instance and new items: a lone request at an idle runtime goes at once (the
        idle fast path); otherwise batch formation waits for the end of this loop iteration, so
        that requests arriving together leave together."""
        if len(self._queue) == 1 and self.policy.max_wait_ms <= 0:
            self._dispatch()
        elif not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """While an instance is free and live items wait, form a batch and start it on that
        instance's lane. Runs on the event loop (queue bookkeeping only). If it fails (a bug, not
        a failed batch), everything queued fails with Unavailable and the next call starts
        afresh: nobody waits forever, and running batches are unaffected."""
        self._dispatch_scheduled = False
        try:
            now = self._loop.time()
            self._drop_dead(now)
            while self._idle and self._queue and not self._waiting_for_company(now):
                batch = self._form_batch()
                self._launch(self._idle.popleft(), batch, now)
        except Exception as error:
            self.stats.worker_restarts += 1
            logger.critical("%s worker failed; restarting it", self._name, exc_info=error)
            self._fail_queued(Unavailable(f"{self._name} worker restarted; retry"), reason="worker_restart")

    def _waiting_for_company(self, now: float) -> bool:
        """With max_wait_ms, hold a partial batch until it fills or its oldest item waited long
        enough (a timer dispatches then); True while holding."""
        wait_s = self.policy.max_wait_ms / 1000.0
        if wait_s <= 0 or self._queued_items >= self.policy.max_batch_size or not self._accepting:
            return False
        due = self._queue[0].enqueued_at + wait_s
        if now >= due:
            return False
        if self._company_timer is None or self._company_timer.when() > due:
            if self._company_timer is not None:
                self._company_timer.cancel()
            self._company_timer = self._loop.call_at(due, self._company_waited)
        return True

    def _company_waited(self) -> None:
        self._company_timer = None
        self._dispatch()

    def _fail_queued(self, error: BaseException, *, reason: str) -> None:
        dropped = self._queued_items
        while self._queue:
            _fail(self._queue.popleft(), error)
        self._queued_items = 0
        self._observer.queue_changed(0)
        if dropped:
            self._observer.items_dropped(reason, dropped)

    def _launch(self, instance: int, batch: list[_Slot], now: float) -> None:
        """Start `batch` on `instance`'s lane; it reports back through `_inferred`."""
        idle = self._idle_path is not None and self._in_progress == 0 and not self._queue and self._idle_path.quiet()
        self._in_progress += 1
        self._settled.clear()
        launch = _Launch(
            instance,
            batch,
            [slot.request.items[slot.index] for slot in batch],
            now,
            time.time_ns(),
            [now - slot.request.enqueued_at for slot in batch],
            idle,
        )
        self._lanes[instance].submit(functools.partial(self._infer_in_lane, launch))

    def _infer_in_lane(self, launch: _Launch) -> None:
        """In the instance's lane: run `infer`, and `finish` too when no other batch is waiting
        (saves the hand-off at low load; a stale read of the queue only costs the overlap); then
        one hand-back to the loop."""
        finished = self._finish is None
        try:
            infers = self._idle_path.infers if launch.idle and self._idle_path is not None else self._infers
            output = infers[launch.instance](launch.items)
            launch.inferred_ns = time.time_ns()
            if not finished and self._queued_items == 0:
                assert self._finish is not None
                output, finished = self._finish(launch.items, output), True
        except Exception as error:  # noqa: BLE001 (a failed batch fails its requests, never the worker)
            output, finished = error, True
        self._to_loop(self._inferred, launch, output, finished)

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed without stop(): nobody to answer
            self._loop.call_soon_threadsafe(callback, *args)

    def _inferred(self, launch: _Launch, output: Any, finished: bool) -> None:
        """On the loop: the instance is free (the next batch starts first), then the batch is
        delivered, failed, or handed to the finishing lane."""
        batch = launch.batch
        try:
            self._idle.append(launch.instance)
            if self._queue:
                self._dispatch()
            if isinstance(output, Exception):
                self._trace(batch, launch.started_ns, time.time_ns(), output)
                self._batch_failed(batch, output)
                return
            self._observer.batch_ran(
                len(batch),
                sum(slot.cost for slot in batch),
                len(batch) * max(slot.cost for slot in batch),
                self._loop.time() - launch.started,
                launch.queue_seconds,
            )
            if finished:
                self._trace(batch, launch.started_ns, launch.inferred_ns)
                self._deliver(batch, output)
                return
            assert self._finisher is not None
            self._in_progress += 1  # released by _finished
            self._finisher.submit(functools.partial(self._finish_in_lane, launch, output))
        finally:
            self._settle()

    def _finish_in_lane(self, launch: _Launch, output: Any) -> None:
        assert self._finish is not None
        try:
            results: Any = self._finish(launch.items, output)
        except Exception as error:  # noqa: BLE001 (a failed batch fails its requests, never the worker)
            results = error
        self._to_loop(self._finished, launch, results)

    def _finished(self, launch: _Launch, results: Any) -> None:
        try:
            error = results if isinstance(results, Exception) else None
            self._trace(launch.batch, launch.started_ns, launch.inferred_ns, error)
            if error is not None:
                self._batch_failed(launch.batch, error)
            else:
                self._deliver(launch.batch, results)
        finally:
            self._settle()

    def _settle(self) -> None:
        self._in_progress -= 1
        if self._in_progress == 0:
            self._settled.set()

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

    def _candidates(self) -> list[_Slot]:
        """Up to `batch_lookahead` pending items, round-robin over requests in arrival order."""
        limit = self.policy.batch_lookahead
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
        if policy.length_grouping:
            others = sorted(others, key=lambda slot: (abs(slot.cost - head.cost), slot.order))
        chosen, costliest, total = [head], head.cost, head.cost
        for slot in others:
            if len(chosen) == policy.max_batch_size:
                break
            widest = max(costliest, slot.cost)
            padded = widest * (len(chosen) + 1)
            if padded > policy.max_batch_tokens or (total + slot.cost) < policy.min_batch_efficiency * padded:
                if policy.length_grouping:
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


def _expire(request: _Request[Any, Any]) -> None:
    """The caller's deadline passed: answer now; queued items are dropped at the next batch."""
    _fail(request, DeadlineExpired("deadline exceeded while queued or running"))


def _fail(request: _Request[Any, Any], error: BaseException) -> None:
    if not request.future.done():
        request.future.set_exception(error)
