"""Score formulas without a server: the grammar, the checks, the terms' definitions, and the
exact scans under a prior (both scans, and the scorer and prefilter paths) against a float64
brute force over every admitted row, on adversarial priors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedrec.server.catalog.exact import exact_scores_of
from embedrec.server.catalog.milvus.formula import term_bound
from embedrec.server.catalog.mmap.codes import ItemCodes, build_codes
from embedrec.server.catalog.mmap.scan import PackedCodes, exact_top_k
from embedrec.server.catalog.mmap.topk import RowFilter, top_k
from embedrec.server.catalog.score_formula import (
    PriorCache,
    ScoreFormulaSpec,
    ScoreTerm,
    ScoreTermSpec,
    check_formula,
)
from embedrec.server.errors import InvalidArgument

KINDS = {"popularity": "numeric", "published": "numeric", "price": "numeric", "brand": "categorical"}


def checked(text: str, now: float = 1_000_000.0):  # type: ignore[no-untyped-def]
    return check_formula(ScoreFormulaSpec(expression=text), KINDS, max_terms=8, field="score_formula", now=now)


class TestGrammar:
    def test_a_formula_reads_back_from_its_own_text(self) -> None:
        formula = checked(
            "0.08*log1p(popularity) + 0.2*gauss(published, origin=now, scale=604800, offset=3600, decay=0.3) "
            "- 0.01*value(price, scale=100, missing=-5) - exp(price, origin=-2.5, scale=1e3)"
        )
        assert formula is not None
        assert [term.weight for term in formula.terms] == [0.08, 0.2, -0.01, -1.0]
        assert formula.terms[1].origin == 1_000_000.0 and formula.terms[1].decay == 0.3
        assert formula.terms[2].missing == -5.0 and formula.terms[3].origin == -2.5
        assert checked(formula.text()) == formula

    @pytest.mark.parametrize("text", ["none", "", "   "])
    def test_none_or_blank_is_similarity_alone(self, text: str) -> None:
        assert checked(text) is None

    @pytest.mark.parametrize(
        ("text", "named"),
        [
            ("0.1*log1p(popularity", "expected '\\)'"),
            ("0.1 log1p(popularity)", "expected '\\*'"),
            ("log1p(popularity) log1p(price)", "'\\+' or '-' between terms"),
            ("gauss(published, origin=soon, scale=1)", "expected a number"),
            ("gauss(published, center=1)", "unknown parameter 'center'"),
            ("log1p(popularity) ; drop", "unexpected ';"),
        ],
    )
    def test_syntax_errors_name_the_expression_and_what_was_expected(self, text: str, named: str) -> None:
        with pytest.raises(InvalidArgument, match=rf"score_formula.expression: .*{named}"):
            checked(text)


class TestChecks:
    @pytest.mark.parametrize(
        ("term", "named"),
        [
            (ScoreTermSpec("nope", "log1p"), r"terms\[0\].field: the items have no field 'nope'"),
            (ScoreTermSpec("brand", "log1p"), r"terms\[0\].field: 'brand' is categorical"),
            (ScoreTermSpec("price", "cube"), r"terms\[0\].function: unknown function 'cube'"),
            (ScoreTermSpec("price", "value", weight=math.nan), r"terms\[0\].weight must be finite, got nan"),
            (ScoreTermSpec("price", "value", weight=math.inf), r"terms\[0\].weight must be finite"),
            (ScoreTermSpec("price", "value", scale=0.0), r"terms\[0\].scale must be > 0, got 0.0"),
            (ScoreTermSpec("price", "gauss", origin=1, scale=-1), r"terms\[0\].scale must be > 0"),
            (ScoreTermSpec("price", "exp", origin=math.inf), r"terms\[0\].origin must be finite"),
            (ScoreTermSpec("price", "exp", origin=1, decay=1.0), r"terms\[0\].decay must be between 0 and 1"),
            (ScoreTermSpec("price", "linear", origin=1, offset=-1), r"terms\[0\].offset must be >= 0"),
            (ScoreTermSpec("price", "linear"), r"terms\[0\].origin: a linear decay needs an origin"),
            (ScoreTermSpec("price", "linear", origin=1, origin_now=True), r"terms\[0\].origin: .*a number or now, one"),
            (ScoreTermSpec("price", "value", origin=1), r"terms\[0\].origin: value takes no origin"),
            (ScoreTermSpec("price", "log1p", scale=2), r"terms\[0\].scale: log1p takes no scale"),
            (ScoreTermSpec("price", "value", missing=math.nan), r"terms\[0\].missing must be finite"),
        ],
    )
    def test_bad_terms_are_invalid_naming_the_term_and_parameter(self, term: ScoreTermSpec, named: str) -> None:
        with pytest.raises(InvalidArgument, match=rf"^score_formula\.{named}"):
            check_formula(ScoreFormulaSpec((term,)), KINDS, max_terms=8, field="score_formula")

    def test_too_many_terms_name_the_limit(self) -> None:
        spec = ScoreFormulaSpec((ScoreTermSpec("price", "value"),) * 3)
        with pytest.raises(InvalidArgument, match=r"score_formula.terms has 3 entries; the limit is max_score_terms=2"):
            check_formula(spec, KINDS, max_terms=2, field="score_formula")

    def test_terms_and_expression_together_are_invalid(self) -> None:
        spec = ScoreFormulaSpec((ScoreTermSpec("price", "value"),), "log1p(price)")
        with pytest.raises(InvalidArgument, match="terms or expression, not both"):
            check_formula(spec, KINDS, max_terms=8, field="score_formula")

    def test_a_formula_that_overflows_for_some_item_is_invalid(self) -> None:
        formula = checked("1e300*value(price, scale=1e-10)")
        cache = PriorCache(lambda name: np.asarray([1.0, np.nan, 5.0]))
        with pytest.raises(InvalidArgument, match="not finite for some items"):
            cache.prior(formula)


class TestTerms:
    """The definitions of Elasticsearch's decay functions, value by value."""

    def test_decays_are_one_within_the_offset_and_decay_at_offset_plus_scale(self) -> None:
        x = np.asarray([10.0, 12.0, 8.0, 15.0, 5.0, 30.0, np.nan])
        for function in ("gauss", "exp", "linear"):
            term = ScoreTerm("t", function, 1.0, origin=10.0, scale=3.0, offset=2.0, decay=0.25, missing=-1.0)  # type: ignore[arg-type]
            values = term.values(x)
            assert values[0] == values[1] == values[2] == 1.0
            assert values[3] == pytest.approx(0.25, rel=1e-12) and values[4] == pytest.approx(0.25, rel=1e-12)
            assert values[6] == -1.0
        gauss = ScoreTerm("t", "gauss", 1.0, origin=0.0, scale=2.0, decay=0.5)
        assert gauss.values(np.asarray([4.0]))[0] == pytest.approx(0.5**4, rel=1e-12)
        exp = ScoreTerm("t", "exp", 1.0, origin=0.0, scale=2.0, decay=0.5)
        assert exp.values(np.asarray([4.0]))[0] == pytest.approx(0.25, rel=1e-12)
        linear = ScoreTerm("t", "linear", 1.0, origin=0.0, scale=2.0, decay=0.5)
        assert linear.values(np.asarray([3.0, 4.0, 100.0])).tolist() == [0.25, 0.0, 0.0]

    def test_log1p_and_value_with_their_missing_values(self) -> None:
        log1p = ScoreTerm("t", "log1p", 1.0, missing=7.0)
        assert log1p.values(np.asarray([0.0, math.e - 1, -1.0, -3.0, np.nan])).tolist() == [0.0, 1.0, 7.0, 7.0, 7.0]
        value = ScoreTerm("t", "value", 1.0, scale=4.0)
        assert value.values(np.asarray([2.0, -8.0, np.nan])).tolist() == [0.5, -2.0, 0.0]

    def test_the_prior_is_summed_in_term_order(self) -> None:
        formula = checked("0.5*value(price) - 2*log1p(popularity)")
        assert formula is not None
        columns = {"price": np.asarray([2.0, np.nan]), "popularity": np.asarray([math.e - 1, 0.0])}
        assert formula.prior(columns.__getitem__).tolist() == [1.0 - 2.0, 0.0]
        assert formula.parts(columns.__getitem__).tolist() == [[1.0, -2.0], [0.0, -0.0]]

    @given(
        function=st.sampled_from(["log1p", "value", "gauss", "exp", "linear"]),
        weight=st.floats(-100, 100),
        values=st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)), min_size=1, max_size=30),
        missing=st.floats(-10, 10),
    )
    def test_the_milvus_bound_of_a_term_holds_for_every_value(
        self, function: str, weight: float, values: list[float], missing: float
    ) -> None:
        term = ScoreTerm("t", function, weight, origin=3.0, scale=7.0, offset=1.0, decay=0.4, missing=missing)  # type: ignore[arg-type]
        x = np.asarray(values)
        known = x[~np.isnan(x)]
        low, high = (known.min(), known.max()) if known.size else (math.nan, math.nan)
        parts = weight * term.values(x)
        assert (parts <= term_bound(term, low, high) + 1e-9 * (1 + np.abs(parts))).all()


