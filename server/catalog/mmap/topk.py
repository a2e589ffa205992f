"""Exact top-k by inner product over a (possibly memory-mapped) matrix, in chunks.

One pass over the matrix whatever the number of queries: each chunk of rows is scored against
every query with one product (numpy's matrix-vector product for one query, an ONNX Runtime
MatMul for several), with bounded temporary memory whatever N. Once a query holds k candidates,
a vectorised comparison with its current k-th best score discards most of a chunk before
anything is sorted; the first chunk is short and chunks grow 4x, so thresholds exist early and
few candidates are ever sorted. Exclusions and category filters are checked only on the rows
that pass that comparison, so they need no second scan and never cost exactness: k results come
back whenever k eligible rows exist. Ties are broken by row index (lower first), so results are
deterministic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from embedrec.server.catalog.store import Selection

DEFAULT_CHUNK_ROWS = 32_768
# Scores held at a time: q queries score SCORE_BUFFER_VALUES / q rows per chunk (4 MiB of scores).
SCORE_BUFFER_VALUES = 1 << 20
# Rows x queries scored in the first chunk, so that every query has a k-th best score early.
FIRST_CHUNK_CANDIDATES = 4_096

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]
CodeArray = npt.NDArray[np.int32]

_NO_ROWS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class RowFilter(Selection):
    """Which rows one query may return: not in `excluded_rows`, not True in `blocked` (a mask
    over all rows, e.g. the hidden items), and, when `allowed_codes` is given, whose entry in
    `row_codes` (one code per matrix row) is one of `allowed_codes`."""

    excluded_rows: IndexArray = field(default_factory=lambda: _NO_ROWS)
    row_codes: CodeArray | None = None
    allowed_codes: CodeArray | None = None
    blocked: npt.NDArray[np.bool_] | None = None
    # Further tests on candidate rows, all of which must hold (e.g. field conditions): objects
    # with keep(rows) -> bool array.
    conditions: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "excluded_rows", np.unique(np.asarray(self.excluded_rows, dtype=np.int64)))
        if (self.row_codes is None) != (self.allowed_codes is None):
            raise ValueError("row_codes and allowed_codes go together")

    def keep(self, rows: IndexArray) -> npt.NDArray[np.bool_]:
        """True for each of `rows` that this filter lets through (the definition that top_k
        applies, vectorised over all queries, to the candidates of each chunk)."""
        keep = ~_contains(self.excluded_rows, rows)
        if self.blocked is not None:
            keep &= ~self.blocked[rows]
        if self.row_codes is not None and self.allowed_codes is not None:
            keep &= np.isin(self.row_codes[rows], self.allowed_codes)
        for condition in self.conditions:
            keep &= condition.keep(rows)
        return keep


NO_FILTER = RowFilter()


def top_k(
    matrix: npt.NDArray[np.floating],
    queries: FloatArray,
    k: int,
    *,
    filters: Sequence[RowFilter] | RowFilter = NO_FILTER,
    chunk_rows: int | None = None,
    threads: int = 0,
    min_scores: Sequence[float | None] | None = None,
    scorer: Callable[[npt.NDArray[np.floating]], FloatArray] | None = None,
    prior: npt.NDArray[np.float64] | None = None,
) -> list[tuple[IndexArray, npt.NDArray[np.floating]]]:
    """The k rows of `matrix` (n, dim) with the highest inner product with each query.

    `queries` is (q, dim) float32; all of them are answered in one pass over `matrix`. `filters`
    is one RowFilter for every query or one per query. `chunk_rows` overrides the rows scored at
    a time (default: a score buffer of about SCORE_BUFFER_VALUES floats). `threads` caps the
    threads of the multi-query product (0: ONNX Runtime's default, one per core). `min_scores`,
    one per query (None: no floor), keeps only rows scoring at least that; the floor is the
    pruning threshold from the first chunk on, so a high floor scans fast. `scorer`, when given,
    replaces the inner product: it maps a block of rows to their (rows, q) scores (e.g. a
    combination of several products); `queries` then only says how many there are. `prior`
    (n,) float64, a score formula's prior part of every row: the score becomes float64(score) +
    prior (float64 scores come back; min_scores apply to it). Returns, per
    query, (rows, scores): at most k entries (fewer only when fewer rows are eligible), best
    first, equal scores by ascending row.
    """
    queries, floors = checked_queries(queries, k, min_scores)
    query_count, rows_total = queries.shape[0], matrix.shape[0]
    if query_count == 0:
        return []
    eligibility = Eligibility(per_query_filters(filters, query_count), rows_total)
    best = BestSoFar(
        query_count, k, sentinel_row=rows_total, floors=floors, dtype=np.float32 if prior is None else np.float64
    )
    if chunk_rows is None:
        chunk_rows = max(DEFAULT_CHUNK_ROWS, SCORE_BUFFER_VALUES // query_count)
    for start, stop in _chunks(rows_total, k, query_count, chunk_rows):
        block = matrix[start:stop]
        scores: npt.NDArray[np.floating] = (
            scorer(block) if scorer is not None else score_block(block, queries, threads)
        )  # (rows, q)
        if prior is not None:
            scores = scores.astype(np.float64) + prior[start:stop, None]
        query_of, rows, values = _candidates(scores, start, best, eligibility, k, query_count)
        if query_of.size:
            best.merge(query_of, rows, values)
    return best.results()


def _candidates(
    scores: npt.NDArray[np.floating],
    start: int,
    best: BestSoFar,
    eligibility: Eligibility,
    k: int,
    query_count: int,
) -> tuple[IndexArray, IndexArray, npt.NDArray[np.floating]]:
    """The (query, row, score) entries of one chunk's `scores` (rows from `start`, one column per
    query) that beat the query's k-th best so far and are eligible, grouped by query."""
    # A row that only ties a query's current k-th best has a higher row index: it loses.
    passing = scores > best.kth_scores[None, :]
    # flatnonzero on the block is several times faster than a 2-D nonzero.
    flat = np.flatnonzero(passing)
    local, query_of = np.divmod(flat, query_count)
    rows = local.astype(np.int64) + start
    kept = eligibility.keep(query_of, rows)
    if not kept.all():
        flat, query_of, rows = flat[kept], query_of[kept], rows[kept]
    values = scores.ravel()[flat]
    if query_count > 1:  # group candidates by query (np.flatnonzero gives them by row)
        by_query = np.argsort(query_of, kind="stable")
        query_of, rows, values = query_of[by_query], rows[by_query], values[by_query]
    if query_of.size > 4 * k * query_count:  # early chunks: first cut each query to its own k best
        query_of, rows, values = _cut_to_k(query_of, rows, values, k, query_count)
    return query_of, rows, values


