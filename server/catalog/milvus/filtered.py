"""Recall kept under filters: how a filtered search on an HNSW collection is run.

Measured on Milvus 2.3.5 (50,000 rows near real MiniLM embeddings, HNSW M=16 efConstruction=200,
50 held-out queries, recall@10 against the exact answer; docs/milvus.md): a filter admitting 1%
or 5% of the rows: 1.000 at ef 512 (Milvus scans a segment exactly when a filter admits under
~7% of its rows); 10%: 0.75-0.86, **the same at ef 512 and 8192**; 20%: 0.90; 30%: 0.86; 50%:
0.992 (0.998 at ef 4096); no filter: 1.000. Raising ef does not help the middle band: the
filtered walk is cut off from part of the admitted rows. What does help is making Milvus scan
exactly: the same search split into `parts` searches, each adding `position % parts == i`, each
admitting under SLICE_SHARE of the rows: 1.000 at 10%, 20%, 30% and 50% (2-8 parts).

Two things the share of the whole collection does not show (measured on a real catalog:
bench.milvus_filter_recall, 10,000 standard-library docstrings by MiniLM, the module the filter):

- Milvus 2.3 builds no index for a segment under 1,024 rows; once such a segment is loaded as
  sealed (~15 s after the sync that wrote it, and for good until compaction merges it) it is
  searched through Milvus's *interim* IVF index (nlist 128, nprobe 16: server settings no request
  changes), not exactly. A filter whose rows sit there misses them: recall@10 0.64 for a module of
  5 items, 0.987 over the catalog's categories, where a single 10,000-row segment gave 1.000.
  Hence, while the collection has such a segment, restrictions admitting at most EXACT_ROWS rows
  are not searched by Milvus: embedrec fetches those rows and scores them itself (exact whatever
  the segments, fewer than k rows and ties included). It costs one fetch of the rows with their
  vectors, ~0.1 ms a row (688 rows: 68 ms against 7 ms for one search, on 2 busy cores), so a
  collection whose segments all have an index keeps the single search.
- knowhere decides the exact scan per segment: a category filling some segments (catalog order
  groups it) admits far more than its share there. The slices are sized for the worst case, the
  smallest indexed segment (admitted / its rows, at most 1), at most MAX_PARTS.

The rule (plan): the admitted count is a count of the query's restriction (its filter values and
`where` conditions; hidden items and exclusions barely move it), cached per restriction for
COUNT_TTL_S; s is its share of the rows, w the worst segment's share (above).
admitted <= EXACT_ROWS while a segment is unindexed (or Milvus cannot tell): scored by
embedrec; w <= EXACT_SHARE: one search (exact inside Milvus);
s < SPLIT_BELOW (52%): ceil(w / SLICE_SHARE) searches merged, at most MAX_PARTS (exact); else
one search with ef scaled by 1/s (at most 2x). A search without a restriction is not planned. The
slices cost about one exact scan of the admitted rows in all (50,000 rows, 50% admitted: 12.6 ms
for 8 slices against 1.8 ms for one search).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from embedrec.server.catalog.milvus.filters import MilvusSelection
from embedrec.server.catalog.milvus.index import MAX_EF
from embedrec.server.catalog.milvus.readiness import MIN_INDEXED_ROWS
from embedrec.server.catalog.store import SearchEffort

if TYPE_CHECKING:  # store.py imports this module: only the type checker follows the loop
    from embedrec.server.catalog.store import Recommendation

# Milvus 2.3 (knowhere) brute-forces a segment whose filter admits under ~7% of its rows: one
# search admitting at most EXACT_SHARE is exact; slices admit at most SLICE_SHARE (measured: 8
# slices of a 50% filter, 6.25% each, 1.000).
EXACT_SHARE = 0.05
SLICE_SHARE = 0.065
MAX_PARTS = 16
SPLIT_BELOW = 0.52
# Restrictions admitting at most this many rows are scored by embedrec (module docstring): never
# more than one Milvus segment's worth of rows Milvus leaves unindexed.
EXACT_ROWS = 1_024
MAX_EF_SCALE = 2.0
COUNT_TTL_S = 30.0
COUNT_CACHE_SIZE = 1_024


@dataclass(frozen=True)
class FilterPlan:
    """How one filtered search runs: `parts` searches merged (1: one), ef times `ef_scale`;
    `exact`: the admitted rows fetched and scored by embedrec instead."""

    parts: int = 1
    ef_scale: float = 1.0
    exact: bool = False


UNPLANNED = FilterPlan()


@dataclass(frozen=True)
class SegmentLayout:
    """What the plan needs of a collection's flushed segments: the rows of the smallest indexed
    one (0: none or unknown), and whether any is too small for an index (True when unknown)."""

    smallest_indexed: int = 0
    unindexed: bool = True


UNKNOWN_LAYOUT = SegmentLayout()


def plan_for(admitted: int, total: int, layout: SegmentLayout = UNKNOWN_LAYOUT) -> FilterPlan:
    """The plan for a restriction admitting `admitted` of `total` rows in segments laid out as
    `layout` (module docstring)."""
    if total <= 0 or admitted <= 0:
        return UNPLANNED
    if admitted <= EXACT_ROWS and layout.unindexed:
        return FilterPlan(exact=True)
    share = admitted / total
    smallest = layout.smallest_indexed
    worst = max(share, min(admitted / smallest, 1.0)) if smallest > 0 else share
    if worst <= EXACT_SHARE:
        return UNPLANNED
    if share < SPLIT_BELOW:
        return FilterPlan(parts=min(math.ceil(worst / SLICE_SHARE), MAX_PARTS))
    return FilterPlan(ef_scale=min(1.0 / share, MAX_EF_SCALE))


def planned_effort(selection: MilvusSelection, plan: FilterPlan) -> MilvusSelection:
    """`selection` with its ef scaled by `plan.ef_scale` (at most MAX_EF)."""
    if plan.ef_scale == 1.0:
        return selection
    ef = min(math.ceil(selection.effort.ef * plan.ef_scale), MAX_EF)
    return dataclasses.replace(selection, effort=SearchEffort(ef=ef))


def part_expression(expression: str, column: str, part: int, parts: int) -> str:
    """`expression` restricted to the `part`-th of `parts` slices of the rows by `column` (an
    integer field spread evenly over the rows: the catalog position)."""
    if parts == 1:
        return expression
    return f"({expression}) and {column} % {parts} == {part}"


def searched_in_parts(
    search: Callable[[MilvusSelection], list[list[Recommendation]]],
    selection: MilvusSelection,
    column: str,
    parts: int,
    limit: int,
) -> list[list[Recommendation]]:
    """`search(selection)` (each query's hits, best first) run on `parts` slices of the rows,
    the slices' hits merged per query in (score desc, position, id) order and cut at `limit`."""
    if parts == 1:
        return search(selection)
    merged: list[list[Recommendation]] = []
    for part in range(parts):
        sliced = dataclasses.replace(selection, expression=part_expression(selection.expression, column, part, parts))
        for position, hits in enumerate(search(sliced)):
            if position == len(merged):
                merged.append([])
            merged[position].extend(hits)
    for found in merged:
        found.sort(key=lambda one: (-np.float32(one.score), one.row, one.item_id))
    return [found[:limit] for found in merged]


class AdmittedCounts:
    """Counts of rows a restriction admits, cached for COUNT_TTL_S (thread-safe)."""

    def __init__(self, count: Callable[[str], int]) -> None:
        self._count = count
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[float, int]] = {}

    def admitted(self, restriction: str) -> int:
        """Rows `restriction` admits (a Milvus count at most COUNT_TTL_S old)."""
        now = time.monotonic()
        with self._lock:
            cached = self._cached.get(restriction)
        if cached is not None and now - cached[0] < COUNT_TTL_S:
            return cached[1]
        admitted = self._count(restriction)
        with self._lock:
            if len(self._cached) >= COUNT_CACHE_SIZE:
                self._cached.clear()
            self._cached[restriction] = (now, admitted)
        return admitted


