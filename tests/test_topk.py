"""Exact top-k: the same ids as a float64 brute force, ties by row, exclusions honoured."""

from __future__ import annotations

import numpy as np
import pytest

from server.topk import top_k


def brute_force(matrix: np.ndarray, query: np.ndarray, k: int, excluded: frozenset[int] = frozenset()):  # type: ignore[no-untyped-def]
    scores = matrix.astype(np.float64) @ query.astype(np.float64)
    rows = [row for row in np.lexsort((np.arange(len(scores)), -scores)) if row not in excluded]
    return np.asarray(rows[:k]), scores[rows[:k]]


def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


@pytest.mark.parametrize("k", [1, 10, 1000])
@pytest.mark.parametrize("chunk_rows", [7, 128, 65_536])
def test_ids_and_scores_equal_float64_brute_force(k: int, chunk_rows: int) -> None:
    matrix = unit_rows(1000, 48, seed=0)
    queries = unit_rows(5, 48, seed=1)
    for query, (rows, scores) in zip(queries, top_k(matrix, queries, k, chunk_rows=chunk_rows), strict=True):
        expected_rows, expected_scores = brute_force(matrix, query, k)
        np.testing.assert_array_equal(rows, expected_rows)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_works_on_a_read_only_memory_map(tmp_path) -> None:  # type: ignore[no-untyped-def]
    matrix = unit_rows(500, 16, seed=2)
    np.save(tmp_path / "items.npy", matrix)
    mapped = np.load(tmp_path / "items.npy", mmap_mode="r")
    query = unit_rows(1, 16, seed=3)
    rows, _ = top_k(mapped, query, 10, chunk_rows=64)[0]
    np.testing.assert_array_equal(rows, brute_force(matrix, query[0], 10)[0])


def test_excluded_rows_never_come_back_and_k_is_still_filled() -> None:
    matrix = unit_rows(300, 8, seed=4)
    query = unit_rows(1, 8, seed=5)
    best_twenty = brute_force(matrix, query[0], 20)[0]
    excluded = np.concatenate([best_twenty, best_twenty[:3]])  # duplicates are harmless
    rows, _ = top_k(matrix, query, 10, excluded_rows=excluded, chunk_rows=50)[0]
    assert len(rows) == 10
    np.testing.assert_array_equal(rows, brute_force(matrix, query[0], 10, frozenset(best_twenty.tolist()))[0])


def test_returns_fewer_than_k_only_when_fewer_rows_are_eligible() -> None:
    matrix = unit_rows(12, 4, seed=6)
    rows, scores = top_k(matrix, unit_rows(1, 4, seed=7), 50, excluded_rows=np.arange(5))[0]
    assert sorted(rows.tolist()) == list(range(5, 12))
    assert list(scores) == sorted(scores, reverse=True)


def test_ties_are_broken_by_row_index_across_chunks() -> None:
    matrix = np.zeros((40, 4), dtype=np.float32)
    matrix[:, 0] = 1.0  # every row scores the same
    rows, _ = top_k(matrix, np.eye(4, dtype=np.float32)[:1], 7, chunk_rows=6)[0]
    np.testing.assert_array_equal(rows, np.arange(7))


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be positive"):
        top_k(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), 0)
