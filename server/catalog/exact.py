"""Exact scores and the float32 error bound, shared by both stores.

The exact score of an item for a query is the float32 of the float64 sum of the float64
products (exact) of its float32 values: what every store ranks by, so the memory-mapped scan
(embedrec.server.catalog.mmap.scan) and the Milvus store (which rescores the vectors Milvus
returns) agree to the bit. `float32_error_bound` bounds how far a float32 product (BLAS, MLAS,
Milvus) can be from it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from embedrec.server.inference.pooling import FloatArray

Float64Array = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]
# The unit roundoff of float32 and of float64.
FLOAT32_ROUNDOFF = 2.0**-24
FLOAT64_ROUNDOFF = 2.0**-53
# Relative slack on quantities computed in float64 (sums of a few thousand terms carry
# ~1e-13 relative error at worst): far above the real error, far below anything that matters.
FLOAT64_SLACK = 1e-9
# Pairs rescored at a time: float64 temporaries that stay in cache (4x faster than 4 Ki pairs).
EXACT_BLOCK_PAIRS = 128


def exact_scores(
    matrix: npt.NDArray[np.floating], rows: IndexArray, queries: Float64Array, query_of: IndexArray
) -> FloatArray:
    """The exact score of each (row, query) pair: float32 of the float64 sum of the float64
    products (exact) of `matrix[rows[j]]` and `queries[query_of[j]]` (float32 values held in
    float64). The sum runs in numpy's fixed pairwise order over one row, so a pair's score never
    depends on the other pairs."""
    scores = np.empty(rows.shape[0], dtype=np.float32)
    for start in range(0, rows.shape[0], EXACT_BLOCK_PAIRS):
        stop = start + EXACT_BLOCK_PAIRS
        vectors = np.asarray(matrix[rows[start:stop]], dtype=np.float64)
        vectors *= queries[query_of[start:stop]]
        scores[start:stop] = vectors.sum(axis=1)
    return scores


def exact_scores_of(
    matrix: npt.NDArray[np.floating], rows: IndexArray, profile: npt.NDArray[np.floating]
) -> FloatArray:
    """The exact scores (`exact_scores`) of `matrix[rows]` for one float32 `profile` (dim,)."""
    query = np.asarray(profile, dtype=np.float32).astype(np.float64)[None, :]
    return exact_scores(matrix, rows, query, np.zeros(rows.shape, dtype=np.int64))


def float32_error_bound(queries: npt.NDArray[np.float32], row_norm: float) -> Float64Array:
    """Per query, how far a float32 inner product with any row (norm at most `row_norm`),
    accumulated in any order (BLAS, MLAS), can be from the exact score: gamma(dim+1)·‖q‖·row_norm
    for the float32 sum plus the exact score's own rounding (R3 of QueryCodes)."""
    dim = queries.shape[1]
    gamma = (dim + 1) * FLOAT32_ROUNDOFF / (1.0 - (dim + 1) * FLOAT32_ROUNDOFF)
    exact = np.asarray(queries, dtype=np.float64)
    norms = np.sqrt((exact * exact).sum(axis=1))
    bound: Float64Array = (gamma + FLOAT32_ROUNDOFF + dim * 2 * FLOAT64_ROUNDOFF) * norms * row_norm * (1.0 + 1e-6)
    return bound
