"""Whether Milvus searches the index it built: the window of worse answers after a sync.

Milvus 2.3 (measured on the `milvus` package's 2.3.5 standalone) answers a freshly loaded
collection from an *interim* index before it searches the one it built: rows that reach the
query node through the insert stream sit in growing segments, which Milvus searches with a small
IVF index of its own (nprobe fixed) once a segment holds a chunk of rows. Search effort has no
effect then: 10,000 random 384-d rows gave recall@10 0.30 at ef 10, 64 and 512 alike for 9-13 s
after `load_collection` returned, then 0.12 / 0.43 / 0.96 once the built index was searched.
Rows upserted by a sync wait the same way (the 3,000 rows of a partial sync: 13-17 s), and an
index replaced on a released collection is searched at once (its load waits for it).

What does not tell: `describe_index` says `Finished` with every row indexed, and
`get_load_state` says `Loaded`, from the first second of the window. What tells: the query
node's *sealed* segments (`list_loaded_segments`, GetQuerySegmentInfo) each carry the id of the
index they were loaded with, and the data coordinator's flushed segments
(`list_persistent_segments`) are every row's home. A flushed segment that the query node has not
loaded as a sealed segment with an index is being answered from a growing one. So the built
index serves every row when every flushed segment of at least MIN_INDEXED_ROWS rows is loaded
sealed with an index. Smaller segments get no index in Milvus 2.3. Growing, they are
scanned exactly. Loaded sealed, they are searched through the interim index. No sync can wait that
out (only compaction ends it), so they do not count as waiting: milvus.filtered scores the
restrictions of few rows itself.
A segment compacted from loaded ones counts as waiting until it is loaded itself: conservative
(its rows are served well meanwhile), and brief.

Milvus Lite answers these calls UNIMPLEMENTED; it searches its own index at once, so there the
index counts as serving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Milvus 2.3's indexCoord.segment.minSegmentNumRowsToEnableIndex: smaller segments stay unindexed
# (growing: scanned exactly; sealed: the interim index, see the module docstring) and never wait
# for an index.
MIN_INDEXED_ROWS = 1024
POLL_S = 1.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexReadiness:
    """How many of a collection's rows the built index does not serve yet (0: it serves all)."""

    waiting_rows: int
    total_rows: int
    waiting_segments: int

    @property
    def serving(self) -> bool:
        """Whether every row is searched through the built index (or exactly)."""
        return self.waiting_rows == 0

    def describe(self) -> str:
        """Empty when serving, else e.g. "3,000 of 10,000 rows (1 segment) answered from
        Milvus's interim index until the built one is loaded"."""
        if self.serving:
            return ""
        segments = f"{self.waiting_segments} segment{'s' if self.waiting_segments != 1 else ''}"
        return (
            f"{self.waiting_rows:,} of {self.total_rows:,} rows ({segments}) answered from Milvus's interim index "
            "until the built one is loaded"
        )


SERVING = IndexReadiness(0, 0, 0)


def index_readiness(client: Any, collection: str, timeout: float) -> IndexReadiness | None:
    """The readiness of `collection`'s built index (see the module docstring); None when Milvus
    cannot tell (Milvus Lite: UNIMPLEMENTED). Milvus's other errors propagate."""
    segments = _segments(client, collection, timeout)
    if segments is None:
        return None
    flushed, loaded = segments
    indexed = {one.segment_id for one in loaded if one.index_id and _state(one) == "Sealed"}
    total = sum(int(one.num_rows) for one in flushed)
    waiting = [one for one in flushed if int(one.num_rows) >= MIN_INDEXED_ROWS and one.segment_id not in indexed]
    return IndexReadiness(sum(int(one.num_rows) for one in waiting), total, len(waiting))


def segment_sizes(client: Any, collection: str, timeout: float) -> tuple[list[int], list[tuple[int, bool]]] | None:
    """The row counts of `collection`'s flushed segments, and (rows, whether it has an index) of
    each segment the query node has loaded; None when Milvus cannot tell (Milvus Lite)."""
    segments = _segments(client, collection, timeout)
    if segments is None:
        return None
    flushed, loaded = segments
    return [int(one.num_rows) for one in flushed], [(int(one.num_rows), bool(one.index_id)) for one in loaded]


def _segments(client: Any, collection: str, timeout: float) -> tuple[list[Any], list[Any]] | None:
    """(flushed segments, loaded segments) of `collection`; None when Milvus cannot tell (Milvus
    Lite: UNIMPLEMENTED). Milvus's other errors propagate."""
    try:
        flushed = client.list_persistent_segments(collection, timeout=timeout)
        loaded = client.list_loaded_segments(collection, timeout=timeout)
    except Exception as error:  # pymilvus raises grpc.RpcError or MilvusException: the caller maps them
        if _unimplemented(error):
            return None
        raise
    return list(flushed), list(loaded)


def wait_until_serving(
    client: Any,
    collection: str,
    timeout: float,
    *,
    on_progress: Callable[[IndexReadiness, float], None] | None = None,
) -> IndexReadiness | None:
    """Poll until `collection`'s built index serves every row, or `timeout` seconds passed;
    the last readiness (None: Milvus cannot tell). `on_progress(readiness, seconds waited)` after
    each poll that still waits."""
    started = time.monotonic()
    while True:
        readiness = index_readiness(client, collection, min(timeout, 30.0))
        waited = time.monotonic() - started
        if readiness is None or readiness.serving or waited >= timeout:
            return readiness
        if on_progress is not None:
            on_progress(readiness, waited)
        time.sleep(min(POLL_S, max(timeout - waited, 0.0)))


def is_milvus_server(uri: str) -> bool:
    """Whether `uri` names a Milvus server (http(s)://, tcp://...), not a Milvus Lite file."""
    return "://" in uri


def _state(segment: Any) -> str:
    name = getattr(segment, "state_name", None)
    return str(name) if name is not None else str(getattr(segment, "state", ""))


def _unimplemented(error: BaseException) -> bool:
    # A grpc error's code is a method (StatusCode.UNIMPLEMENTED), a MilvusException's an int.
    code = getattr(error, "code", None)
    value = code() if callable(code) else code
    return "UNIMPLEMENTED" in str(value) or "not implemented" in str(error).lower()
