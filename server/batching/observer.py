"""What a micro-batcher reports: its counters, and the observer it tells what it does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


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


class NullObserver:
    """The observer of a batcher given none: ignores everything."""

    def batch_ran(self, size: int, cost: int, padded_cost: int, run_s: float, queue_seconds: Sequence[float]) -> None:
        pass

    def queue_changed(self, depth: int) -> None:
        pass

    def items_dropped(self, reason: str, count: int) -> None:
        pass
