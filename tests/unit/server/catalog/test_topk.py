"""Exact top-k: the same ids as a float64 brute force, ties by row, exclusions honoured."""

from __future__ import annotations

import numpy as np
import pytest

from embedrec.server.catalog.mmap.topk import RowFilter, top_k


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
    rows, _ = top_k(matrix, query, 10, filters=RowFilter(excluded), chunk_rows=50)[0]
    assert len(rows) == 10
    np.testing.assert_array_equal(rows, brute_force(matrix, query[0], 10, frozenset(best_twenty.tolist()))[0])


def test_returns_fewer_than_k_only_when_fewer_rows_are_eligible() -> None:
    matrix = unit_rows(12, 4, seed=6)
    rows, scores = top_k(matrix, unit_rows(1, 4, seed=7), 50, filters=RowFilter(np.arange(5)))[0]
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


def brute_force_filtered(  # type: ignore[no-untyped-def]
    matrix: np.ndarray, query: np.ndarray, k: int, row_filter: RowFilter
):
    eligible = row_filter.keep(np.arange(len(matrix), dtype=np.int64))
    scores = matrix.astype(np.float64) @ query.astype(np.float64)
    order = [row for row in np.lexsort((np.arange(len(scores)), -scores)) if eligible[row]]
    return np.asarray(order[:k], dtype=np.int64)


@pytest.mark.parametrize("k", [1, 10, 300])
@pytest.mark.parametrize("chunk_rows", [50, 4096])
def test_a_batch_of_queries_with_their_own_exclusions_and_filters_equals_brute_force(k: int, chunk_rows: int) -> None:
    matrix = unit_rows(2000, 24, seed=10)
    queries = unit_rows(6, 24, seed=11)
    codes = np.random.default_rng(12).integers(0, 5, size=len(matrix)).astype(np.int32)
    rng = np.random.default_rng(13)
    filters = [
        RowFilter(),
        RowFilter(rng.choice(len(matrix), 500, replace=False)),
        RowFilter(row_codes=codes, allowed_codes=np.asarray([2], dtype=np.int32)),
        RowFilter(rng.choice(len(matrix), 50), codes, np.asarray([0, 4], dtype=np.int32)),
        RowFilter(row_codes=codes, allowed_codes=np.zeros(0, dtype=np.int32)),  # nothing is eligible
        RowFilter(np.arange(0, len(matrix), 2)),
    ]
    found = top_k(matrix, queries, k, filters=filters, chunk_rows=chunk_rows)
    for query, row_filter, (rows, scores) in zip(queries, filters, found, strict=True):
        np.testing.assert_array_equal(rows, brute_force_filtered(matrix, query, k, row_filter))
        assert list(scores) == sorted(scores, reverse=True)


def test_a_filter_returns_k_items_whenever_k_are_eligible_even_when_they_score_worst() -> None:
    matrix = unit_rows(5000, 16, seed=14)
    query = unit_rows(1, 16, seed=15)
    worst_twenty = np.argsort(matrix @ query[0])[:20]
    codes = np.zeros(len(matrix), dtype=np.int32)
    codes[worst_twenty] = 1
    rows, _ = top_k(matrix, query, 25, filters=RowFilter(row_codes=codes, allowed_codes=np.asarray([1], np.int32)))[0]
    assert sorted(rows.tolist()) == sorted(worst_twenty.tolist())


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_pruning_stays_exact_when_every_chunk_beats_the_last_or_none_does(order: str) -> None:
    matrix = unit_rows(3000, 8, seed=16)
    query = unit_rows(1, 8, seed=17)
    ranking = np.argsort(matrix @ query[0])
    matrix = matrix[ranking if order == "ascending" else ranking[::-1]]
    rows, _ = top_k(matrix, query, 17, chunk_rows=64)[0]
    np.testing.assert_array_equal(rows, brute_force(matrix, query[0], 17)[0])


def test_ties_are_broken_by_row_for_every_query_of_a_batch() -> None:
    matrix = np.zeros((100, 4), dtype=np.float32)
    matrix[:, 0] = 1.0
    queries = np.eye(4, dtype=np.float32)[[0, 0, 0]]
    excluded = RowFilter(np.asarray([0, 1, 2]))
    found = top_k(matrix, queries, 5, filters=[RowFilter(), excluded, RowFilter()], chunk_rows=7)
    np.testing.assert_array_equal(found[0][0], np.arange(5))
    np.testing.assert_array_equal(found[1][0], np.arange(3, 8))
    np.testing.assert_array_equal(found[2][0], np.arange(5))


def test_one_filter_per_query_is_required() -> None:
    with pytest.raises(ValueError, match="2 filters for 3 queries"):
        top_k(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), 1, filters=[RowFilter(), RowFilter()])
