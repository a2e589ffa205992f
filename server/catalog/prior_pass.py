"""The exact scans' first pass under a score formula: similarity bound plus an exact prior.

With a formula (embedrec.server.catalog.score_formula) a row's exact score is
T = fl(s + P): s its exact similarity (embedrec.server.catalog.exact.exact_scores, float32), P its
prior (float64, computed exactly per row over the field columns), summed in float64. The first
pass bounds s only: for a row with first-pass value v, |s - est(v)| ≤ ε_q (ε_q: the pass's bound
for query q, its relative slack folded in with |est| ≤ M_q + ε_q, M_q = ‖q‖·row_norm). So with
E = fl(est(v) + P), u = 2^-53:

    |T - E| ≤ |s - est| + u·|s + P| + u·|est + P| ≤ ε_q + 2u·(M_q + ε_q + max|P|) ≤ ε'_q,
    ε'_q = (ε_q + PRIOR_SLACK·(M_q + ε_q + max|P| + 1))·(1 + 1e-9)      (PRIOR_SLACK = 1e-12 ≫ 2u)

and every comparison the scan makes is on such intervals: a row is a candidate when E + ε'_q
reaches the query's floor (its k-th best exact T so far, or min_score), E - ε'_q is a lower
bound of T. The prune / rescore of embedrec.server.catalog.mmap.scan is then unchanged: only the
units of the candidates' values change (estimates of T instead of first-pass values).

The first pass's own per-query thresholds still pre-filter a block before any float64 work:
a row with v below the pass's threshold for F = floor - max P(block) - δ has s < F, so
T ≤ fl(s + P) < floor whenever δ ≥ rounding of these few float64 operations; δ =
PRIOR_SLACK·(|floor| + max|P| + M_q + 1) is far above it. Rows the pre-filter keeps are then
checked with their own P. Subtractions of the slack are written so that -inf floors stay -inf.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from embedrec.server.catalog.exact import FLOAT64_SLACK, Float64Array

# Relative slack of the float64 sums with a prior (a handful of roundings of 2^-53 each).
PRIOR_SLACK = 1e-12
IndexArray = npt.NDArray[np.int64]


class BoundedPass(Protocol):
    """A first pass whose values estimate the exact similarity within a per-query bound."""

    epsilon: Float64Array  # (q,): |exact similarity - estimate| ≤ epsilon for every row

    def values(self, start: int, stop: int, block: int) -> npt.NDArray[Any]:
        """First-pass values of rows start..stop, (queries, rows)."""
        ...

    def thresholds(self, floors: Float64Array) -> npt.NDArray[Any]:
        """Per query, the smallest value whose row may score at least the floor."""
        ...

    def estimates(self, values: npt.NDArray[Any], query_of: IndexArray) -> Float64Array:
        """The float64 similarity estimate of each value, for its query."""
        ...

    def affine(self) -> tuple[Float64Array, Float64Array]:
        """Per query (offset, slope): estimate = offset + slope·value."""
        ...


class PriorPass:
    """A first pass in the units of the formula's score (see the module docstring): values
    are the inner pass's, thresholds and lower bounds apply to estimates of T."""

    def __init__(self, inner: BoundedPass, prior: Float64Array, magnitude: Float64Array) -> None:
        """`prior` (n,) float64, finite; `magnitude` (q,) bounds |similarity| of every row."""
        self.inner = inner
        self.prior = prior
        self.prior_abs = float(np.abs(prior).max(initial=0.0))
        self.epsilon: Float64Array = (
            inner.epsilon + PRIOR_SLACK * (magnitude + inner.epsilon + self.prior_abs + 1.0)
        ) * (1.0 + FLOAT64_SLACK)
        self._magnitude = magnitude
        # The block filter in float32 (`block_filter`): the prior rounded once, and a margin above
        # every float32 rounding of offset + slope·value + P (six roundings of 2^-24 each of
        # magnitudes below |slope·value| + |offset| + |P| ≤ M + ε + 2|offset| + |offset| + max|P|).
        self.prior32 = prior.astype(np.float32)
        offset, slope = inner.affine()
        self._offset32, self._slope32 = offset.astype(np.float32), slope.astype(np.float32)
        self._margin = 1e-6 * (magnitude + inner.epsilon + 3.0 * np.abs(offset) + self.prior_abs + 1.0)

    def values(self, start: int, stop: int, block: int) -> npt.NDArray[Any]:
        """The inner pass's values of rows start..stop."""
        return self.inner.values(start, stop, block)

    def coarse_thresholds(self, floors: Float64Array, start: int, stop: int) -> npt.NDArray[Any]:
        """Per query, the inner pass's threshold below which no row of start..stop, whatever
        its prior, can score at least the floor."""
        top = float(self.prior[start:stop].max(initial=-np.inf))
        slack = PRIOR_SLACK * (np.abs(floors) + self.prior_abs + self._magnitude + 1.0)
        return self.inner.thresholds(floors - top - slack)

    def block_filter(
        self, values: npt.NDArray[Any], floors: Float64Array, start: int, stop: int
    ) -> npt.NDArray[np.bool_]:
        """Which rows of a block (queries, rows) may score at least the floor, in float32 over
        the whole block (cheaper than float64 on the rows when most pass the pre-filter): kept
        when offset + slope·value + P, all in float32, reaches floor - ε' - margin, the margin
        covering every float32 rounding (so no row scoring at least the floor is dropped)."""
        approx = values.astype(np.float32)
        approx *= self._slope32[:, None]
        approx += self._offset32[:, None]
        approx += self.prior32[None, start:stop]
        wanted = self.thresholds(floors) - self._margin - PRIOR_SLACK * np.abs(floors)
        needed = wanted.astype(np.float32)
        above = needed.astype(np.float64) > wanted  # rounded up: step down once
        needed[above] = np.nextafter(needed[above], np.float32(-np.inf))
        kept: npt.NDArray[np.bool_] = approx >= needed[:, None]
        return kept

    def totals(self, values: npt.NDArray[Any], query_of: IndexArray, rows: IndexArray) -> Float64Array:
        """E = estimate + P of each (value, query, row)."""
        totals: Float64Array = self.inner.estimates(values, query_of) + self.prior[rows]
        return totals

    def block_totals(self, values: npt.NDArray[Any], start: int, stop: int) -> Float64Array:
        """E for a whole block of values (queries, rows)."""
        query_count, width = values.shape
        query_of = np.repeat(np.arange(query_count, dtype=np.int64), width)
        estimates = self.inner.estimates(values.ravel(), query_of).reshape(values.shape)
        totals: Float64Array = estimates + self.prior[None, start:stop]
        return totals

    def thresholds(self, floors: Float64Array) -> Float64Array:
        """Per query, the smallest E whose row may score at least the floor."""
        thresholds: Float64Array = floors - self.epsilon - PRIOR_SLACK * np.abs(floors)
        return thresholds

    def lower_bounds(self, values: npt.NDArray[Any]) -> Float64Array:
        """Per query, a lower bound of T for a row with that E."""
        estimate = np.asarray(values, dtype=np.float64)
        bounds: Float64Array = estimate - self.epsilon - PRIOR_SLACK * np.abs(estimate)
        return bounds
