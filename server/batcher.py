"""Dynamic micro-batching: many small requests become the batch shapes the runtime runs best.

One asyncio class, a future per request. A request's items enter a bounded FIFO queue; one
worker takes up to `max_batch_size` live items whenever the runtime is free (no added latency
when idle) or, with `max_wait_ms` > 0, once the batch is full or its oldest item has waited that
long. Inference runs in a dedicated thread, off the event loop. Items of cancelled or expired
requests are dropped before a batch is formed and never computed. A failing batch fails exactly
its requests; the worker keeps serving. The module knows nothing of gRPC.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from server.errors import DeadlineExpired, Overloaded, Unavailable

Item = TypeVar("Item")
Result = TypeVar("Result")

logger = logging.getLogger(__name__)


@dataclass
class BatcherStats:
    """Counters since start: what ran, and what was dropped without being computed."""

    batches: int = 0
    items_run: int = 0
    items_expired: int = 0
    items_cancelled: int = 0
    batches_failed: int = 0


@dataclass(eq=False)
class _Request(Generic[Result]):
    future: asyncio.Future[list[Result]]
    results: list[Result | None]
    remaining: int
    deadline: float | None


@dataclass(eq=False)
class _Entry(Generic[Item, Result]):
    item: Item
    request: _Request[Result]
    index: int
    enqueued_at: float = field(default=0.0)


class MicroBatcher(Generic[Item, Result]):
    """Groups items of concurrent `submit` calls into batches for `run_batch`."""

    def __init__(
        self,
        run_batch: Callable[[list[Item]], Sequence[Result]],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queued_items: int,
        name: str = "batcher",
    ) -> None:
        """`run_batch(items)` must return one result per item, in order; it runs in a thread.

        `max_queued_items` bounds the queue: a submit that would exceed it fails at once with
        Overloaded.
        """
        if max_batch_size < 1 or max_queued_items < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queued_items must be >= 1, max_wait_ms >= 0")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queued_items = max_queued_items
        self.stats = BatcherStats()
        self._name = name
        self._queue: collections.deque[_Entry[Item, Result]] = collections.deque()
        self._arrived = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._worker: asyncio.Task[None] | None = None
        self._accepting = False

    @property
    def queued_items(self) -> int:
        """Items waiting in the queue (not counting the batch that is running)."""
        return len(self._queue)

    async def start(self) -> None:
        """Start the worker; submits are accepted from now on."""
        if self._worker is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        self._accepting = True
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=self._name)

    async def stop(self) -> None:
        """Refuse new submits, fail queued items with Unavailable, let the running batch finish."""
        self._accepting = False
        while self._queue:
            entry = self._queue.popleft()
            _fail(entry.request, Unavailable("server is shutting down"))
        if self._worker is not None:
            self._arrived.set()
            await self._worker
            self._worker = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, items: Sequence[Item], *, timeout: float | None = None) -> list[Result]:
        """Queue `items` and wait for their results, in order.

        Raises Overloaded when the queue bound would be exceeded, DeadlineExpired when
        `timeout` seconds pass first, Unavailable when not started or stopping, and whatever
        `run_batch` raised for a batch holding one of the items.
        """
        if not self._accepting:
            raise Unavailable("server is not accepting work (starting or shutting down)")
        if not items:
            return []
        if len(self._queue) + len(items) > self.max_queued_items:
            raise Overloaded(
                f"server overloaded: {len(self._queue)} texts queued, this request adds {len(items)}, "
                f"limit max_queued_texts={self.max_queued_items}; retry with backoff"
            )
        loop = asyncio.get_running_loop()
        now = loop.time()
        request: _Request[Result] = _Request(
            future=loop.create_future(),
            results=[None] * len(items),
            remaining=len(items),
            deadline=None if timeout is None else now + timeout,
        )
        self._queue.extend(_Entry(item, request, index, now) for index, item in enumerate(items))
        self._arrived.set()
        try:
            return await asyncio.wait_for(request.future, timeout)
        except TimeoutError:
            raise DeadlineExpired("deadline exceeded while waiting for inference") from None

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch(loop)
            if batch is None:
                return
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, [e.item for e in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
            except Exception as error:
                self.stats.batches_failed += 1
                logger.exception("batch of %d items failed", len(batch))
                for entry in batch:
                    _fail(entry.request, error)
                continue
            self.stats.batches += 1
            self.stats.items_run += len(batch)
            for entry, result in zip(batch, results, strict=True):
                _deliver(entry, result)

    async def _next_batch(self, loop: asyncio.AbstractEventLoop) -> list[_Entry[Item, Result]] | None:
        """Wait for live entries, then take up to max_batch_size of them; None once stopped."""
        while True:
            self._drop_dead(loop.time())
            if not self._accepting and not self._queue:
                return None
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if self.max_wait_s > 0 and len(self._queue) < self.max_batch_size:
                waited = loop.time() - self._queue[0].enqueued_at
                if waited < self.max_wait_s:
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), self.max_wait_s - waited)
                    if (
                        len(self._queue) < self.max_batch_size
                        and loop.time() - self._queue[0].enqueued_at < self.max_wait_s
                    ):
                        continue
            batch: list[_Entry[Item, Result]] = []
            while self._queue and len(batch) < self.max_batch_size:
                entry = self._queue.popleft()
                if self._is_live(entry, loop.time()):
                    batch.append(entry)
            if batch:
                return batch

    def _drop_dead(self, now: float) -> None:
        while self._queue and not self._is_live(self._queue[0], now):
            self._queue.popleft()

    def _is_live(self, entry: _Entry[Item, Result], now: float) -> bool:
        """False (and the request answered) when its caller is gone or its deadline passed."""
        request = entry.request
        if request.future.done():
            if request.future.cancelled():
                self.stats.items_cancelled += 1
            return False
        if request.deadline is not None and now >= request.deadline:
            self.stats.items_expired += 1
            request.future.set_exception(DeadlineExpired("deadline exceeded while queued"))
            return False
        return True


def _deliver(entry: _Entry[Item, Result], result: Result) -> None:
    request = entry.request
    if request.future.done():
        return
    request.results[entry.index] = result
    request.remaining -= 1
    if request.remaining == 0:
        request.future.set_result(request.results)  # type: ignore[arg-type]


def _fail(request: _Request[Result], error: BaseException) -> None:
    if not request.future.done():
        request.future.set_exception(error)
