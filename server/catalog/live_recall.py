"""The recall users actually get from an approximate index, measured on their own searches.

A sampled share of real searches (`share`) is re-checked exactly in one background thread, off
the hot path: the search only draws a random number and, when sampled, hands its profile, its
selection, k and the ids it returned to a queue of at most QUEUE_BOUND (full: the sample is
dropped and counted, never waited for). The thread computes the exact top k with the store's
own exact check (for Milvus: a bounded exact scan of the eligible rows, milvus.store.MilvusItems.exact_ids)
and records that search's recall, |returned ∩ exact| / |exact|. Its CPU is budgeted: after a
check of t seconds the thread sleeps t·(1/cpu_share - 1), so checks use at most `cpu_share` of
one core whatever the traffic.

The estimate is the mean of the last `window` recalls, with a 95% error bar of
1.96·s/√n (s: the sample standard deviation of those recalls, n their count). Searches are
sampled uniformly at random, so the mean is an unbiased estimate of the recall of the searches
served in the window (weighted by traffic: what users get), and the bar is the normal
approximation of its sampling error. It says nothing of searches the check skipped (a
selection admitting more rows than the bound), which are counted apart.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

QUEUE_BOUND = 8
Z_95 = 1.96

logger = logging.getLogger(__name__)

# The exact top-k ids of (profile, selection, k), or None when the check cannot afford it.
ExactCheck = Callable[[object, object, int], Sequence[str] | None]


@dataclass(frozen=True)
class RecallEstimate:
    """The rolling recall@k estimate: its mean, sample size, k, 95% error bar, and the samples
    dropped (queue full) or skipped (too costly to check) since start."""

    recall: float = 0.0
    samples: int = 0
    k: int = 0
    error: float = 0.0
    dropped: int = 0
    skipped: int = 0
    checked: int = 0


def estimate_of(recalls: Sequence[float], k: int) -> tuple[float, float]:
    """The mean of `recalls` and its 95% error bar (normal approximation; 0 below 2 samples)."""
    n = len(recalls)
    if n == 0:
        return 0.0, 0.0
    mean = sum(recalls) / n
    if n < 2:
        return mean, 0.0
    variance = sum((one - mean) ** 2 for one in recalls) / (n - 1)
    return mean, Z_95 * math.sqrt(variance / n)


class LiveRecall:
    """Samples searches and re-checks them exactly in a background thread (module docstring).
    Thread-safe; one per store: a replaced store's is closed (close)."""

    def __init__(self, share: float, window: int, cpu_share: float, *, seed: int | None = None) -> None:
        self.share = share
        self.cpu_share = cpu_share
        self._recalls: deque[float] = deque(maxlen=max(window, 1))
        self._k = 0
        self._random = random.Random(seed)
        self._queue: queue.Queue[tuple[ExactCheck, object, object, int, list[str]] | None] = queue.Queue(QUEUE_BOUND)
        self._lock = threading.Lock()
        self._dropped = self._skipped = self._checked = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def offer(self, check: ExactCheck, profile: object, selection: object, k: int, found: Sequence[str]) -> None:
        """On the hot path, after a search returned `found` for `profile`: sample it with
        probability `share` for an exact re-check by `check` (cheap: no work when not sampled)."""
        if self.share <= 0 or self._closed or self._random.random() >= self.share:
            return
        try:
            self._queue.put_nowait((check, profile, selection, k, list(found)))
        except queue.Full:
            with self._lock:
                self._dropped += 1
            return
        self._start()

    def estimate(self) -> RecallEstimate:
        """The estimate now."""
        with self._lock:
            recalls = list(self._recalls)
            mean, error = estimate_of(recalls, self._k)
            return RecallEstimate(mean, len(recalls), self._k, error, self._dropped, self._skipped, self._checked)

    def idle(self) -> bool:
        """Whether no sampled search waits for its check (for tests and shutdown)."""
        return self._queue.unfinished_tasks == 0

    def close(self, timeout: float = 5.0) -> None:
        """Stop sampling and end the thread (a replaced store's: a reload gives the new store a
        LiveRecall of its own): the check running now finishes, the waiting ones are dropped;
        waits at most `timeout` seconds for the thread to end."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
        try:
            self._queue.put(None, timeout=timeout)  # the thread ends when it takes this
        except queue.Full:  # an offer raced the close and refilled the queue: the thread is daemon
            return
        thread.join(timeout)

    def record(self, found: Sequence[str], exact: Sequence[str], k: int) -> None:
        """One checked search: `found` against the `exact` top k (an empty exact answer: no
        eligible item, nothing to miss, not counted)."""
        if not exact:
            return
        recall = len(set(found[: len(exact)]) & set(exact)) / len(exact)
        with self._lock:
            self._recalls.append(recall)
            self._k = k
            self._checked += 1

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="embedrec-live-recall", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:  # close()
                self._queue.task_done()
                return
            check, profile, selection, k, found = item
            started = time.monotonic()
            try:
                exact = check(profile, selection, k)
            except Exception:  # a failed check costs the sample, never the thread
                logger.warning("live recall check failed", exc_info=True)
                exact = None
            if exact is None:
                with self._lock:
                    self._skipped += 1
            else:
                self.record(found, exact, k)
            spent = time.monotonic() - started
            self._queue.task_done()
            if 0 < self.cpu_share < 1:
                time.sleep(spent * (1 / self.cpu_share - 1))
