"""Searches: one user's ranking request queued for the search batcher, and the pass that answers
a batch of them (profiles combined, one scan per item store, diversity, explanations) in the
search thread."""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from embedrec.server.batching.batcher import MicroBatcher
from embedrec.server.batching.policy import BatchPolicy
from embedrec.server.catalog.profiles import BestScore, Profile, ProfilePart, combine_profile
from embedrec.server.catalog.score_formula import ScoreFormula
from embedrec.server.catalog.store import ItemStore, Query, Recommendation, Selection
from embedrec.server.errors import EmbedrecError
from embedrec.server.observability.tracing import batch_tracer

Strategy = Literal["average_vector", "best_score"]


@dataclass(frozen=True)
class SearchItem:
    """One user's search, queued for the search batcher: the store snapshot it runs on, the
    profile's parts (combined in the search thread), the items it may return (the store's
    selection), its k, and whether each result names the part that contributed most."""

    items: ItemStore
    parts: Sequence[ProfilePart]
    row_filter: Selection
    k: int
    explain: bool = False
    min_score: float | None = None
    offset: int = 0
    diversity: tuple[str, int] | None = None  # (categorical field, max_per_value)
    strategy: Strategy = "average_vector"
    deadline: float | None = None  # time.monotonic() by which the answer is needed
    formula: ScoreFormula | None = None  # rank by this score formula (None: by similarity)


# A search's answer: its recommendations, or the error that refuses that one user (e.g. parts that
# cancel out), so one bad profile never fails the other users sharing its pass.
SearchResult = list[Recommendation] | EmbedrecError


def run_searches(batch: list[SearchItem], *, threads: int = 0) -> list[SearchResult]:
    """Answer a batch of searches with one pass over each item store in it (normally one), a
    local product on at most `threads` threads (0: one per core). Blocking: runs in the search
    thread. A store's error (e.g. Milvus unreachable) fails the searches of that store."""
    results: list[SearchResult] = [[] for _ in batch]
    profiles: dict[int, Profile | BestScore] = {}
    for position, search in enumerate(batch):
        try:
            profiles[position] = (
                BestScore(search.parts) if search.strategy == "best_score" else combine_profile(search.parts)
            )
        except EmbedrecError as error:
            results[position] = error
    by_index: dict[int, list[int]] = {}
    for position in profiles:
        search = batch[position]
        if search.diversity is not None:  # its own, longer ranked list
            chosen = _diversified(search, _query(search, profiles[position]), threads)
            results[position] = _explained(search, profiles[position], chosen) if search.explain else chosen
            continue
        by_index.setdefault(id(search.items), []).append(position)
    for positions in by_index.values():
        items = batch[positions[0]].items
        queries = [_query(batch[p], profiles[p]) for p in positions]
        found = items.search(queries, max(batch[p].k + batch[p].offset for p in positions), threads=threads)
        for position, recommendations in zip(positions, found, strict=True):
            search = batch[position]
            chosen = recommendations[search.offset : search.offset + search.k]
            if batch[position].explain and chosen:
                chosen = _explained(search, profiles[position], chosen)
            results[position] = chosen
    return results


def _query(search: SearchItem, profile: Profile | BestScore) -> Query:
    """The item-store query of `search` ranked by `profile`."""
    if isinstance(profile, BestScore):
        return Query(
            profile.vector,
            search.row_filter,
            search.min_score,
            profile.score,
            search.deadline,
            liked=profile.liked,
            disliked=profile.disliked,
            formula=search.formula,
        )
    return Query(profile.vector, search.row_filter, search.min_score, None, search.deadline, formula=search.formula)


def _diversified(search: SearchItem, query: Query, threads: int) -> list[Recommendation]:
    """The page of `search` from its diversified ranking: the ranked list walked best first,
    an item taken unless one of its values already has max_per_value items taken. The list is
    fetched 4x deeper until the page is full or every eligible item has been seen, so the result
    is the greedy walk over the whole ranking."""
    assert search.diversity is not None
    name, limit = search.diversity
    wanted = search.offset + search.k
    fetch = max(4 * wanted, 32)
    while True:
        (ranked,) = search.items.search([query], fetch, threads=threads)
        taken: list[Recommendation] = []
        counts: dict[Hashable, int] = {}
        for recommendation, codes in zip(ranked, search.items.field_values(ranked, name), strict=True):
            if any(counts.get(code, 0) >= limit for code in codes):
                continue
            for code in codes:
                counts[code] = counts.get(code, 0) + 1
            taken.append(recommendation)
            if len(taken) == wanted:
                break
        if len(taken) == wanted or len(ranked) < fetch:
            return taken[search.offset :]
        fetch *= 4


def _explained(search: SearchItem, profile: Profile | BestScore, chosen: list[Recommendation]) -> list[Recommendation]:
    """`chosen` with each item's top contribution filled in and, under a formula, each term's
    part of its score (the same float64 values the ranking summed)."""
    if not chosen:
        return chosen
    contributions = profile.top_contributions(search.items.vectors_of(chosen))
    explained = [replace(r, contribution=c) for r, c in zip(chosen, contributions, strict=True)]
    if search.formula is None:
        return explained
    parts = search.formula.parts(lambda name: search.items.numeric_values(chosen, name))
    return [replace(r, score_terms=tuple(row.tolist())) for r, row in zip(explained, parts, strict=True)]


def create_search_batcher(
    policy: BatchPolicy, *, threads: int = 0, **hooks: Any
) -> MicroBatcher[SearchItem, SearchResult]:
    """A micro-batcher for top-k searches: concurrent Recommend calls share one scan of the matrix
    (one matrix product per chunk for all of them), off the event loop, on `threads` threads.
    With no wait (max_wait_ms 0) an idle server runs a lone search at once; searches that
    arrive while a pass runs meet in the next one."""
    return MicroBatcher(
        functools.partial(run_searches, threads=threads),
        tracer=batch_tracer("search"),
        policy=policy,
        name="search",
        unit="searches",
        queue_limit_name="max_queued_searches",
        **hooks,
    )
