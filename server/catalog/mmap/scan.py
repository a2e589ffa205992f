"""Exact top-k by a bounded first pass and exact rescoring: the int8 and the float32 scan.

Both scans work the same way. A first pass gives every row an approximate score with a proven
bound on its error (int8 codes: embedrec.server.catalog.mmap.codes.QueryCodes; float32 BLAS
products: embedrec.server.catalog.exact.float32_error_bound). A row whose approximate score plus
the bound is below the query's current k-th best exact score can never be in the top k and is
dropped; the rest are rescored exactly and merged. Within one block of rows, the k best
approximate scores also give a lower bound on the k-th best exact score, so even the first block
sends only a few rows to rescoring.

The exact score of a row is `exact_scores` (embedrec.server.catalog.exact): the float64 sum of
the float64 products (exact) of the float32 query and row, rounded to float32. It depends only
on the row and the query, not on the scan, the block sizes or the other queries in the pass, so
both scans return identical ids, order and scores; equal scores go by row (lower first).

The int8 scan scores blocks of packed codes on a thread pool (numkong's int8 kernel, which picks
its SIMD path at run time), queries of one pass together. When too many rows need rescoring (a
flat score distribution, e.g. a dimension with a huge range), the rest of that pass runs the
float32 scan instead; it is counted (ScanStats.fallbacks).
"""

from __future__ import annotations

import functools
import os
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from embedrec.server.catalog.exact import FLOAT64_SLACK, Float64Array, exact_scores, float32_error_bound
from embedrec.server.catalog.mmap.codes import CodeMatrix, ItemCodes, QueryCodes
from embedrec.server.catalog.mmap.topk import (
    DEFAULT_CHUNK_ROWS,
    NO_FILTER,
    SCORE_BUFFER_VALUES,
    BestSoFar,
    Eligibility,
    FloatArray,
    IndexArray,
    RowFilter,
    checked_queries,
    per_query_filters,
    score_block,
)
from embedrec.server.catalog.prior_pass import PriorPass

ScanKind = Literal["int8", "float32"]
SCANS: tuple[ScanKind, ...] = ("int8", "float32")
# Rows per packed block of codes, the unit of work of one thread: 24 MiB of codes at 384
# dimensions, the scores of 16 queries in 4 MiB. Measured (BENCHMARKS.md): smaller blocks cost
# more per row in overhead (one query over 100k: 16 blocks 5.2 ms, 2 blocks 2.6 ms), larger ones
# were slower for 16 queries.
PACKED_BLOCK_ROWS = 1 << 16
# An int8 pass falls back to float32 for its remaining rows once it has rescored more than this
# share of the (row, query) pairs scanned, after at least FALLBACK_MIN_ROWS rows: past it, random
# reads of float32 rows cost more than reading them all in order.
FALLBACK_FRACTION = 0.03
FALLBACK_MIN_ROWS = 1 << 16
# Under a formula, when more than 1/BLOCK_FILTER_SHARE of a block passes the first pass's
# threshold (the block's largest prior), the rest of the check runs in float32 over the whole
# block before the float64 check of the survivors.
BLOCK_FILTER_SHARE = 16


@dataclass
class ScanStats:
    """What the scans have done since start (thread-safe): passes, their queries, rows
    rescored, and int8 passes that fell back to float32."""

    passes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SCANS, 0))
    queries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SCANS, 0))
    rescored_rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SCANS, 0))
    fallbacks: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, scan: ScanKind, queries: int, rescored: int, *, fell_back: bool) -> None:
        """Count one pass."""
        with self._lock:
            self.passes[scan] += 1
            self.queries[scan] += queries
            self.rescored_rows[scan] += rescored
            self.fallbacks += int(fell_back)

    def snapshot(self) -> dict[str, Any]:
        """A copy of the counters."""
        with self._lock:
            return {
                "passes": dict(self.passes),
                "queries": dict(self.queries),
                "rescored_rows": dict(self.rescored_rows),
                "fallbacks": self.fallbacks,
            }


SCAN_STATS = ScanStats()


class PackedCodes:
    """An item matrix's int8 codes packed for the kernel, in blocks of rows (private memory:
    the kernel reads its own layout; about one byte per code). The codes themselves (a memory
    map of the code file) are not kept: their pages leave this process once packed."""

    def __init__(self, codes: ItemCodes, block_rows: int | None = None) -> None:
        import numkong

        self.book = codes.book
        rows_total = codes.codes.shape[0]
        block_rows = block_rows or PACKED_BLOCK_ROWS
        self.blocks: list[tuple[int, int, Any]] = []
        for start in range(0, rows_total, block_rows):
            stop = min(start + block_rows, rows_total)
            block: CodeMatrix = np.ascontiguousarray(codes.codes[start:stop])
            self.blocks.append((start, stop, numkong.dots_pack(block)))
        self.nbytes = sum(int(packed.nbytes) for _, _, packed in self.blocks)