def checked_queries(
    queries: npt.NDArray[np.floating], k: int, min_scores: Sequence[float | None] | None
) -> tuple[FloatArray, list[float | None]]:
    """`queries` as contiguous float32 and one floor per query (None: none); ValueError for a k
    below 1 or a floor count that is not the query count."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    contiguous: FloatArray = np.ascontiguousarray(queries, dtype=np.float32)
    floors: list[float | None] = [None] * contiguous.shape[0] if min_scores is None else list(min_scores)
    if len(floors) != contiguous.shape[0]:
        raise ValueError(f"{len(floors)} min_scores for {contiguous.shape[0]} queries")
    return contiguous, floors


class Eligibility:
    """Every query's RowFilter, vectorised: one check for all candidates of a chunk."""

    def __init__(self, filters: Sequence[RowFilter], rows_total: int) -> None:
        self._stride = rows_total + 1
        excluded = [
            query * self._stride + one.excluded_rows for query, one in enumerate(filters) if one.excluded_rows.size
        ]
        self._excluded_keys = np.sort(np.concatenate(excluded)) if excluded else None
        # Queries sharing one blocked mask (normally all: the hidden items' snapshot) are checked together.
        masks: dict[int, tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]] = {}
        for query, one in enumerate(filters):
            if one.blocked is not None:
                members = masks.setdefault(id(one.blocked), (one.blocked, np.zeros(len(filters), dtype=np.bool_)))[1]
                members[query] = True
        self._blocked = list(masks.values())
        self._conditioned = [(query, one.conditions) for query, one in enumerate(filters) if one.conditions]
        coded = [query for query, one in enumerate(filters) if one.row_codes is not None]
        self._row_codes: CodeArray | None = None
        self._has_codes = np.zeros(len(filters), dtype=np.bool_)
        self._allowed_keys = np.zeros(0, dtype=np.int64)
        if coded:
            codes = {id(filters[query].row_codes) for query in coded}
            if len(codes) != 1:
                raise ValueError("every filtered query must use the same row_codes array")
            self._row_codes = filters[coded[0]].row_codes
            self._has_codes[coded] = True
            allowed = [(query << 32) + filters[query].allowed_codes.astype(np.int64) for query in coded]  # type: ignore[union-attr]
            self._allowed_keys = np.sort(np.concatenate(allowed))

    def keep(self, query_of: IndexArray, rows: IndexArray) -> npt.NDArray[np.bool_]:
        """True for each (query, row) candidate the query's filter lets through."""
        keep = np.ones(rows.shape, dtype=np.bool_)
        if not rows.size:
            return keep
        if self._excluded_keys is not None:
            keep &= ~_contains(self._excluded_keys, query_of * self._stride + rows)
        for mask, members in self._blocked:
            keep &= ~(members[query_of] & mask[rows])
        for query, conditions in self._conditioned:
            mine = np.flatnonzero((query_of == query) & keep)
            for condition in conditions:
                if mine.size:
                    passed = condition.keep(rows[mine])
                    keep[mine[~passed]] = False
                    mine = mine[passed]
        if self._row_codes is not None:
            filtered = self._has_codes[query_of]
            codes = np.asarray(self._row_codes[rows[filtered]], dtype=np.int64)
            allowed = _contains(self._allowed_keys, (query_of[filtered].astype(np.int64) << 32) + codes)
            keep[np.flatnonzero(filtered)[~allowed]] = False
        return keep


