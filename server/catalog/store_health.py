"""Whether the item store answers: what operators see while Milvus is down.

A networked store (Milvus) records every call's outcome here and is probed in the background
(embedrec.server.app), so the state is known without traffic. The server shows it as the gRPC
health of ITEMS_HEALTH_SERVICE (NOT_SERVING while down: Embed keeps working, so the server's own
health stays SERVING), in Info (items_store_error) and in the metrics (embedrec_items_store_up,
embedrec_items_store_failures_total). The memory-mapped store is always up.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

ITEMS_HEALTH_SERVICE = "embedrec.items"


@dataclass(frozen=True)
class StoreState:
    """The store's state: up, or down since `since` (time.time()) with the last error."""

    up: bool
    since: float
    error: str
    failures: int


class StoreHealth:
    """The item store's state across reloads (thread-safe: calls run in worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = StoreState(True, time.time(), "", 0)

    def succeeded(self) -> None:
        """A call to the store answered."""
        with self._lock:
            if not self._state.up:
                self._state = StoreState(True, time.time(), "", self._state.failures)

    def failed(self, error: str) -> None:
        """A call to the store failed (not a deadline the caller set): `error` says why, without
        request content."""
        with self._lock:
            state = self._state
            since = state.since if not state.up else time.time()
            self._state = StoreState(False, since, error, state.failures + 1)

    def state(self) -> StoreState:
        """The state now."""
        with self._lock:
            return self._state

    def describe_error(self) -> str:
        """Empty while up, else "unavailable for N s: <error>"."""
        state = self.state()
        if state.up:
            return ""
        return f"unavailable for {time.time() - state.since:.0f} s: {state.error}"