class _Pass(Protocol):
    """A first pass: approximate scores of a block of rows with a bound, in its own units."""

    def values(self, start: int, stop: int, block: int) -> npt.NDArray[Any]:
        """Approximate scores of rows start..stop, (queries, rows)."""
        ...

    def thresholds(self, floors: Float64Array) -> npt.NDArray[Any]:
        """Per query, the smallest value worth rescoring: a row valued below it scores below the
        query's floor."""
        ...

    def lower_bounds(self, values: npt.NDArray[Any]) -> Float64Array:
        """Per query, a lower bound of the exact score of a row with that value."""
        ...


class _Int8Pass:
    def __init__(self, packed: PackedCodes, queries: FloatArray) -> None:
        import numkong

        self._dots = numkong.dots_packed
        self._packed = packed
        self.query_codes = QueryCodes.of(queries, packed.book)
        codes = self.query_codes
        # |exact - estimate| ≤ ε + SLACK·|estimate| and |estimate| ≤ M + ε (lower_bounds' slack).
        magnitudes = _magnitudes(queries, packed.book.row_norm)
        self.epsilon: Float64Array = codes.epsilon + FLOAT64_SLACK * (magnitudes + codes.epsilon)

    def affine(self) -> tuple[Float64Array, Float64Array]:
        return self.query_codes.base, self.query_codes.scale

    def estimates(self, values: npt.NDArray[Any], query_of: IndexArray) -> Float64Array:
        codes = self.query_codes
        estimates: Float64Array = codes.base[query_of] + codes.scale[query_of] * np.asarray(values, dtype=np.float64)
        return estimates

    def values(self, start: int, stop: int, block: int) -> npt.NDArray[Any]:
        return np.asarray(self._dots(self.query_codes.codes, self._packed.blocks[block][2]))

    def thresholds(self, floors: Float64Array) -> npt.NDArray[Any]:
        return self.query_codes.thresholds(floors)

    def lower_bounds(self, values: npt.NDArray[Any]) -> Float64Array:
        return self.query_codes.lower_bounds(values)


class _Float32Pass:
    def __init__(self, matrix: npt.NDArray[np.floating], queries: FloatArray, row_norm: float, threads: int) -> None:
        self._matrix, self._queries, self._threads = matrix, queries, threads
        self.bound = float32_error_bound(queries, row_norm)
        self.epsilon: Float64Array = self.bound + 1e-12 * (_magnitudes(queries, row_norm) + self.bound + 1.0)

    def affine(self) -> tuple[Float64Array, Float64Array]:
        count = self._queries.shape[0]
        return np.zeros(count), np.ones(count)

    def estimates(self, values: npt.NDArray[Any], query_of: IndexArray) -> Float64Array:
        estimates: Float64Array = np.asarray(values, dtype=np.float64)
        return estimates

    def values(self, start: int, stop: int, block: int) -> npt.NDArray[Any]:
        scores = score_block(self._matrix[start:stop], self._queries, self._threads)
        return np.ascontiguousarray(scores.T)

    def thresholds(self, floors: Float64Array) -> npt.NDArray[Any]:
        wanted = floors - self.bound
        rounded = wanted.astype(np.float32)
        above = rounded.astype(np.float64) > wanted
        rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
        return rounded

    def lower_bounds(self, values: npt.NDArray[Any]) -> Float64Array:
        estimate = np.asarray(values, dtype=np.float64)
        bounds: Float64Array = estimate - self.bound - 1e-12 * np.abs(estimate)
        return bounds


@dataclass
class _Candidates:
    """A block's rows that may enter the k best, with their first-pass values, grouped by query."""

    query_of: IndexArray
    rows: IndexArray
    values: npt.NDArray[Any]