class BestSoFar:
    """Each query's k best (score, row) so far as (q, k) arrays, best first; empty slots hold
    -inf and a sentinel row, so merging is a handful of vectorised calls for all queries."""

    def __init__(
        self,
        query_count: int,
        k: int,
        *,
        sentinel_row: int,
        floors: Sequence[float | None] | None = None,
        dtype: type[np.floating[Any]] = np.float32,
    ) -> None:
        """`dtype` of the scores: float32 (similarities), float64 (a score formula's)."""
        self.k = k
        self.sentinel_row = sentinel_row
        # An empty slot scores just below the query's floor: a candidate passes when it scores
        # above the k-th slot, so at least the floor (-inf without one).
        thresholds = [
            -np.inf if floor is None else np.nextafter(dtype(floor), dtype(-np.inf))
            for floor in floors or [None] * query_count
        ]
        self.scores = np.repeat(np.asarray(thresholds, dtype=dtype)[:, None], k, axis=1)
        self.rows = np.full((query_count, k), sentinel_row, dtype=np.int64)

    @property
    def kth_scores(self) -> FloatArray:
        """Each query's current k-th best score (its floor until it has k candidates)."""
        kth: FloatArray = self.scores[:, -1]
        return kth

    def merge(self, query_of: IndexArray, rows: IndexArray, scores: FloatArray) -> None:
        """Merge candidates (grouped by query, ascending) into the k best."""
        if self.scores.shape[0] == 1:  # one query: a plain 1-D merge
            all_rows, all_scores = np.concatenate([self.rows[0], rows]), np.concatenate([self.scores[0], scores])
            order = np.lexsort((all_rows, -all_scores))[: self.k]
            self.rows[0], self.scores[0] = all_rows[order], all_scores[order]
            return
        new_scores = _padded(query_of, scores, self.scores.shape[0], -np.inf)  # below any floor
        new_rows = _padded(query_of, rows, self.scores.shape[0], self.sentinel_row)
        all_scores = np.concatenate([self.scores, new_scores], axis=1)
        all_rows = np.concatenate([self.rows, new_rows], axis=1)
        order = np.lexsort((all_rows, -all_scores), axis=-1)[:, : self.k]
        self.scores = np.take_along_axis(all_scores, order, axis=1)
        self.rows = np.take_along_axis(all_rows, order, axis=1)

    def results(self) -> list[tuple[IndexArray, npt.NDArray[np.floating]]]:
        """Per query (rows, scores) best first, without the empty slots."""
        found = []
        for rows, scores in zip(self.rows, self.scores, strict=True):
            filled = rows != self.sentinel_row
            found.append((rows[filled].copy(), scores[filled].copy()))
        return found


