"""A score formula on the Milvus store: fetch by similarity deep enough, then rank exactly.

Milvus ranks by similarity only. Under a formula (embedrec.server.catalog.score_formula) an
item's score is T = fl(s + P), s its exact similarity (recomputed from the returned vector, as
the memory-mapped store has it), P its prior. Fetch the d best items by similarity; every item
not fetched has similarity at most s_d + slack (s_d: the d-th fetched, slack: Milvus's float32
scores against the exact ones, 2x their bound) and prior at most P⁺, an upper bound of P over
every item (`prior_bound`). So once the k-th best T among the fetched items is above
s_d + slack + P⁺, no item beyond can enter the top k: the fetched ones' top k are the exact
top k. Otherwise fetch 4x deeper, up to Milvus's largest page, then score every admitted item.

P⁺ comes from each term's range: a decay lies in [0, 1], a log1p or value term between its
values at the field's smallest and largest value over the collection (scanned once per field,
cached until the collection changes; `FieldRanges.invalidate`), and the term's missing value;
a weight picks the end. With a FLAT index the fetched items are the true d best by similarity,
so the result equals a brute force over every admitted item. With HNSW or IVF_FLAT the fetch
is approximate and so is the answer (docs/score-formula.md).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from embedrec.server.catalog.exact import float32_error_bound
from embedrec.server.catalog.milvus.calls import MilvusCalls
from embedrec.server.catalog.milvus.filters import MilvusSelection
from embedrec.server.catalog.milvus.schema import ID, POSITION, VECTOR, milvus_field
from embedrec.server.catalog.prior_pass import PRIOR_SLACK
from embedrec.server.catalog.score_formula import Float64Array, ScoreFormula, ScoreTerm, check_prior
from embedrec.server.catalog.store import Query, Recommendation
from embedrec.server.errors import InvalidArgument
from embedrec.server.inference.pooling import FloatArray

Scorer = Callable[[FloatArray, FloatArray], FloatArray]


class RankedStore(Protocol):
    """What this module needs of the Milvus store."""

    def _ranked_raw(
        self, profiles: FloatArray, selection: MilvusSelection, *, limit: int, deadline: float | None
    ) -> list[list[Recommendation]]: ...

    @property
    def calls(self) -> MilvusCalls: ...


class FieldRanges:
    """Each numeric field's (smallest, largest) value over the collection, cached."""

    def __init__(self) -> None:
        self._ranges: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._generation = 0  # a scan that overlapped a change is not kept

    def invalidate(self) -> None:
        """Forget every range (the collection changed: call it once the change is visible)."""
        with self._lock:
            self._ranges.clear()
            self._generation += 1

    def of(self, store: RankedStore, name: str, deadline: float | None) -> tuple[float, float]:
        """(smallest, largest) value of `name` (NaN, NaN when no item has one)."""
        with self._lock:
            found, generation = self._ranges.get(name), self._generation
        if found is not None:
            return found
        column = milvus_field(name)
        values = np.asarray([float(row[column]) for row in store.calls.scan("", [column], deadline)], dtype=np.float64)
        values = values[~np.isnan(values)]
        found = (float(values.min()), float(values.max())) if values.size else (math.nan, math.nan)
        with self._lock:
            if generation == self._generation:
                self._ranges[name] = found
        return found


def term_bound(term: ScoreTerm, low: float, high: float) -> float:
    """An upper bound of weight x term over items whose value lies in [low, high] (NaN: no item
    has one) or is missing."""
    candidates = [term.missing]
    if not math.isnan(low):
        if term.function in ("gauss", "exp", "linear"):
            candidates += [0.0, 1.0]
        elif term.function == "value":
            candidates += [low / term.scale, high / term.scale]
        else:  # log1p: values at or below -1 are missing; above, as close to -1 as they like
            candidates += [math.log1p(high) if high > -1 else term.missing]
            candidates += [math.log1p(low) if low > -1 else -math.inf]
    if term.weight >= 0:
        return term.weight * max(candidates)
    return term.weight * min(candidates)