def exact_top_k(
    matrix: npt.NDArray[np.floating],
    queries: FloatArray,
    k: int,
    *,
    scan: ScanKind,
    row_norm: float,
    packed: PackedCodes | None = None,
    filters: Sequence[RowFilter] | RowFilter = NO_FILTER,
    min_scores: Sequence[float | None] | None = None,
    threads: int = 0,
    stats: ScanStats = SCAN_STATS,
    prior: Float64Array | None = None,
) -> list[tuple[IndexArray, npt.NDArray[np.floating]]]:
    """The k rows of `matrix` (n, dim) with the highest exact score (`exact_scores`) for each of
    `queries` (q, dim) float32, in one pass for all of them.

    `scan` picks the first pass: "int8" scores `packed` (the matrix's codes) on `threads` threads
    (0: one per core), "float32" the matrix itself; `row_norm` bounds every row's norm (the
    float32 pass's error bound). `filters` (one for all or one per query) and `min_scores` (None:
    no floor) as in embedrec.server.catalog.mmap.topk.top_k. With `prior` (n,) float64 (a score
    formula's prior part of every row, finite) the score is the formula's, float64(exact score)
    + prior (float64 scores come back), min_scores apply to it, and the first pass bounds it as
    embedrec.server.catalog.prior_pass proves. Returns, per query, (rows, scores): at most k,
    best first, equal scores by ascending row; identical whichever `scan`.
    """
    queries, floors = checked_queries(queries, k, min_scores)
    query_count, rows_total = queries.shape[0], matrix.shape[0]
    if query_count == 0:
        return []
    if scan == "int8" and packed is None:
        raise ValueError("the int8 scan needs the packed codes")
    run = _Run(matrix, queries, k, Eligibility(per_query_filters(filters, query_count), rows_total), floors, prior)
    float32_pass: _Pass = _with_prior(_Float32Pass(matrix, queries, row_norm, threads), prior, queries, row_norm)
    fell_back = False
    if scan == "int8":
        assert packed is not None
        first = _with_prior(_Int8Pass(packed, queries), prior, queries, packed.book.row_norm)
        scanned_to = run.scan_int8(first, packed, threads)
        fell_back = scanned_to < rows_total
    else:
        scanned_to = 0
    if scanned_to < rows_total:
        chunk_rows = max(DEFAULT_CHUNK_ROWS, SCORE_BUFFER_VALUES // query_count)
        for start in range(scanned_to, rows_total, chunk_rows):
            stop = min(start + chunk_rows, rows_total)
            run.rescore_candidates(float32_pass, [run.candidates(float32_pass, start, stop, 0)])
    stats.record(scan, query_count, run.rescored, fell_back=fell_back)
    return run.best.results()


class _Run:
    """One pass's state: the k best exact scores so far and the rows rescored."""

    def __init__(
        self,
        matrix: npt.NDArray[np.floating],
        queries: FloatArray,
        k: int,
        eligibility: Eligibility,
        floors: Sequence[float | None],
        prior: Float64Array | None = None,
    ) -> None:
        self.matrix, self.k, self.eligibility, self.prior = matrix, k, eligibility, prior
        self.queries64 = queries.astype(np.float64)
        dtype = np.float32 if prior is None else np.float64  # a formula's scores are float64
        self.best = BestSoFar(queries.shape[0], k, sentinel_row=matrix.shape[0], floors=floors, dtype=dtype)
        self.score_floors: npt.NDArray[np.floating] = np.asarray(
            [-np.inf if one is None else one for one in floors], dtype=dtype
        )
        self.rescored = 0
        # Lower bounds of each query's k-th best exact score found by the blocks (any thread).
        self._bounds = np.full(queries.shape[0], -np.inf)
        self._bounds_lock = threading.Lock()
        self._best_values: dict[int, npt.NDArray[Any]] = {}  # per query, its k best first-pass values

    def floors(self) -> Float64Array:
        """Each query's current k-th best exact score (or its floor): rows below it are out."""
        floors: Float64Array = self.best.kth_scores.astype(np.float64)
        return floors

    def scan_int8(self, first: _Pass, packed: PackedCodes, threads: int) -> int:
        """Phase 1: the kernel over every packed block, `threads` at a time, each keeping the rows
        that may beat the best lower bound known so far of their query's k-th best exact score
        (bounds are shared between blocks as they are found). Phase 2: each query's candidates
        with the k best code scores are rescored first, their exact k-th best becomes the floor,
        then the rest still above it. Returns the row where phase 1 stopped (the catalog's end,
        or where too many rows were candidates: the caller scans the rest in float32)."""
        pool = _pool(threads)
        pending: deque[tuple[int, Future[_Candidates]]] = deque()
        blocks = packed.blocks
        ahead = _thread_count(threads) + 1
        found: list[_Candidates] = []
        submitted = scanned = candidates = 0
        query_count = self.queries64.shape[0]
        while submitted < len(blocks) or pending:
            while submitted < len(blocks) and len(pending) < ahead:
                start, stop, _ = blocks[submitted]
                pending.append((stop, pool.submit(self.candidates, first, start, stop, submitted)))
                submitted += 1
            stop, future = pending.popleft()
            found.append(future.result())
            candidates += found[-1].rows.size
            scanned = stop
            self._tighten_bounds(first, found[-1])
            if scanned >= FALLBACK_MIN_ROWS and candidates > FALLBACK_FRACTION * scanned * query_count:
                for stop, future in pending:  # already computed or running: use them
                    found.append(future.result())
                    scanned = stop
                break
        self.rescore_candidates(first, found)
        return scanned

    def candidates(self, first: _Pass, start: int, stop: int, block: int) -> _Candidates:
        """The rows of start..stop that pass the filters and may beat the best known lower bound
        of their query's k-th best exact score (runs on any thread)."""
        if isinstance(first, PriorPass):
            return self._prior_candidates(first, start, stop, block)
        values = first.values(start, stop, block)
        bounds = self._bounds
        floors = np.maximum(self.floors(), bounds)
        passing = values >= first.thresholds(floors)[:, None]
        unbounded = np.isinf(bounds)  # no lower bound of the k-th best yet: the first blocks
        if unbounded.any() and np.count_nonzero(passing[unbounded]) > 8 * self.k * np.count_nonzero(unbounded):
            floors = self._raised_floors(first, values, start, floors)
            with self._bounds_lock:
                self._bounds = np.maximum(self._bounds, floors)
            passing = values >= first.thresholds(floors)[:, None]
        flat = np.flatnonzero(passing)
        query_of, local = np.divmod(flat, stop - start)
        rows = local + start
        kept = self.eligibility.keep(query_of, rows)
        if not kept.all():
            flat, query_of, rows = flat[kept], query_of[kept], rows[kept]
        return _Candidates(query_of.astype(np.int64), rows.astype(np.int64), values.ravel()[flat])

    def _prior_candidates(self, first: PriorPass, start: int, stop: int, block: int) -> _Candidates:
        """`candidates` under a formula: the inner pass's thresholds for the block's largest prior
        first (no float64 work on the rows they drop), then each remaining row's estimate of the
        formula's score (the candidates' values) against the floor."""
        values = first.values(start, stop, block)
        floors = np.maximum(self.floors(), self._bounds)
        passing = values >= first.coarse_thresholds(floors, start, stop)[:, None]
        unbounded = np.isinf(self._bounds)
        if unbounded.any() and np.count_nonzero(passing[unbounded]) > 8 * self.k * np.count_nonzero(unbounded):
            floors = self._raised_floors(first, first.block_totals(values, start, stop), start, floors)
            with self._bounds_lock:
                self._bounds = np.maximum(self._bounds, floors)
            passing = values >= first.coarse_thresholds(floors, start, stop)[:, None]
        if np.count_nonzero(passing) > passing.size // BLOCK_FILTER_SHARE:  # a prior that varies a lot
            passing &= first.block_filter(values, floors, start, stop)
        flat = np.flatnonzero(passing)
        query_of, local = np.divmod(flat, stop - start)
        rows = (local + start).astype(np.int64)
        totals = first.totals(values.ravel()[flat], query_of, rows)
        kept = totals >= first.thresholds(floors)[query_of]
        kept[kept] = self.eligibility.keep(query_of[kept], rows[kept])
        return _Candidates(query_of[kept].astype(np.int64), rows[kept], totals[kept])

    def _tighten_bounds(self, first: _Pass, found: _Candidates) -> None:
        """Merge a block's candidates into each query's k best first-pass values so far and
        publish the lower bound of the k-th (k eligible rows score at least that)."""
        counts = np.bincount(found.query_of, minlength=self.queries64.shape[0])
        offsets = np.concatenate([[0], np.cumsum(counts)])
        kth = np.zeros(len(counts), dtype=found.values.dtype)
        full = np.zeros(len(counts), dtype=np.bool_)
        for query in np.flatnonzero(counts):
            mine = found.values[offsets[query] : offsets[query + 1]]
            best = self._best_values.get(int(query))
            merged = mine if best is None else np.concatenate([best, mine])
            if merged.size > self.k:
                merged = np.partition(merged, merged.size - self.k)[merged.size - self.k :]
            self._best_values[int(query)] = merged
            if merged.size == self.k:
                kth[query], full[query] = merged.min(), True
        if full.any():
            bounds = np.where(full, first.lower_bounds(kth), -np.inf)
            with self._bounds_lock:
                self._bounds = np.maximum(self._bounds, bounds)

    def rescore_candidates(self, first: _Pass, found: list[_Candidates]) -> None:
        """Rescore candidates (of the int8 scan's phase 1, or of one float32 chunk): each query's
        k best first-pass values first, then those of the rest whose bound still reaches the k-th
        best exact score."""
        if not found:
            return
        query_of = np.concatenate([one.query_of for one in found])
        rows = np.concatenate([one.rows for one in found])
        values = np.concatenate([one.values for one in found])
        by_query = np.argsort(query_of, kind="stable")
        query_of, rows, values = query_of[by_query], rows[by_query], values[by_query]
        counts = np.bincount(query_of, minlength=self.queries64.shape[0])
        offsets = np.concatenate([[0], np.cumsum(counts)])
        head = np.ones(rows.shape, dtype=np.bool_)
        for query in np.flatnonzero(counts > self.k):
            start, stop = int(offsets[query]), int(offsets[query + 1])
            mine = np.zeros(stop - start, dtype=np.bool_)
            mine[np.argpartition(values[start:stop], stop - start - self.k)[stop - start - self.k :]] = True
            head[start:stop] = mine
        self._rescore(query_of[head], rows[head])
        rest = ~head
        rest[rest] = values[rest] >= first.thresholds(self.floors())[query_of[rest]]
        self._rescore(query_of[rest], rows[rest])

    def _rescore(self, query_of: IndexArray, rows: IndexArray) -> None:
        """Score (query, row) pairs (grouped by query) exactly and keep those that enter the k best
        (every row merged before theirs: equal scores go by row)."""
        if not rows.size:
            return
        scores: npt.NDArray[np.floating] = exact_scores(self.matrix, rows, self.queries64, query_of)
        if self.prior is not None:  # the formula's score: float64(similarity) + prior
            scores = scores.astype(np.float64) + self.prior[rows]
        self.rescored += int(rows.size)
        kth, kth_rows = self.best.kth_scores[query_of], self.best.rows[query_of, -1]
        # An empty slot (sentinel row) holds a value just under the floor: the floor decides.
        better = ((scores > kth) | ((scores == kth) & (rows < kth_rows))) & (scores >= self.score_floors[query_of])
        if better.any():
            self.best.merge(query_of[better], rows[better], scores[better])

    def _raised_floors(self, first: _Pass, values: npt.NDArray[Any], start: int, floors: Float64Array) -> Float64Array:
        """`floors` raised, per query, to a lower bound of the block's own k-th best exact score:
        that of the k-th best value among the block's eligible rows with the best values (k eligible
        rows score at least that, so a row below it is out)."""
        width = values.shape[1]
        picked = min(width, 4 * self.k)
        if picked < self.k:
            return floors
        top = np.argpartition(values, width - picked, axis=1)[:, width - picked :]
        query_of = np.repeat(np.arange(values.shape[0]), picked)
        eligible = self.eligibility.keep(query_of, top.ravel() + start).reshape(top.shape)
        top_values = np.take_along_axis(values, top, axis=1)
        ranked = np.where(eligible, top_values, np.iinfo(np.int32).min if values.dtype.kind == "i" else -np.inf)
        enough = eligible.sum(axis=1) >= self.k
        if not enough.any():
            return floors
        kth = np.sort(ranked, axis=1)[:, picked - self.k]
        raised = floors.copy()
        raised[enough] = np.maximum(floors[enough], first.lower_bounds(kth)[enough])
        return raised


def _magnitudes(queries: FloatArray, row_norm: float) -> Float64Array:
    """Per query, a bound of |q·x| over rows of norm at most `row_norm`: ‖q‖·row_norm."""
    exact = np.asarray(queries, dtype=np.float64)
    magnitudes: Float64Array = np.sqrt((exact * exact).sum(axis=1)) * row_norm * (1.0 + FLOAT64_SLACK)
    return magnitudes


def _with_prior(first: Any, prior: Float64Array | None, queries: FloatArray, row_norm: float) -> Any:
    """`first`, or under a formula (a prior) the pass in the formula's units."""
    return first if prior is None else PriorPass(first, prior, _magnitudes(queries, row_norm))


def _thread_count(threads: int) -> int:
    return threads if threads > 0 else os.cpu_count() or 1


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    """The int8 scan's threads (one pool per thread count, kept for the process's life)."""
    return ThreadPoolExecutor(_thread_count(threads), thread_name_prefix="int8-scan")