def _contains(sorted_keys: IndexArray, keys: IndexArray) -> npt.NDArray[np.bool_]:
    """Whether each of `keys` is in the ascending array `sorted_keys`."""
    if not sorted_keys.size:
        return np.zeros(keys.shape, dtype=np.bool_)
    position = np.searchsorted(sorted_keys, keys)
    position[position == sorted_keys.size] = 0
    found: npt.NDArray[np.bool_] = sorted_keys[position] == keys
    return found


def _padded(query_of: IndexArray, values: npt.NDArray[Any], query_count: int, fill: Any) -> npt.NDArray[Any]:
    """Candidates grouped by query (query_of ascending) as a (q, most candidates) array, `fill`
    in the empty slots."""
    counts = np.bincount(query_of, minlength=query_count)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(query_of.size) - offsets[query_of]
    padded = np.full((query_count, int(counts.max())), fill, dtype=values.dtype)
    padded[query_of, position] = values
    return padded


def _cut_to_k(
    query_of: IndexArray, rows: IndexArray, values: FloatArray, k: int, query_count: int
) -> tuple[IndexArray, IndexArray, FloatArray]:
    """Only each query's k best candidates and every candidate tied with its k-th (candidates
    grouped by query, ascending)."""
    padded = _padded(query_of, values, query_count, -np.inf)
    if padded.shape[1] <= k:
        return query_of, rows, values
    kth = np.partition(padded, padded.shape[1] - k, axis=1)[:, padded.shape[1] - k]
    chosen = values >= kth[query_of]
    return query_of[chosen], rows[chosen], values[chosen]


def score_block(block: npt.NDArray[np.floating], queries: FloatArray, threads: int = 0) -> FloatArray:
    """Inner products of every row of `block` with every query: float32 (rows, q). One query is a
    numpy matrix-vector product (memory-bound, numpy is fastest); several are one ONNX Runtime
    MatMul (its MLAS kernel is ~1.5x OpenBLAS's for this shape on this CPU, see BENCHMARKS.md)."""
    if queries.shape[0] == 1 or block.dtype != np.float32:
        scores: FloatArray = np.asarray(block @ queries.T, dtype=np.float32)
        return scores
    product: FloatArray = _matmul_session(threads).run(None, {"m": block, "q": np.ascontiguousarray(queries.T)})[0]
    return product


@functools.cache
def _matmul_session(threads: int) -> Any:
    """A one-node ONNX Runtime graph: (rows, dim) @ (dim, q), float32, on `threads` intra-op
    threads (0: the default); thread-safe, built once per thread count."""
    import onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["m", "q"], ["s"])],
        "item_scores",
        [
            helper.make_tensor_value_info("m", TensorProto.FLOAT, [None, None]),
            helper.make_tensor_value_info("q", TensorProto.FLOAT, [None, None]),
        ],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [None, None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # No spinning: between scans the threads must leave the cores to the model.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def per_query_filters(filters: Sequence[RowFilter] | RowFilter, query_count: int) -> list[RowFilter]:
    """One RowFilter per query from one for all or one each; ValueError on a count mismatch."""
    if isinstance(filters, RowFilter):
        return [filters] * query_count
    if len(filters) != query_count:
        raise ValueError(f"{len(filters)} filters for {query_count} queries")
    return list(filters)


def _chunks(rows_total: int, k: int, query_count: int, chunk_rows: int) -> list[tuple[int, int]]:
    """Row ranges covering the matrix: a short first chunk (every query gets a k-th best score
    early, with few candidates to sort), growing 4x per chunk up to `chunk_rows`."""
    size = min(chunk_rows, max(4 * k, FIRST_CHUNK_CANDIDATES // query_count))
    bounds, start = [], 0
    while start < rows_total:
        bounds.append((start, min(start + size, rows_total)))
        start += size
        # One query has few candidates whatever the chunk: go straight to full chunks.
        size = chunk_rows if query_count == 1 else min(chunk_rows, 4 * size)
    return bounds
