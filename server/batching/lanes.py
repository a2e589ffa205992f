"""Dedicated worker threads ("lanes") that run a batcher's jobs, one at a time, in order.

A lane is one thread fed by a `queue.SimpleQueue`: handing it a job costs one lock-free put and
one futex wake, against `ThreadPoolExecutor.submit`'s future, work item, semaphore and the
asyncio future chained to it (`run_in_executor`). Results go back to the event loop by whatever
the job does (the batcher's jobs end with one `loop.call_soon_threadsafe`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

Job = Callable[[], None]


class Lane:
    """One thread running the jobs it is given, in order, until closed."""

    def __init__(self, name: str, *, niceness: int = 0) -> None:
        """Start the thread `name`; `niceness` > 0 lowers its OS priority (see
        `lower_thread_priority`), and so that of the threads a runtime starts from it."""
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._niceness = niceness
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Run `job()` in the lane's thread after the jobs before it. A job must not raise (an
        exception is logged and the lane goes on)."""
        self._jobs.put(job)

    def close(self) -> None:
        """Run the jobs already given, then end the thread and wait for it."""
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        lower_thread_priority(self._niceness)
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:  # a job's own bug must not end the lane
                logger.exception("job in %s failed", self._thread.name)


def lower_thread_priority(niceness: int) -> None:
    """Raise the calling thread's nice value by `niceness` (Linux: per thread; threads it starts
    inherit it). Where the platform has no per-thread priority, nothing happens."""
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + niceness)