def unit_rows(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    matrix = rng.standard_normal((count, dim)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def adversarial_prior(kind: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """A prior of one hard kind: the similarity decides, or the prior does, or they fight."""
    if kind == "all equal":
        return np.full(count, 0.37)
    if kind == "tiny":
        return rng.standard_normal(count) * 1e-7
    if kind == "comparable":
        return rng.standard_normal(count) * 0.05
    if kind == "huge weights":
        return rng.standard_normal(count) * 1e6
    if kind == "negative":
        return -np.abs(rng.standard_normal(count)) * 3.0
    if kind == "prior alone wins":  # a few items whose prior beats any similarity
        prior = np.zeros(count)
        prior[rng.choice(count, size=min(count, 5), replace=False)] = 5.0
        return prior
    if kind == "quantised ties":  # many exact ties between totals of duplicate rows
        return np.round(rng.standard_normal(count)) * 0.5
    raise ValueError(kind)


PRIORS = ["all equal", "tiny", "comparable", "huge weights", "negative", "prior alone wins", "quantised ties"]


def brute_force(matrix, query, k, prior, row_filter, floor):  # type: ignore[no-untyped-def]
    """Every row's formula score in float64, filtered, best first (ties by row), the first k."""
    rows = np.arange(matrix.shape[0], dtype=np.int64)
    totals = exact_scores_of(matrix, rows, query).astype(np.float64) + prior
    keep = row_filter.keep(rows)
    if floor is not None:
        keep &= totals >= floor
    rows, totals = rows[keep], totals[keep]
    order = np.lexsort((rows, -totals))[:k]
    return rows[order], totals[order]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(PRIORS),
    count=st.integers(1, 1500),
    k=st.integers(1, 40),
    queries=st.integers(1, 4),
    duplicates=st.booleans(),
    filtered=st.booleans(),
    floor=st.one_of(st.none(), st.floats(-2, 2)),
    seed=st.integers(0, 2**16),
)
def test_both_scans_under_a_prior_equal_the_float64_brute_force(  # type: ignore[no-untyped-def]
    kind, count, k, queries, duplicates, filtered, floor, seed
) -> None:
    rng = np.random.default_rng(seed)
    matrix = unit_rows(count, 24, rng)
    if duplicates:
        matrix[1::2] = matrix[0::2][: matrix[1::2].shape[0]]
    prior = adversarial_prior(kind, count, rng)
    codes, book = build_codes(matrix)
    packed = PackedCodes(ItemCodes(codes, book), block_rows=256)
    profiles = unit_rows(queries, 24, rng)
    row_filter = RowFilter(rng.choice(count, size=count // 3)) if filtered else RowFilter()
    for scan in ("int8", "float32"):
        found = exact_top_k(
            matrix,
            profiles,
            k,
            scan=scan,  # type: ignore[arg-type]
            row_norm=book.row_norm,
            packed=packed if scan == "int8" else None,
            filters=row_filter,
            min_scores=[floor] * queries,
            prior=prior,
        )
        for profile, (rows, scores) in zip(profiles, found, strict=True):
            expected_rows, expected_scores = brute_force(matrix, profile, k, prior, row_filter, floor)
            assert rows.tolist() == expected_rows.tolist(), (scan, kind)
            assert scores.dtype == np.float64 and scores.tolist() == expected_scores.tolist()


@pytest.mark.parametrize("kind", PRIORS)
def test_a_scorer_under_a_prior_equals_the_brute_force(kind: str) -> None:
    """The best_score path (its own scorer, top_k) adds the prior the same way."""
    rng = np.random.default_rng(3)
    matrix = unit_rows(2000, 16, rng)
    liked = unit_rows(2, 16, rng)
    prior = adversarial_prior(kind, 2000, rng)

    def scorer(block: np.ndarray) -> np.ndarray:
        return (block @ liked.T).max(axis=1).astype(np.float32)[:, None]

    ((rows, scores),) = top_k(matrix, liked[:1], 25, scorer=scorer, prior=prior, chunk_rows=300)
    totals = scorer(matrix)[:, 0].astype(np.float64) + prior
    expected = np.lexsort((np.arange(2000), -totals))[:25]
    assert rows.tolist() == expected.tolist() and scores.tolist() == totals[expected].tolist()


def test_the_prior_bound_is_needed_a_scan_that_ignores_it_is_caught() -> None:
    """Without the prior in the bound a row whose prior alone wins is pruned: the brute force
    sees it, so this test suite would fail a scan that forgot the prior."""
    rng = np.random.default_rng(11)
    matrix = unit_rows(3000, 16, rng)
    prior = np.zeros(3000)
    prior[2999] = 10.0  # its similarity is anything; its prior wins
    codes, book = build_codes(matrix)
    packed = PackedCodes(ItemCodes(codes, book), block_rows=256)
    query = unit_rows(1, 16, rng)
    ((plain, _),) = exact_top_k(matrix, query, 5, scan="int8", row_norm=book.row_norm, packed=packed)
    ((ranked, _),) = exact_top_k(matrix, query, 5, scan="int8", row_norm=book.row_norm, packed=packed, prior=prior)
    assert 2999 not in plain.tolist() and ranked[0] == 2999
