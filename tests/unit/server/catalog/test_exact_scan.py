"""The exact scan: int8 codes first, a proven bound, exact rescoring; the same answer as float32.

Every result (ids, order, scores) must equal the brute force over the exact score (float64 sum of
the products, rounded to float32), whichever scan, on catalogs built to break the bound: exact
ties, near-duplicates, constant dimensions, one dimension with a huge range, non-unit vectors, k
near N, filters admitting one row. A bound cut in half must be caught. The code book on disk:
written, read back, refused when it is not the matrix's. (Through a server:
tests/e2e/test_exact_scan.py.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedrec.server.catalog.exact import exact_scores, exact_scores_of
from embedrec.server.catalog.mmap import scan as scan_module
from embedrec.server.catalog.mmap.codes import (
    ITEM_CODES,
    ITEM_CODES_META,
    ItemCodes,
    QueryCodes,
    build_codes,
    read_codes,
    write_codes,
)
from embedrec.server.catalog.mmap.scan import PackedCodes, ScanStats, exact_top_k
from embedrec.server.catalog.mmap.topk import RowFilter
from embedrec.server.errors import ConfigurationError


def brute_force(matrix: np.ndarray, query: np.ndarray, k: int, row_filter: RowFilter, floor: float | None):  # type: ignore[no-untyped-def]
    """Every row's exact score, filtered, best first (equal scores by row), the first k."""
    rows = np.arange(matrix.shape[0], dtype=np.int64)
    scores = exact_scores_of(matrix, rows, query)
    keep = row_filter.keep(rows)
    if floor is not None:
        keep &= scores >= np.float32(floor)
    rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))[:k]
    return rows[order], scores[order]


def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def packed(matrix: np.ndarray, block_rows: int | None = None) -> PackedCodes:
    codes, book = build_codes(matrix)
    return PackedCodes(ItemCodes(codes, book), block_rows=block_rows)


def search(matrix: np.ndarray, queries: np.ndarray, k: int, scan: str, codes: PackedCodes, **options):  # type: ignore[no-untyped-def]
    return exact_top_k(
        matrix,
        queries,
        k,
        scan=scan,  # type: ignore[arg-type]
        row_norm=codes.book.row_norm,
        packed=codes if scan == "int8" else None,
        **options,
    )


