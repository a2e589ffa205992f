"""Recommend's optional second stage: the best `candidates` items by embedding, scored by a
cross-encoder against a query text and returned in that order.

The first stage is the ordinary exact search with every restriction (hidden items, exclusions,
history, filters, conditions, score floor, diversity), asked for `candidates` items instead of
offset + k. The stage reads those items' texts from the store, scores (query, text) pairs with
the reranker (its own batcher: the same token budget and deadlines as any Rerank call), orders by
that score (equal scores, and items without a text after those with one, keep the embedding
order), then applies offset and k. Each result keeps its embedding score and gains the
cross-encoder's (`Recommendation.rerank_score`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from embedrec.server.catalog.store import ItemStore, Recommendation
from embedrec.server.errors import FailedPrecondition, InvalidArgument
from embedrec.server.inference.reranking import Reranker
from embedrec.server.limits import Limits

MAX_CANDIDATES = 1_000
DEFAULT_CANDIDATES = 50


@dataclass(frozen=True)
class RerankSpec:
    """RecommendRequest.rerank in core terms (0 / "": the documented defaults)."""

    candidates: int = 0
    model: str = ""
    query: str = ""


@dataclass(frozen=True)
class RerankStage:
    """A checked rerank stage of one request: its reranker, how many candidates, the query."""

    reranker: Reranker
    candidates: int
    query: str


def checked_stage(
    spec: RerankSpec,
    *,
    k: int,
    offset: int,
    texts: Sequence[tuple[str, float]],
    limits: Limits,
    reranker_for: Callable[[str], Reranker] | None,
    prefix: str = "",
) -> RerankStage:
    """The stage `spec` asks for; InvalidArgument naming `prefix`rerank.<field> and its limit,
    FailedPrecondition when no reranker is served, NotFound for an unknown model."""
    field = f"{prefix}rerank"
    wanted = offset + k
    candidates = spec.candidates or max(DEFAULT_CANDIDATES, wanted)
    if not wanted <= candidates <= MAX_CANDIDATES:
        raise InvalidArgument(
            f"{field}.candidates must be offset + k ({wanted}) to {MAX_CANDIDATES}, got {spec.candidates}",
            field=f"{field}.candidates",
        )
    query = spec.query or "\n".join(text for text, weight in texts if weight > 0)
    if not query.strip():
        raise InvalidArgument(
            f"{field}.query is empty and the profile has no texts with a positive weight: give {field}.query",
            field=f"{field}.query",
        )
    if len(query) > limits.max_chars_per_text:
        raise InvalidArgument(
            f"{field}.query has {len(query)} characters; the limit is max_chars_per_text={limits.max_chars_per_text}",
            field=f"{field}.query",
        )
    if reranker_for is None:
        raise FailedPrecondition(f"{field}: this server serves no reranker", field=field)
    return RerankStage(reranker_for(spec.model), candidates, query)


async def reranked(
    stage: RerankStage,
    items: ItemStore,
    found: list[Recommendation],
    *,
    k: int,
    offset: int,
    deadline: float | None,
    read_texts: Callable[..., Awaitable[list[str] | None]],
    field: str = "rerank",
) -> list[Recommendation]:
    """`found` (the embedding stage's candidates, best first) ordered by the reranker, then
    offset and k applied. `read_texts(function, *args)` runs the store's text look-up off the
    event loop. FailedPrecondition when the store holds no texts."""
    if not found:
        return []
    texts = await read_texts(items.texts_of, found, deadline)
    if texts is None:
        raise FailedPrecondition(
            f"{field} needs the items' texts: these items were built without them "
            "(rebuild them with embedrec export-items, or re-sync the Milvus collection)"
        )
    with_text = [position for position, text in enumerate(texts) if text.strip()]
    scores: dict[int, float] = {}
    if with_text:
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        result = await stage.reranker.rerank(
            stage.query, [texts[p] for p in with_text], timeout=timeout, from_catalog=True
        )
        scores = {with_text[hit.index]: hit.score for hit in result.hits}
    order = sorted(range(len(found)), key=lambda p: (p not in scores, -scores.get(p, 0.0), p))
    chosen = order[offset : offset + k]
    return [dataclasses.replace(found[p], rerank_score=scores.get(p)) for p in chosen]