class SegmentSizes:
    """The collection's SegmentLayout, cached for COUNT_TTL_S (thread-safe). `sizes()` gives the
    flushed segments' row counts and (rows, has an index) of the loaded ones (None: Milvus cannot
    tell). A loaded segment without an index counts as unindexed whatever its size: while a
    compaction's merged segment waits for its index, the query node still serves the small ones."""

    def __init__(self, sizes: Callable[[], tuple[list[int], list[tuple[int, bool]]] | None]) -> None:
        self._sizes = sizes
        self._lock = threading.Lock()
        self._cached: tuple[float, SegmentLayout] | None = None

    def invalidate(self) -> None:
        """Forget the cached layout (this process changed rows: they land in a new segment)."""
        with self._lock:
            self._cached = None

    def layout(self) -> SegmentLayout:
        now = time.monotonic()
        with self._lock:
            cached = self._cached
        if cached is not None and now - cached[0] < COUNT_TTL_S:
            return cached[1]
        sizes = self._sizes()
        layout = UNKNOWN_LAYOUT
        if sizes is not None:
            flushed, loaded = sizes
            indexed = [one for one in flushed if one >= MIN_INDEXED_ROWS]
            unloaded_index = any(rows > 0 and not has_index for rows, has_index in loaded)
            layout = SegmentLayout(min(indexed, default=0), len(indexed) < len(flushed) or unloaded_index)
        with self._lock:
            self._cached = (now, layout)
        return layout
