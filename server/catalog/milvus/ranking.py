"""How the Milvus store ranks what Milvus returns: exactly, as the memory-mapped store does.

Milvus's float32 distances only pick candidates; each is rescored exactly from the vector Milvus
returns (embedrec.server.catalog.exact), and equal scores go by (position, id). best_score runs
a threshold walk over the neighbours of every liked and disliked part (see the store's module
docstring).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from embedrec.server.catalog.exact import exact_scores_of
from embedrec.server.catalog.milvus.filtered import planned_effort, searched_in_parts
from embedrec.server.catalog.milvus.filters import MilvusSelection
from embedrec.server.catalog.milvus.schema import ID, POSITION, VECTOR
from embedrec.server.catalog.store import Query, Recommendation, stored_vectors
from embedrec.server.inference.pooling import FloatArray

if TYPE_CHECKING:  # the store calls this module: only the type checker follows the loop
    from embedrec.server.catalog.milvus.store import MilvusItems

# Milvus answers at most this many results per query vector (topk + offset).
MAX_TOPK = 16_384
# Results fetched past the k wanted, so equal scores at the cut can be ordered by position.
TIE_MARGIN = 16


def best_score(store: MilvusItems, query: Query, k: int) -> list[Recommendation]:
    """The k best items by `query.scorer` (best_score), exact (see the module docstring); a
    restriction is searched by milvus.filtered's plan, as a plain search's is."""
    assert query.scorer is not None and query.liked is not None
    selection = selection_of(query)
    plan = store._filter_plan(selection)
    if plan.exact:
        return rescored(
            every_row(store, selection.expression, query.deadline, few=True), query.scorer, query.min_score
        )[:k]
    selection = planned_effort(selection, plan)
    probes = [query.liked] + ([-query.disliked] if query.disliked is not None and len(query.disliked) else [])
    depth = min(k + TIE_MARGIN, MAX_TOPK)
    while True:
        candidates: dict[str, Recommendation] = {}
        bound, complete = 0.0, False
        for vectors in probes:
            search = functools.partial(store._ranked_raw, vectors, limit=depth, deadline=query.deadline)
            lists = searched_in_parts(search, selection, POSITION, plan.parts, depth)
            complete |= any(len(one) < depth for one in lists)
            bound += max(one[-1].score if one else -math.inf for one in lists)
            for one in lists:
                for hit in one:
                    candidates.setdefault(hit.item_id, hit)
        ranked = rescored(list(candidates.values()), query.scorer, query.min_score)
        if complete or (len(ranked) >= k and ranked[k - 1].score > bound + 1e-6):
            return ranked[:k]
        if depth == MAX_TOPK:  # the walk cannot go deeper: score every eligible item
            every = every_row(store, selection.expression, query.deadline)
            return rescored(every, query.scorer, query.min_score)[:k]
        depth = min(4 * depth, MAX_TOPK)


def every_row(
    store: MilvusItems, expression: str, deadline: float | None, *, few: bool = False
) -> list[Recommendation]:
    """Every row `expression` admits, with its vector (score 0: the caller scores them); `few`:
    expected to be few, fetched in one call (by an iterator only when they are not)."""
    fields = [ID, POSITION, VECTOR]
    rows = store.calls.first(expression, fields, MAX_TOPK, deadline) if few else []
    if not few or len(rows) == MAX_TOPK:
        rows = list(store.calls.scan(expression, fields, deadline))
    return [
        Recommendation(row[ID], 0.0, int(row[POSITION]), vector=np.asarray(row[VECTOR], np.float32)) for row in rows
    ]


def scored_here(
    store: MilvusItems, profiles: FloatArray, expression: str, wanted: int, deadline: float | None
) -> list[list[Recommendation]]:
    """Each profile's `wanted` best among every row `expression` admits, scored here (a
    restriction admitting few rows: milvus.filtered's FilterPlan.exact), in the store's order."""
    every = every_row(store, expression, deadline, few=True)
    return [rescored(every, functools.partial(exact_scores_for, profile), None)[:wanted] for profile in profiles]


def rescored(
    candidates: list[Recommendation], scorer: Callable[[FloatArray], FloatArray], floor: float | None
) -> list[Recommendation]:
    if not candidates:
        return []
    scores = scorer(stored_vectors(candidates, len(candidates[0].vector)))  # type: ignore[arg-type]
    rescored = [
        Recommendation(one.item_id, float(score), one.row, vector=one.vector)
        for one, score in zip(candidates, scores.tolist(), strict=True)
        if floor is None or np.float32(score) >= np.float32(floor)
    ]
    rescored.sort(key=lambda one: (-np.float32(one.score), one.row, one.item_id))
    return rescored


def exact_scores_for(profile: FloatArray, vectors: FloatArray) -> FloatArray:
    """The exact scores of `vectors` (n, dim) for `profile`, as the memory-mapped store has them."""
    return exact_scores_of(vectors, np.arange(vectors.shape[0], dtype=np.int64), profile)


def sorted_hits(hits: Iterable[dict[str, Any]]) -> list[Recommendation]:
    ranked = [
        Recommendation(
            hit[ID] if ID in hit else hit["entity"][ID],
            float(hit["distance"]),
            int(hit["entity"][POSITION]),
            vector=np.asarray(hit["entity"][VECTOR], dtype=np.float32),
        )
        for hit in hits
    ]
    ranked.sort(key=lambda one: (-np.float32(one.score), one.row, one.item_id))
    return ranked


def selection_of(query: Query) -> MilvusSelection:
    if not isinstance(query.row_filter, MilvusSelection):
        raise TypeError(f"a query on the Milvus store needs a MilvusSelection, got {type(query.row_filter).__name__}")
    return query.row_filter