def prior_bound(store: RankedStore, ranges: FieldRanges, formula: ScoreFormula, deadline: float | None) -> float:
    """P⁺: an upper bound of the formula's prior over every item of the collection."""
    total = 0.0
    for term in formula.terms:
        total += term_bound(term, *ranges.of(store, term.field, deadline))
    return total + PRIOR_SLACK * (abs(total) + 1.0) if math.isfinite(total) else math.inf


def formula_search(
    store: RankedStore, ranges: FieldRanges, query: Query, k: int, scorer: Scorer
) -> list[Recommendation]:
    """The k best items of `query` by its formula (see the module docstring), best first, equal
    scores by catalog position; `scorer(profile, vectors)` gives the exact similarities."""
    assert query.formula is not None
    if query.scorer is not None:
        raise InvalidArgument(
            "score_formula with STRATEGY_BEST_SCORE is not served on the Milvus store yet", field="score_formula"
        )
    selection = query.row_filter
    assert isinstance(selection, MilvusSelection)
    profile = np.asarray(query.profile, dtype=np.float32)[None, :]
    slack = 2 * float32_error_bound(profile, 1.001)[0]
    bound = prior_bound(store, ranges, query.formula, query.deadline)
    depth = min(k + 16, MILVUS_MAX_TOPK)
    while True:
        fetched = store._ranked_raw(profile, selection, limit=depth, deadline=query.deadline)[0]
        ranked, lowest = _ranked(store, query, fetched, scorer)
        if len(fetched) < depth or (len(ranked) >= k and ranked[k - 1].score > lowest + slack + bound):
            return _floored(ranked, query.min_score)[:k]
        if depth == MILVUS_MAX_TOPK:  # Milvus pages no deeper: score every admitted item
            every = store.calls.scan(selection.expression, [ID, POSITION, VECTOR], query.deadline)
            rows = [
                Recommendation(row[ID], 0.0, int(row[POSITION]), vector=np.asarray(row[VECTOR], np.float32))
                for row in every
            ]
            return _floored(_ranked(store, query, rows, scorer)[0], query.min_score)[:k]
        depth = min(4 * depth, MILVUS_MAX_TOPK)


# Milvus's largest search page (its topk limit), as the Milvus store's MAX_TOPK.
MILVUS_MAX_TOPK = 16_384


def _ranked(
    store: RankedStore, query: Query, fetched: list[Recommendation], scorer: Scorer
) -> tuple[list[Recommendation], float]:
    """`fetched` scored by the formula, best first (ties by position, id), and the lowest exact
    similarity among them (-inf for none)."""
    assert query.formula is not None
    if not fetched:
        return [], -math.inf
    vectors = np.stack([np.asarray(one.vector, dtype=np.float32) for one in fetched])
    similarities = scorer(np.asarray(query.profile, dtype=np.float32), vectors)
    values = numeric_values(store, fetched, [term.field for term in query.formula.terms], query.deadline)
    prior = query.formula.prior(lambda name: values[name])
    check_prior(prior, query.formula, field="score_formula")
    totals = similarities.astype(np.float64) + prior
    ranked = [
        Recommendation(one.item_id, float(total), one.row, vector=one.vector, similarity=float(similarity))
        for one, total, similarity in zip(fetched, totals.tolist(), similarities.tolist(), strict=True)
    ]
    ranked.sort(key=lambda one: (-one.score, one.row, one.item_id))
    return ranked, float(similarities.min())


def numeric_values(
    store: RankedStore, chosen: Sequence[Recommendation], names: Sequence[str], deadline: float | None
) -> dict[str, Float64Array]:
    """The values of the numeric fields `names` of `chosen` (NaN: none), by field name."""
    columns = {name: milvus_field(name) for name in dict.fromkeys(names)}
    rows = store.calls.rows([one.item_id for one in chosen], list(columns.values()), deadline)
    return {
        name: np.asarray([float(rows.get(one.item_id, {}).get(column, math.nan)) for one in chosen], dtype=np.float64)
        for name, column in columns.items()
    }


def _floored(ranked: list[Recommendation], floor: float | None) -> list[Recommendation]:
    return ranked if floor is None else [one for one in ranked if one.score >= floor]
