"""Recommend: a request validated (`check_profile_request`), its profile gathered from the
catalog (`gather_profile`), its texts embedded with every other user's, and its search queued for
the search batcher; exact top-k, best first."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from embedrec.server.batching.batcher import MicroBatcher
from embedrec.server.batching.offload import CpuPool
from embedrec.server.catalog.fields import ConditionSpec
from embedrec.server.catalog.profiles import ProfilePart, combine_profile
from embedrec.server.catalog.rerank_stage import RerankSpec, RerankStage, checked_stage, reranked
from embedrec.server.catalog.score_formula import ScoreFormula, ScoreFormulaSpec, check_formula, parse_formula
from embedrec.server.catalog.search import SearchItem, SearchResult, Strategy
from embedrec.server.catalog.store import NO_EFFORT, History, ItemStore, Recommendation, SearchEffort, Selection
from embedrec.server.errors import EmbedrecError, InvalidArgument
from embedrec.server.inference.embedding import Embedder
from embedrec.server.inference.pooling import FloatArray
from embedrec.server.inference.reranking import Reranker
from embedrec.server.limits import (
    Limits,
    check_count,
    check_k,
    check_score_floor,
    check_vector,
    check_weight,
    integer_range,
)
from embedrec.server.observability.tracing import span


@dataclass(frozen=True)
class ProfileRequest:
    """A Recommend request in core terms (see RecommendRequest in the proto)."""

    k: int
    user_vector: Sequence[float] | FloatArray = ()
    user_vector_weight: float = 1.0
    texts: Sequence[tuple[str, float]] = ()
    items: Sequence[tuple[str, float]] = ()
    exclude_ids: Sequence[str] = ()
    exclude_history: bool = True
    filter_values: Sequence[str] = ()
    explain: bool = False
    min_score: float | None = None
    offset: int = 0
    ignore_unknown_items: bool = False
    where: Sequence[ConditionSpec] = ()
    diversity: tuple[str, int] | None = None  # (categorical field, max_per_value)
    strategy: Strategy = "average_vector"
    approximate: SearchEffort = NO_EFFORT  # an approximate index's search effort (0: the server's)
    rerank: RerankSpec | None = None  # a cross-encoder stage over the best candidates
    # Rank by similarity + weighted terms of numeric fields; None: the server's default formula
    # (if any), a formula without terms: by similarity alone.
    score_formula: ScoreFormulaSpec | None = None


# Warnings past this many are summed up in one more: a request may hold 1,000 filter values.
MAX_WARNINGS = 10


@dataclass(frozen=True)
class RecommendResult:
    """One user's answer: the items, best first, the history ids skipped as unknown (with
    ignore_unknown_items), and warnings that may explain a surprising answer (a filter value
    no item has) without changing it."""

    items: list[Recommendation]
    unknown_item_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class PreparedProfile:
    """A validated Recommend request: its parts so far, the texts still to embed, its filter."""

    k: int
    parts: list[ProfilePart]
    texts: list[str]
    texts_field: str
    text_weights: list[float]
    row_filter: Selection
    unknown_item_ids: list[str]
    diversity: tuple[str, int] | None = None
    warnings: list[str] = field(default_factory=list)
    formula: ScoreFormula | None = None


@dataclass(frozen=True)
class ProfileWeights:
    """A request's validated weights: of its texts and of its history items, in request order;
    and the score formula in force (the request's or the server's, its text parsed)."""

    texts: list[float]
    items: list[float]
    formula: ScoreFormulaSpec = field(default_factory=ScoreFormulaSpec)


def check_profile_request(
    request: ProfileRequest, limits: Limits, prefix: str = "", default_formula: ScoreFormulaSpec | None = None
) -> ProfileWeights:
    """Raise InvalidArgument (field names prefixed with `prefix`) unless `request`'s k, offset,
    score floor, counts, weights and score formula's form (`default_formula` when it has none)
    are within `limits`; its weights. Pure: no catalog access. The score floor is a cosine in
    [-1, 1], or any finite number under a formula (its score's floor)."""
    check_k(request.k, limits, field=f"{prefix}k")
    if not 0 <= request.offset <= limits.max_offset:
        raise InvalidArgument(
            f"{prefix}offset must be {integer_range(0, limits.max_offset, 'max_offset')}, got {request.offset}",
            field=f"{prefix}offset",
        )
    formula = _formula_in_force(request.score_formula, default_formula, limits, field=f"{prefix}score_formula")
    if not formula.terms:
        check_score_floor(request.min_score, field=f"{prefix}min_score")
    elif request.min_score is not None and not math.isfinite(request.min_score):
        raise InvalidArgument(f"{prefix}min_score must be finite, got {request.min_score}", field=f"{prefix}min_score")
    check_count(len(request.where), limits.max_conditions, field=f"{prefix}where", limit_name="max_conditions")
    for index, condition in enumerate(request.where):
        for name in ("any_of", "none_of"):
            check_count(
                len(getattr(condition, name)),
                limits.max_filter_values,
                field=f"{prefix}where[{index}].{name}",
                limit_name="max_filter_values",
            )
    for name, count, limit_name in (
        ("items", len(request.items), "max_history_items"),
        ("exclude_ids", len(request.exclude_ids), "max_exclude_ids"),
        ("filter_values", len(request.filter_values), "max_filter_values"),
    ):
        check_count(count, getattr(limits, limit_name), field=f"{prefix}{name}", limit_name=limit_name)
    text_weights = [
        check_weight(weight, field=f"{prefix}texts[{i}].weight", negative=True)
        for i, (_, weight) in enumerate(request.texts)
    ]
    item_weights = [
        check_weight(weight, field=f"{prefix}items[{i}].weight", negative=True)
        for i, (_, weight) in enumerate(request.items)
    ]
    return ProfileWeights(text_weights, item_weights, formula)


def _formula_in_force(
    requested: ScoreFormulaSpec | None, default: ScoreFormulaSpec | None, limits: Limits, *, field: str
) -> ScoreFormulaSpec:
    """The formula that ranks a request, its text parsed into terms; InvalidArgument naming
    `field` for too many terms or both forms."""
    spec = requested if requested is not None else (default or ScoreFormulaSpec())
    if spec.expression and spec.terms:
        raise InvalidArgument(f"{field}: give terms or expression, not both", field=field)
    if spec.expression:
        spec = parse_formula(spec.expression, field=f"{field}.expression")
    check_count(len(spec.terms), limits.max_score_terms, field=f"{field}.terms", limit_name="max_score_terms")
    return spec


def gather_profile(
    items: ItemStore,
    request: ProfileRequest,
    weights: ProfileWeights,
    dim: int,
    prefix: str = "",
    deadline: float | None = None,
    now: float | None = None,
) -> PreparedProfile:
    """Every part of `request`'s profile but the texts (embedded for all users together), with
    the selection of items it may return: the user vector, the history items' vectors from
    `items`, exclusions, filter values, conditions and diversity checked against the catalog.
    The score formula in force is checked against the catalog's fields, "now" resolved to `now`.
    Raises InvalidArgument or NotFound naming the field (prefixed with `prefix`)."""
    parts, history = _vector_parts(items, request, weights.items, dim, prefix, deadline)
    item_ids = [item_id for item_id, _ in request.items]
    if not parts and not request.texts:
        combine_profile(parts)  # raises the "profile is empty" error before any text is embedded
    row_filter = items.selection(
        history if request.exclude_history else replace(history, handle=None),
        request.exclude_ids,
        request.filter_values,
        field=f"{prefix}filter_values",
        conditions=request.where,
        conditions_field=f"{prefix}where",
        effort=request.approximate,
        effort_field=f"{prefix}approximate",
    )
    warnings = items.unmatched_values(
        request.filter_values, request.where, field=f"{prefix}filter_values", conditions_field=f"{prefix}where"
    )
    if len(warnings) > MAX_WARNINGS:
        warnings[MAX_WARNINGS - 1 :] = [f"and {len(warnings) - MAX_WARNINGS + 1} more values no item has"]
    diversity = _checked_diversity(items, request, prefix)
    formula = check_formula(
        weights.formula,
        items.describe().fields,
        max_terms=len(weights.formula.terms),
        field=f"{prefix}score_formula",
        now=now,
    )
    if formula is not None:
        items.prepare_formula(formula, field=f"{prefix}score_formula")
    texts = [text for text, _ in request.texts]
    unknown_ids = [item_ids[index] for index in history.unknown_positions]
    return PreparedProfile(
        request.k,
        parts,
        texts,
        f"{prefix}texts",
        weights.texts,
        row_filter,
        unknown_ids,
        diversity,
        warnings=warnings,
        formula=formula,
    )


def _vector_parts(
    items: ItemStore,
    request: ProfileRequest,
    item_weights: Sequence[float],
    dim: int,
    prefix: str,
    deadline: float | None,
) -> tuple[list[ProfilePart], History]:
    """The profile's user vector and history items' vectors (looked up in `items`), and the
    history itself (for excluding it and reporting the unknown ids)."""
    parts: list[ProfilePart] = []
    if len(request.user_vector):
        vector = check_vector(request.user_vector, dim, field=f"{prefix}user_vector")
        weight = check_weight(request.user_vector_weight, field=f"{prefix}user_vector_weight")
        parts.append(ProfilePart(vector, weight, "user_vector"))
    item_ids = [item_id for item_id, _ in request.items]
    history = items.history(
        item_ids, field=f"{prefix}items", ignore_unknown=request.ignore_unknown_items, deadline=deadline
    )
    skipped = set(history.unknown_positions)
    known = [index for index in range(len(item_ids)) if index not in skipped]
    parts.extend(
        ProfilePart(vector, item_weights[index], "item", index, item_ids[index])
        for index, vector in zip(known, history.vectors, strict=True)
    )
    return parts, history


def _checked_diversity(items: ItemStore, request: ProfileRequest, prefix: str) -> tuple[str, int] | None:
    """The request's diversity (field, max per value), checked against the catalog's fields."""
    if request.diversity is None:
        return None
    name, limit = request.diversity
    items.check_categorical(name, field=f"{prefix}diversity.field")
    if limit < 1:
        raise InvalidArgument(
            f"{prefix}diversity.max_per_value must be at least 1, got {limit}", field=f"{prefix}diversity.max_per_value"
        )
    return (name, limit)


class Recommender:
    """Recommend and RecommendBatch over an embedder (for the profiles' texts) and the search
    batcher; every call names the item store snapshot it runs on."""

    def __init__(
        self,
        embedder: Embedder,
        search_batcher: MicroBatcher[SearchItem, SearchResult],
        limits: Limits,
        cpu: CpuPool,
        dim: int,
        reranker_for: Callable[[str], Reranker] | None = None,
        default_formula: ScoreFormulaSpec | None = None,
    ) -> None:
        """`cpu` runs the catalog id look-ups off the loop; `dim` is the model's;
        `reranker_for(model)` resolves a rerank stage's reranker (None: none served);
        `default_formula` ranks the requests that bring none (None: similarity)."""
        self.default_formula = default_formula
        self.embedder = embedder
        self.search_batcher = search_batcher
        self.limits = limits
        self.cpu = cpu
        self.dim = dim
        self.reranker_for = reranker_for

    async def recommend(self, items: ItemStore, request: ProfileRequest, *, timeout: float | None) -> RecommendResult:
        """Top-k items for the profile of `request`, best first (exact, ties by catalog order),
        after `offset` and at least `min_score`.

        Raises InvalidArgument on bad fields, NotFound on
        unknown history ids (unless ignore_unknown_items).
        """
        return (await self._recommend_each(items, [request], timeout=timeout, prefix=""))[0]

    async def recommend_many(
        self, items: ItemStore, requests: Sequence[ProfileRequest], *, timeout: float | None
    ) -> list[RecommendResult]:
        """`recommend` for several users with one pass over the item matrix; results in request
        order. Field names in errors are prefixed with users[i]."""
        if not requests:
            raise InvalidArgument(
                f"users is empty; send 1 to max_batch_users={self.limits.max_batch_users} users", field="users"
            )
        check_count(len(requests), self.limits.max_batch_users, field="users", limit_name="max_batch_users")
        return await self._recommend_each(items, requests, timeout=timeout, prefix="users[{}].")

    async def _recommend_each(
        self, items: ItemStore, requests: Sequence[ProfileRequest], *, timeout: float | None, prefix: str
    ) -> list[RecommendResult]:
        self.search_batcher.check_admission(len(requests))
        deadline = None if timeout is None else time.monotonic() + timeout
        stages = self._checked_stages(requests, prefix)
        # Id look-ups read the memory-mapped catalog (page faults, hashing): never on the loop.
        with span("embedrec.prepare", users=len(requests)):
            prepared = await self.cpu.run_unless_small(
                not any(request.items or request.exclude_ids for request in requests),
                self._prepare_all,
                items,
                requests,
                prefix,
                deadline,
            )
        await self._embed_texts(prepared, timeout)
        searches = [
            SearchItem(
                items,
                one.parts,
                one.row_filter,
                one.k if stage is None else stage.candidates,
                request.explain,
                request.min_score,
                request.offset if stage is None else 0,
                one.diversity,
                request.strategy,
                deadline,
                one.formula,
            )
            for one, request, stage in zip(prepared, requests, stages, strict=True)
        ]
        results: list[list[Recommendation]] = []
        for result in await self.search_batcher.submit(searches, timeout=timeout):
            if isinstance(result, EmbedrecError):
                raise result
            results.append(result)
        ordered = await asyncio.gather(
            *(
                self._second_stage(items, stage, request, result, deadline, prefix.format(index))
                for index, (stage, request, result) in enumerate(zip(stages, requests, results, strict=True))
            )
        )
        return [
            RecommendResult(found, one.unknown_item_ids, one.warnings)
            for found, one in zip(ordered, prepared, strict=True)
        ]

    def _checked_stages(self, requests: Sequence[ProfileRequest], prefix: str) -> list[RerankStage | None]:
        """Each request's rerank stage, checked (None: the request has none)."""
        return [
            checked_stage(
                request.rerank,
                k=request.k,
                offset=request.offset,
                texts=request.texts,
                limits=self.limits,
                reranker_for=self.reranker_for,
                prefix=prefix.format(index),
            )
            if request.rerank is not None
            else None
            for index, request in enumerate(requests)
        ]

    async def _embed_texts(self, prepared: Sequence[PreparedProfile], timeout: float | None) -> None:
        """Add each profile's text parts, every user's texts in one submission: they share
        inference batches."""
        with_texts = [one for one in prepared if one.texts]
        embedded = await self.embedder.embed_queries(
            [(one.texts, one.texts_field) for one in with_texts], timeout=timeout
        )
        for one, vectors in zip(with_texts, embedded, strict=True):
            one.parts.extend(
                ProfilePart(vector, weight, "text", index)
                for index, (vector, weight) in enumerate(zip(vectors, one.text_weights, strict=True))
            )

    async def _second_stage(
        self,
        items: ItemStore,
        stage: RerankStage | None,
        request: ProfileRequest,
        found: list[Recommendation],
        deadline: float | None,
        prefix: str,
    ) -> list[Recommendation]:
        if stage is None:
            return found
        with span("embedrec.rerank_stage", candidates=len(found)):
            return await reranked(
                stage,
                items,
                found,
                k=request.k,
                offset=request.offset,
                deadline=deadline,
                read_texts=self.cpu.run,
                field=f"{prefix}rerank",
            )

    def _prepare_all(
        self, items: ItemStore, requests: Sequence[ProfileRequest], prefix: str, deadline: float | None
    ) -> list[PreparedProfile]:
        prepared = []
        now = float(math.floor(time.time()))  # one "now" for every user of the call
        for index, request in enumerate(requests):
            field_prefix = prefix.format(index)
            weights = check_profile_request(request, self.limits, field_prefix, self.default_formula)
            prepared.append(gather_profile(items, request, weights, self.dim, field_prefix, deadline, now))
        return prepared