def adversarial_catalog(kind: str, count: int, dim: int, seed: int) -> np.ndarray:
    """A catalog of one hard kind (see the module docstring)."""
    rng = np.random.default_rng(seed)
    matrix = unit_rows(count, dim, seed)
    if kind == "exact ties":
        matrix[1::2] = matrix[0::2][: matrix[1::2].shape[0]]
    elif kind == "near duplicates":
        base = matrix[rng.integers(0, min(3, count), count)]
        matrix = (base + rng.standard_normal(base.shape).astype(np.float32) * 1e-6).astype(np.float32)
    elif kind == "constant dimensions":
        matrix[:, : dim // 2] = 0.25
    elif kind == "one huge dimension":
        matrix[:, 0] *= 1e4
    elif kind == "non-unit":
        matrix *= np.exp(rng.uniform(-6, 6, (count, 1))).astype(np.float32)
    elif kind == "tiny values":
        matrix *= np.float32(1e-20)
    elif kind == "grid":  # many exactly equal scores: small integers
        matrix = rng.integers(-2, 3, (count, dim)).astype(np.float32)
    return np.ascontiguousarray(matrix, dtype=np.float32)


KINDS = [
    "random",
    "exact ties",
    "near duplicates",
    "constant dimensions",
    "one huge dimension",
    "non-unit",
    "tiny values",
    "grid",
]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    count=st.integers(1, 400),
    dim=st.integers(1, 40),
    query_count=st.integers(1, 5),
    k_choice=st.sampled_from(["1", "10", "N-1", "N", "N+3"]),
    block_rows=st.sampled_from([None, 1, 7, 64]),
    filtering=st.sampled_from(["none", "exclude", "one row", "codes", "floor"]),
    seed=st.integers(0, 2**16),
)
def test_int8_and_float32_scans_equal_the_brute_force(  # type: ignore[no-untyped-def]
    kind, count, dim, query_count, k_choice, block_rows, filtering, seed
) -> None:
    matrix = adversarial_catalog(kind, count, dim, seed)
    rng = np.random.default_rng(seed + 1)
    queries = rng.standard_normal((query_count, dim)).astype(np.float32)
    if kind == "grid":
        queries = rng.integers(-2, 3, (query_count, dim)).astype(np.float32)
    if seed % 3 == 0:  # a query equal to an item: its own score is the maximum
        queries[0] = matrix[seed % count]
    k = max(1, {"1": 1, "10": 10, "N-1": count - 1, "N": count, "N+3": count + 3}[k_choice])
    row_filter, floors = RowFilter(), None
    if filtering == "exclude":
        row_filter = RowFilter(rng.choice(count, count // 2, replace=False))
    elif filtering == "one row":
        row_filter = RowFilter(np.delete(np.arange(count), seed % count))
    elif filtering == "codes":
        codes = rng.integers(0, 4, count).astype(np.int32)
        row_filter = RowFilter(row_codes=codes, allowed_codes=np.asarray([1], np.int32))
    elif filtering == "floor":
        floors = [float(np.float32(rng.normal(0, 0.2))) for _ in range(query_count)]
    codes = packed(matrix, block_rows)
    found = {
        scan: search(matrix, queries, k, scan, codes, filters=row_filter, min_scores=floors)
        for scan in ("int8", "float32")
    }
    for position, query in enumerate(queries):
        expected_rows, expected_scores = brute_force(
            matrix, query, k, row_filter, None if floors is None else floors[position]
        )
        for scan in ("int8", "float32"):
            rows, scores = found[scan][position]
            np.testing.assert_array_equal(rows, expected_rows, err_msg=f"{scan} ids, {kind}")
            np.testing.assert_array_equal(scores, expected_scores, err_msg=f"{scan} scores, {kind}")


@pytest.mark.parametrize("kind", KINDS)
def test_every_item_lies_within_the_bound_of_its_code_score(kind: str) -> None:
    matrix = adversarial_catalog(kind, 3000, 64, seed=5)
    codes, book = build_codes(matrix)
    queries = np.vstack([unit_rows(8, 64, seed=6), matrix[:2], np.zeros((1, 64), np.float32)])
    quantised = QueryCodes.of(queries, book)
    # What the int8 kernel computes, in exact integer arithmetic.
    dots = codes.astype(np.int64) @ quantised.codes.astype(np.int64).T
    approximate = quantised.base + quantised.scale * dots
    rows = np.arange(matrix.shape[0])
    for position, query in enumerate(queries):
        exact = exact_scores_of(matrix, rows, query)
        error = np.abs(exact.astype(np.float64) - approximate[:, position])
        bound = quantised.epsilon[position]
        assert (error <= bound).all(), f"{kind}: error {error.max()} > {bound}"


def test_the_kernel_computes_the_exact_integer_dot_products() -> None:
    matrix = unit_rows(1000, 384, seed=8)
    codes, book = build_codes(matrix)
    quantised = QueryCodes.of(unit_rows(4, 384, seed=9), book)
    import numkong

    kernel = np.asarray(numkong.dots_packed(quantised.codes, numkong.dots_pack(codes)))
    np.testing.assert_array_equal(kernel, quantised.codes.astype(np.int64) @ codes.astype(np.int64).T)


def halving_catalog() -> tuple[np.ndarray, np.ndarray, RowFilter]:
    """Two dimensions coded in steps of delta = 1/255. Item A = (g + 0.49 delta) in both dimensions
    is coded 0.98 delta / sqrt(2) below its true score for q = (1, 1)/sqrt(2), the largest error the bound
    allows; item B = (g + 0.51 delta, g) scores lower but is coded higher. Only a bound at least
    ~0.76 of the true one keeps A from being ruled out by B."""
    delta = 1.0 / 255.0
    grid = 100 * delta
    matrix = np.asarray(
        [
            [0.0, 0.0],  # the range's ends (excluded from the results)
            [1.0, 1.0],
            [grid + 0.49 * delta, grid + 0.49 * delta],  # A
            [grid + 0.51 * delta, grid],  # B
            *[[0.0, 0.0]] * 6,  # low scores: enough candidates that B's exact score is used to prune
        ],
        dtype=np.float32,
    )
    query = np.asarray([[1.0, 1.0]], dtype=np.float32) / np.float32(np.sqrt(2.0))
    return matrix, query, RowFilter(np.asarray([0, 1]))


def test_the_halving_catalog_is_hard() -> None:
    matrix, query, _ = halving_catalog()
    codes, book = build_codes(matrix)
    quantised = QueryCodes.of(query, book)
    approximate = quantised.base + quantised.scale * (codes.astype(np.int64) @ quantised.codes[0].astype(np.int64))
    exact = matrix.astype(np.float64) @ query[0].astype(np.float64)
    assert exact[2] > exact[3] and approximate[2] < approximate[3]
    assert exact[2] - approximate[2] > quantised.epsilon[0] / 2


def test_a_bound_cut_in_half_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    matrix, query, row_filter = halving_catalog()
    codes = packed(matrix)
    expected_rows, _ = brute_force(matrix, query[0], 1, row_filter, None)
    assert expected_rows.tolist() == [2]
    assert search(matrix, query, 1, "int8", codes, filters=row_filter)[0][0].tolist() == [2]
    original = QueryCodes.of

    def halved(queries: np.ndarray, book: object) -> QueryCodes:
        right = original(queries, book)  # type: ignore[arg-type]
        return dataclasses.replace(right, epsilon=right.epsilon / 2)

    monkeypatch.setattr(QueryCodes, "of", staticmethod(halved))
    assert search(matrix, query, 1, "int8", codes, filters=row_filter)[0][0].tolist() == [3]


def test_an_exact_score_does_not_depend_on_the_other_pairs() -> None:
    matrix = unit_rows(300, 384, seed=10)
    queries = unit_rows(3, 384, seed=11).astype(np.float64)
    rows = np.arange(300, dtype=np.int64)
    together = exact_scores(matrix, np.tile(rows, 3), queries, np.repeat(np.arange(3), 300))
    for query in range(3):
        alone = exact_scores(matrix, rows[::-1].copy(), queries, np.full(300, query))[::-1]
        np.testing.assert_array_equal(alone, together[query * 300 : (query + 1) * 300])
    reference = matrix.astype(np.float64) @ queries.T
    np.testing.assert_allclose(together.reshape(3, 300).T, reference, rtol=1e-6, atol=1e-7)


def test_a_flat_score_distribution_falls_back_to_float32_and_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan_module, "FALLBACK_MIN_ROWS", 64)
    # One dimension spans a huge range: every other dimension's codes are coarse, the bound wide.
    matrix = adversarial_catalog("one huge dimension", 5000, 32, seed=12)
    query = unit_rows(1, 32, seed=13)
    query[0, 0] = 0.0
    codes = packed(matrix, block_rows=256)
    stats = ScanStats()
    ((rows, scores),) = search(matrix, query, 10, "int8", codes, stats=stats)
    assert stats.snapshot()["fallbacks"] == 1
    expected_rows, expected_scores = brute_force(matrix, query[0], 10, RowFilter(), None)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(scores, expected_scores)


def test_random_unit_rows_rescore_few_rows() -> None:
    matrix = unit_rows(50_000, 128, seed=14)
    codes = packed(matrix)
    stats = ScanStats()
    search(matrix, unit_rows(4, 128, seed=15), 10, "int8", codes, stats=stats)
    assert stats.snapshot()["rescored_rows"]["int8"] < 0.05 * 4 * 50_000
    assert stats.snapshot()["fallbacks"] == 0


# The files: written beside the matrix, checked against it at load.


def write_matrix(directory: Path, matrix: np.ndarray, sha: str = "a" * 64) -> None:
    directory.mkdir(exist_ok=True)
    np.save(directory / "items.npy", matrix)
    write_codes(directory, np.load(directory / "items.npy", mmap_mode="r"), sha)


def test_codes_written_and_read_back_equal_codes_built_in_memory(tmp_path: Path) -> None:
    matrix = unit_rows(1000, 24, seed=16)
    write_matrix(tmp_path, matrix)
    stored = read_codes(tmp_path, item_count=1000, dim=24, items_sha256="a" * 64)
    assert stored is not None
    codes, book = build_codes(matrix)
    np.testing.assert_array_equal(stored.codes, codes)
    assert stored.book.to_json() == book.to_json()
    assert read_codes(tmp_path / "missing", item_count=1000, dim=24, items_sha256="a" * 64) is None


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("other matrix", "the matrix aaaaaaaaaaaa"),
        ("other count", "1000 x 24"),
        ("flipped byte", "does not match its checksum"),
        ("truncated", "unreadable"),
        ("bad json", "unreadable"),
    ],
)
def test_codes_that_do_not_belong_to_the_matrix_are_refused_naming_the_file(
    tmp_path: Path, damage: str, message: str
) -> None:
    write_matrix(tmp_path, unit_rows(1000, 24, seed=17))
    sha, count = "a" * 64, 1000
    if damage == "other matrix":
        sha = "b" * 64
    elif damage == "other count":
        count = 999
    elif damage == "flipped byte":
        data = bytearray((tmp_path / ITEM_CODES).read_bytes())
        data[-1] ^= 1
        (tmp_path / ITEM_CODES).write_bytes(bytes(data))
    elif damage == "truncated":
        (tmp_path / ITEM_CODES).write_bytes((tmp_path / ITEM_CODES).read_bytes()[:500])
    elif damage == "bad json":
        (tmp_path / ITEM_CODES_META).write_text("{", encoding="utf-8")
    with pytest.raises(ConfigurationError) as error:
        read_codes(tmp_path, item_count=count, dim=24, items_sha256=sha)
    assert message in str(error.value)
    assert ITEM_CODES in str(error.value) or ITEM_CODES_META in str(error.value)


def test_a_killed_code_write_leaves_no_code_book(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_matrix(tmp_path, unit_rows(100, 8, seed=18))

    def killed(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("embedrec.server.catalog.mmap.codes.build_codes", killed)
    with pytest.raises(KeyboardInterrupt):
        write_codes(tmp_path, np.load(tmp_path / "items.npy", mmap_mode="r"), "a" * 64)
    assert not (tmp_path / ITEM_CODES_META).exists()
    assert read_codes(tmp_path, item_count=100, dim=8, items_sha256="a" * 64) is None


# Through the real server: --scan int8 and --scan float32 answer every Recommend identically.
