"""Whether the item store answers: what operators see while Milvus is down.

A networked store (Milvus) records every call's outcome here and is probed in the background
(embedrec.server.app), so the state is known without traffic. The server shows it as the gRPC
health of ITEMS_HEALTH_SERVICE (NOT_SERVING while down: Embed keeps working, so the server's own
health stays SERVING), in Info (items_store_error) and in the metrics (embedrec_items_store_up,
embedrec_items_store_failures_total). The memory-mapped store is always up.

It also records whether an approximate Milvus index is still loading (milvus.readiness: Milvus
answers from an interim index meanwhile, with worse recall): health NOT_SERVING, Info
(items_index_loading), the metric embedrec_items_index_loading, and a flag on every Recommend
answer (Recommend keeps answering: availability first, the caller decides).
"""

from __future__ import annotations

import dataclasses
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
    # Empty while the served index searches every row (or is exact), else what still waits.
    index_loading: str = ""
    index_loading_since: float = 0.0

    @property
    def serving(self) -> bool:
        """Up, and searching the index it built (what the items' health reports)."""
        return self.up and not self.index_loading


class StoreHealth:
    """The item store's state across reloads (thread-safe: calls run in worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = StoreState(True, time.time(), "", 0)

    def succeeded(self) -> None:
        """A call to the store answered."""
        with self._lock:
            state = self._state
            if not state.up:
                self._state = StoreState(
                    True, time.time(), "", state.failures, state.index_loading, state.index_loading_since
                )

    def failed(self, error: str) -> None:
        """A call to the store failed (not a deadline the caller set): `error` says why, without
        request content."""
        with self._lock:
            state = self._state
            since = state.since if not state.up else time.time()
            self._state = StoreState(
                False, since, error, state.failures + 1, state.index_loading, state.index_loading_since
            )

    def index_loading(self, detail: str) -> None:
        """The served index's readiness: `detail` says which rows still wait for the built index
        (milvus.readiness.IndexReadiness.describe), empty once it serves every row."""
        with self._lock:
            state = self._state
            since = state.index_loading_since if state.index_loading else time.time()
            self._state = dataclasses.replace(state, index_loading=detail, index_loading_since=since if detail else 0.0)

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

    def describe_index_loading(self) -> str:
        """Empty while the built index serves, else "<what waits> (for N s)"."""
        state = self.state()
        if not state.index_loading:
            return ""
        return f"{state.index_loading} (for {time.time() - state.index_loading_since:.0f} s)"
