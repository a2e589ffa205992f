"""Exact top-k by inner product over a (possibly memory-mapped) matrix, in chunks.

Pure numpy: bounded temporary memory whatever the number of rows, `argpartition` per chunk,
a merge of per-chunk winners, and a final sort of only the k. Ties are broken by row index
(lower first), so results are deterministic.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

DEFAULT_CHUNK_ROWS = 65_536

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]


def top_k(
    matrix: npt.NDArray[np.floating],
    queries: FloatArray,
    k: int,
    *,
    excluded_rows: IndexArray | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> list[tuple[IndexArray, FloatArray]]:
    """The k rows of `matrix` (n, dim) with the highest inner product with each query.

    `queries` is (q, dim) float32. Rows in `excluded_rows` are never returned. Returns, per
    query, (rows, scores): at most k entries (fewer only when fewer rows are eligible), best
    first, equal scores by ascending row.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    rows_total = matrix.shape[0]
    excluded = np.zeros(0, dtype=np.int64) if excluded_rows is None else np.unique(excluded_rows)
    best_rows = [np.zeros(0, dtype=np.int64) for _ in range(len(queries))]
    best_scores = [np.zeros(0, dtype=np.float32) for _ in range(len(queries))]
    for start in range(0, rows_total, chunk_rows):
        stop = min(start + chunk_rows, rows_total)
        scores = np.asarray(matrix[start:stop] @ queries.T, dtype=np.float32).T  # (q, chunk)
        local_excluded = excluded[(excluded >= start) & (excluded < stop)] - start
        for query_index in range(len(queries)):
            row_scores = scores[query_index]
            if local_excluded.size:
                row_scores = row_scores.copy()
                row_scores[local_excluded] = -np.inf
            rows, values = _select(row_scores, k, offset=start)
            best_rows[query_index], best_scores[query_index] = _select_merged(
                np.concatenate([best_rows[query_index], rows]),
                np.concatenate([best_scores[query_index], values]),
                k,
            )
    return list(zip(best_rows, best_scores, strict=True))


def _select(scores: FloatArray, k: int, *, offset: int) -> tuple[IndexArray, FloatArray]:
    """The k best finite entries of one chunk's scores, with every entry tied at the k-th."""
    eligible = np.isfinite(scores)
    if k < scores.shape[0]:
        kth_value = scores[np.argpartition(-scores, k - 1)[k - 1]]
        eligible &= scores >= kth_value
    rows = np.flatnonzero(eligible)
    return rows.astype(np.int64) + offset, scores[rows]


def _select_merged(rows: IndexArray, scores: FloatArray, k: int) -> tuple[IndexArray, FloatArray]:
    """Sort candidates by (score descending, row ascending) and keep the first k."""
    order = np.lexsort((rows, -scores))[:k]
    return rows[order], scores[order]
