"""Exact top-k by inner product over a (possibly memory-mapped) matrix, in chunks.

Pure numpy, one pass over the matrix whatever the number of queries: each chunk of rows is
scored against every query with one matrix product (bounded temporary memory whatever N). Once a
query holds k candidates, a vectorised comparison with its current k-th best score discards most
of a chunk before any partition, so selection costs little next to the product itself. Exclusions
and category filters are checked only on the rows that pass that comparison, so they need no
second scan and never cost exactness: k results come back whenever k eligible rows exist. Ties
are broken by row index (lower first), so results are deterministic.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

DEFAULT_CHUNK_ROWS = 32_768
# The first chunk is short so that every query has a k-th best score (a threshold) early.
FIRST_CHUNK_MIN_ROWS = 4_096

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]
CodeArray = npt.NDArray[np.int32]

_NO_ROWS = np.zeros(0, dtype=np.int64)
_NO_SCORES = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class RowFilter:
    """Which rows one query may return: not in `excluded_rows`, and, when `allowed_codes` is
    given, whose entry in `row_codes` (one code per matrix row) is one of `allowed_codes`."""

    excluded_rows: IndexArray = field(default_factory=lambda: _NO_ROWS)
    row_codes: CodeArray | None = None
    allowed_codes: CodeArray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "excluded_rows", np.unique(np.asarray(self.excluded_rows, dtype=np.int64)))
        if (self.row_codes is None) != (self.allowed_codes is None):
            raise ValueError("row_codes and allowed_codes go together")

    def keep(self, rows: IndexArray) -> npt.NDArray[np.bool_]:
        """True for each of `rows` (ascending) that this filter lets through."""
        keep = np.ones(rows.shape, dtype=np.bool_)
        if self.excluded_rows.size:
            position = np.searchsorted(self.excluded_rows, rows)
            position[position == self.excluded_rows.size] = 0
            keep &= self.excluded_rows[position] != rows
        if self.row_codes is not None and self.allowed_codes is not None:
            keep &= np.isin(self.row_codes[rows], self.allowed_codes)
        return keep

    @property
    def is_trivial(self) -> bool:
        """True when the filter lets every row through."""
        return not self.excluded_rows.size and self.row_codes is None


NO_FILTER = RowFilter()


def top_k(
    matrix: npt.NDArray[np.floating],
    queries: FloatArray,
    k: int,
    *,
    filters: Sequence[RowFilter] | RowFilter = NO_FILTER,
    excluded_rows: IndexArray | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> list[tuple[IndexArray, FloatArray]]:
    """The k rows of `matrix` (n, dim) with the highest inner product with each query.

    `queries` is (q, dim) float32; all of them are answered in one pass over `matrix`. `filters`
    is one RowFilter for every query or one per query; `excluded_rows` (shorthand) excludes rows
    for every query. Returns, per query, (rows, scores): at most k entries (fewer only when fewer
    rows are eligible), best first, equal scores by ascending row.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    query_count = queries.shape[0]
    per_query = _per_query_filters(filters, excluded_rows, query_count)
    best_rows = [_NO_ROWS] * query_count
    best_scores = [_NO_SCORES] * query_count
    thresholds = np.full(query_count, -np.inf, dtype=np.float32)
    for start, stop in _chunks(matrix.shape[0], k, chunk_rows):
        block = matrix[start:stop]
        if query_count == 1:
            scores = np.asarray(block @ queries[0], dtype=np.float32)[None, :]
        else:
            scores = np.asarray(queries @ block.T, dtype=np.float32)  # (q, rows)
        passing = scores > thresholds[:, None]
        for query_index in np.flatnonzero(passing.any(axis=1)):
            local = np.flatnonzero(passing[query_index])
            rows = local + start
            row_filter = per_query[query_index]
            if not row_filter.is_trivial:
                kept = row_filter.keep(rows)
                local, rows = local[kept], rows[kept]
            values = scores[query_index, local]
            rows, values = _best_of_chunk(rows, values, k)
            best_rows[query_index], best_scores[query_index] = _select_merged(
                np.concatenate([best_rows[query_index], rows]),
                np.concatenate([best_scores[query_index], values]),
                k,
            )
            if best_rows[query_index].size == k:
                # A later row that only ties the k-th best has a higher row index: it loses.
                thresholds[query_index] = best_scores[query_index][-1]
    return list(zip(best_rows, best_scores, strict=True))


def _per_query_filters(
    filters: Sequence[RowFilter] | RowFilter, excluded_rows: IndexArray | None, query_count: int
) -> list[RowFilter]:
    if isinstance(filters, RowFilter):
        chosen = [filters] * query_count
    else:
        chosen = list(filters)
        if len(chosen) != query_count:
            raise ValueError(f"{len(chosen)} filters for {query_count} queries")
    if excluded_rows is not None:
        chosen = [
            RowFilter(np.concatenate([one.excluded_rows, excluded_rows]), one.row_codes, one.allowed_codes)
            for one in chosen
        ]
    return chosen


def _chunks(rows_total: int, k: int, chunk_rows: int) -> list[tuple[int, int]]:
    """Row ranges covering the matrix: a short first chunk, then `chunk_rows` at a time."""
    first = min(chunk_rows, max(FIRST_CHUNK_MIN_ROWS, 4 * k))
    bounds = [0, *range(first, rows_total, chunk_rows), rows_total]
    return [(start, stop) for start, stop in itertools.pairwise(bounds) if stop > start]


def _best_of_chunk(rows: IndexArray, scores: FloatArray, k: int) -> tuple[IndexArray, FloatArray]:
    """The k best entries of one chunk's candidates, with every entry tied at the k-th."""
    if scores.shape[0] <= k:
        return rows, scores
    kth_value = scores[np.argpartition(-scores, k - 1)[k - 1]]
    chosen = scores >= kth_value
    return rows[chosen], scores[chosen]


def _select_merged(rows: IndexArray, scores: FloatArray, k: int) -> tuple[IndexArray, FloatArray]:
    """Sort candidates by (score descending, row ascending) and keep the first k."""
    order = np.lexsort((rows, -scores))[:k]
    return rows[order], scores[order]
