"""The transport-free core: Embed, Similarity, Recommend and Info on plain Python and numpy.

`EmbeddingService` validates requests against `Limits`, tokenises at admission (so a too-long
text with truncate=false is refused before it is queued), sends token sequences through the
micro-batcher, and ranks items with the item index. The gRPC servicer is a thin adapter on it.

Nothing CPU-bound runs on the event loop: tokenising (past a measured cut-off, see
`embedrec.server.batching.offload`) and every id look-up in the memory-mapped catalog run in the CPU pool;
combining profiles, every search (whatever the catalog size) and explanations run in the search
batcher's thread, where concurrent searches share one pass over the matrix.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import socket
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import onnxruntime

from embedrec import __version__
from embedrec.server.batching.batcher import BatchPolicy, MicroBatcher
from embedrec.server.batching.offload import INLINE_TOKENIZE_MAX_CHARS, CpuPool
from embedrec.server.catalog.fields import ConditionSpec
from embedrec.server.catalog.milvus_schema import DeleteResult, ItemRow, UpsertResult, check_item_fields, check_item_id
from embedrec.server.catalog.milvus_store import MilvusItems
from embedrec.server.catalog.profiles import BestScore, Profile, ProfilePart, combine_profile
from embedrec.server.catalog.store import ItemStore, Query, Recommendation, Selection, check_distinct
from embedrec.server.edge.request_limits import request_limits
from embedrec.server.errors import EmbedrecError, FailedPrecondition, InvalidArgument
from embedrec.server.inference.encoder import InferenceOutput, OnnxEncoder
from embedrec.server.inference.pooling import FloatArray, l2_normalize
from embedrec.server.inference.prompts import prompt_text, query_prompt_name, with_prompt
from embedrec.server.inference.tokenization import TokenizedText
from embedrec.server.limits import (
    Limits,
    check_count,
    check_k,
    check_score_floor,
    check_texts,
    check_vector,
    check_weight,
)
from embedrec.server.manifest import PoolingName
from embedrec.server.observability.tracing import batch_tracer, span
from embedrec.server.observability.tracing import enabled as tracing_enabled

BatchItem = tuple[TokenizedText, PoolingName]
NO_ITEMS = "this server runs without items (start it with --items-dir, or --items-store milvus)"
Strategy = Literal["average_vector", "best_score"]


@dataclass(frozen=True)
class EmbedResult:
    """Vectors (n, dim) float32 in request order, and the tokens each text used."""

    vectors: FloatArray
    token_counts: list[int]


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


@dataclass(frozen=True)
class ItemUpsert:
    """One item to insert or replace live: its id, a text (embedded with the items' document
    prompt) or a vector (normalised), and its field values by name (categorical: strings;
    numeric: one number)."""

    item_id: str
    text: str | None = None
    vector: Sequence[float] | None = None
    categorical: Mapping[str, Sequence[str]] = field(default_factory=dict)
    numeric: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RecommendResult:
    """One user's answer: the items, best first, and the history ids skipped as unknown (with
    ignore_unknown_items)."""

    items: list[Recommendation]
    unknown_item_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReloadResult:
    """What a hot reload of the items did."""

    items_sha256: str
    item_count: int
    previous_items_sha256: str
    changed: bool


@dataclass(frozen=True)
class ServiceInfo:
    """What Info reports. Field names are InfoResponse's (the proto is the one field list);
    `fields()` flattens the limits into it, and a test checks the names against the proto."""

    model_name: str
    dim: int
    max_length: int
    pooling: PoolingName
    normalize: bool
    provider: str
    model_sha256: str
    item_count: int
    items_sha256: str
    server_version: str
    runtime_version: str
    server_instance: str
    max_batch_size: int
    max_batch_tokens: int
    max_queued_texts: int
    limits: Limits = field(default_factory=Limits)
    items_filter_field: str = ""
    instances: int = 1
    tuning: str = "none"
    sessions: int = 1
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str = ""
    query_prompt_name: str = ""
    items_prompt_name: str = ""
    hidden_item_count: int = 0
    items_fields: dict[str, str] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """Every value by its InfoResponse field name, the limits flattened in."""
        values = {one.name: getattr(self, one.name) for one in dataclasses.fields(self) if one.name != "limits"}
        values.update(dataclasses.asdict(self.limits))
        return values


def create_batcher(
    encoder: OnnxEncoder, policy: BatchPolicy, *, instances: int = 1, **hooks: Any
) -> MicroBatcher[BatchItem, FloatArray]:
    """A micro-batcher running `encoder` on (tokens, pooling) items: padding and inference in the
    thread of whichever of the `instances` is free (instance i runs on session i modulo the
    encoder's sessions), pooling in the finishing thread (overlapping the
    next batch's inference)."""

    def infer_on(instance: int, items: list[BatchItem]) -> InferenceOutput:
        return encoder.infer([tokens for tokens, _ in items], instance % encoder.session_count)

    def finish(items: list[BatchItem], output: InferenceOutput) -> Sequence[FloatArray]:
        return list(encoder.pool_batch(output, [pooling for _, pooling in items]))

    return MicroBatcher(
        [functools.partial(infer_on, instance) for instance in range(instances)],
        finish,
        tracer=batch_tracer("inference", finish_span="embedrec.pooling"),
        policy=policy,
        cost=lambda item: item[0].length,
        name="inference",
        unit="texts",
        queue_limit_name="max_queued_texts",
        **hooks,
    )


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
            results[position] = _explained(search.items, profiles[position], chosen) if search.explain else chosen
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
                chosen = _explained(items, profiles[position], chosen)
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
        )
    return Query(profile.vector, search.row_filter, search.min_score, None, search.deadline)


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


def _explained(items: ItemStore, profile: Profile | BestScore, chosen: list[Recommendation]) -> list[Recommendation]:
    """`chosen` with each item's top contribution filled in."""
    contributions = profile.top_contributions(items.vectors_of(chosen))
    return [replace(r, contribution=c) for r, c in zip(chosen, contributions, strict=True)]


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


@dataclass
class _PreparedProfile:
    """A validated Recommend request: its parts so far, the texts still to embed, its filter."""

    k: int
    parts: list[ProfilePart]
    texts: list[str]
    texts_field: str
    text_weights: list[float]
    row_filter: Selection
    unknown_item_ids: list[str]
    diversity: tuple[str, int] | None = None


class EmbeddingService:
    """Embedding and recommendation use cases over an encoder, a batcher and optional items."""

    def __init__(
        self,
        encoder: OnnxEncoder,
        batcher: MicroBatcher[BatchItem, FloatArray],
        items: ItemStore | None,
        limits: Limits,
        search_batcher: MicroBatcher[SearchItem, SearchResult],
        cpu: CpuPool,
        *,
        tuning: str = "none",
    ) -> None:
        """`cpu` runs the request-sized CPU work (tokenising, catalog id look-ups) off the loop."""
        self.encoder = encoder
        self.batcher = batcher
        self.items = items
        self.limits = limits
        self.search_batcher = search_batcher
        self.cpu = cpu
        self.tuning = tuning
        self.request_limits = request_limits(limits, encoder.dim)

    async def embed(
        self,
        texts: Sequence[str],
        *,
        normalize: bool | None = None,
        truncate: bool | None = None,
        pooling: PoolingName | None = None,
        prompt_name: str | None = None,
        dimensions: int | None = None,
        timeout: float | None = None,
        field_name: str = "texts",
    ) -> EmbedResult:
        """Embed `texts` (validated against the limits); vectors in request order.

        `prompt_name`: one of the model's prompts, prepended to each text (None: the model's
        default, "": none). `dimensions`: keep the first `dimensions` values of each vector
        (Matryoshka truncation), normalised after truncating. Raises InvalidArgument,
        Overloaded, DeadlineExpired or Unavailable.
        """
        manifest = self.encoder.manifest
        with span("embedrec.admission", texts=len(texts)):
            check_texts(texts, self.limits, field=field_name)
            prompt = prompt_text(manifest, prompt_name)
            if dimensions is not None and not 1 <= dimensions <= manifest.dim:
                raise InvalidArgument(f"dimensions must be 1 to the model's dimension {manifest.dim}, got {dimensions}")
            self.batcher.check_admission(len(texts))  # refuse before tokenising under overload
        (tokenized,) = await self._tokenize(
            [(with_prompt(prompt, list(texts)), field_name)], truncate=True if truncate is None else truncate
        )
        vectors = await self._run(tokenized, pooling or manifest.pooling, timeout)
        if dimensions is not None:
            vectors = vectors[:, :dimensions]
        if manifest.normalize if normalize is None else normalize:
            vectors = l2_normalize(vectors)
        return EmbedResult(np.ascontiguousarray(vectors), [tokens.length for tokens in tokenized])

    async def _run(self, tokenized: Sequence[TokenizedText], pooling: PoolingName, timeout: float | None) -> FloatArray:
        """Tokenised texts through the batcher: float32 (n, dim), not normalised."""
        pooled = await self.batcher.submit([(tokens, pooling) for tokens in tokenized], timeout=timeout)
        return np.stack(pooled).astype(np.float32, copy=False)

    async def _embed_groups(
        self, groups: Sequence[tuple[Sequence[str], str]], *, timeout: float | None
    ) -> list[FloatArray]:
        """Unit vectors for several groups of (texts, field name), each group validated on its own
        against the limits, all submitted to the batcher at once (so they share batches). The
        texts are queries: embedded with the model's query prompt."""
        with span("embedrec.admission", texts=sum(len(texts) for texts, _ in groups)):
            for texts, field_name in groups:
                check_texts(texts, self.limits, field=field_name)
            self.batcher.check_admission(sum(len(texts) for texts, _ in groups))
        prompt = prompt_text(self.encoder.manifest, query_prompt_name(self.encoder.manifest))
        tokenized = await self._tokenize(
            [(with_prompt(prompt, list(texts)), field_name) for texts, field_name in groups], truncate=True
        )
        flat = [tokens for group in tokenized for tokens in group]
        if not flat:
            return []
        vectors = l2_normalize(await self._run(flat, self.encoder.manifest.pooling, timeout))
        bounds = np.cumsum([len(group) for group in tokenized])[:-1]
        return list(np.split(vectors, bounds))

    async def _tokenize(
        self, groups: Sequence[tuple[Sequence[str], str]], *, truncate: bool
    ) -> list[list[TokenizedText]]:
        """Each group of (texts, field name) tokenised: inline when all of them hold at most
        INLINE_TOKENIZE_MAX_CHARS characters (cheaper than the hop), else in the CPU pool."""
        characters = sum(len(text) for texts, _ in groups for text in texts)

        def tokenize_all() -> list[list[TokenizedText]]:
            return [self.encoder.tokenize(texts, truncate=truncate, field=field) for texts, field in groups]

        with span("embedrec.tokenize", characters=characters) as traced:
            tokenized = await self.cpu.run_unless_small(characters <= INLINE_TOKENIZE_MAX_CHARS, tokenize_all)
            if tracing_enabled():
                traced.set(tokens=sum(tokens.length for group in tokenized for tokens in group))
        return tokenized

    async def similarity_to_query(self, query: str, candidates: Sequence[str], *, timeout: float | None) -> FloatArray:
        """Cosine similarity of `query` with each candidate, in candidate order."""
        check_texts([query], self.limits, field="query")
        check_texts(candidates, self.limits, field="candidates", max_count=self.limits.max_texts_per_request - 1)
        vectors = (
            await self.embed([query, *candidates], normalize=True, timeout=timeout, field_name="query and candidates")
        ).vectors
        scores: FloatArray = (vectors[1:] @ vectors[0]).astype(np.float32)
        return scores

    async def similarity_of_pairs(self, pairs: Sequence[tuple[str, str]], *, timeout: float | None) -> FloatArray:
        """Cosine similarity of each (a, b) pair, in pair order."""
        max_pairs = self.limits.max_texts_per_request // 2
        if not pairs:
            raise InvalidArgument(f"give either query with candidates, or 1 to {max_pairs} pairs")
        check_count(len(pairs), max_pairs, field="pairs", limit_name="max_texts_per_request / 2")
        for index, (first, second) in enumerate(pairs):
            check_texts([first], self.limits, field=f"pairs[{index}].a")
            check_texts([second], self.limits, field=f"pairs[{index}].b")
        flat = [text for pair in pairs for text in pair]
        vectors = (await self.embed(flat, normalize=True, timeout=timeout, field_name="pairs")).vectors
        scores: FloatArray = np.sum(vectors[0::2] * vectors[1::2], axis=1).astype(np.float32)
        return scores

    async def recommend(self, request: ProfileRequest, *, timeout: float | None) -> RecommendResult:
        """Top-k items for the profile of `request`, best first (exact, ties by catalog order),
        after `offset` and at least `min_score`.

        Raises FailedPrecondition without items, InvalidArgument on bad fields, NotFound on
        unknown history ids (unless ignore_unknown_items).
        """
        return (await self._recommend_each([request], timeout=timeout, prefix=""))[0]

    async def recommend_many(
        self, requests: Sequence[ProfileRequest], *, timeout: float | None
    ) -> list[RecommendResult]:
        """`recommend` for several users with one pass over the item matrix; results in request
        order. Field names in errors are prefixed with users[i]."""
        if not requests:
            raise InvalidArgument(f"users is empty; send 1 to max_batch_users={self.limits.max_batch_users} users")
        check_count(len(requests), self.limits.max_batch_users, field="users", limit_name="max_batch_users")
        return await self._recommend_each(requests, timeout=timeout, prefix="users[{}].")

    async def _recommend_each(
        self, requests: Sequence[ProfileRequest], *, timeout: float | None, prefix: str
    ) -> list[RecommendResult]:
        items = self.items  # one snapshot: a hot reload during this call does not affect it
        if items is None:
            raise FailedPrecondition(NO_ITEMS)
        self.search_batcher.check_admission(len(requests))
        deadline = None if timeout is None else time.monotonic() + timeout
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
        # Every user's texts in one submission: they share inference batches.
        with_texts = [one for one in prepared if one.texts]
        embedded = await self._embed_groups([(one.texts, one.texts_field) for one in with_texts], timeout=timeout)
        for one, vectors in zip(with_texts, embedded, strict=True):
            one.parts.extend(
                ProfilePart(vector, weight, "text", index)
                for index, (vector, weight) in enumerate(zip(vectors, one.text_weights, strict=True))
            )
        searches = [
            SearchItem(
                items,
                one.parts,
                one.row_filter,
                one.k,
                request.explain,
                request.min_score,
                request.offset,
                one.diversity,
                request.strategy,
                deadline,
            )
            for one, request in zip(prepared, requests, strict=True)
        ]
        results = await self.search_batcher.submit(searches, timeout=timeout)
        answers = []
        for result, one in zip(results, prepared, strict=True):
            if isinstance(result, EmbedrecError):
                raise result
            answers.append(RecommendResult(result, one.unknown_item_ids))
        return answers

    def _prepare_all(
        self, items: ItemStore, requests: Sequence[ProfileRequest], prefix: str, deadline: float | None
    ) -> list[_PreparedProfile]:
        return [self._prepare(items, request, prefix.format(index), deadline) for index, request in enumerate(requests)]

    def _prepare(
        self, items: ItemStore, request: ProfileRequest, prefix: str, deadline: float | None = None
    ) -> _PreparedProfile:
        """Validate `request` (field names prefixed with `prefix`) and gather every profile part
        but the texts, which are embedded for all users together."""
        check_k(request.k, self.limits, field=f"{prefix}k")
        if not 0 <= request.offset <= self.limits.max_offset:
            raise InvalidArgument(
                f"{prefix}offset must be between 0 and max_offset={self.limits.max_offset}, got {request.offset}"
            )
        check_score_floor(request.min_score, field=f"{prefix}min_score")
        check_count(len(request.where), self.limits.max_conditions, field=f"{prefix}where", limit_name="max_conditions")
        for index, condition in enumerate(request.where):
            for name in ("any_of", "none_of"):
                check_count(
                    len(getattr(condition, name)),
                    self.limits.max_filter_values,
                    field=f"{prefix}where[{index}].{name}",
                    limit_name="max_filter_values",
                )
        for name, count, limit_name in (
            ("items", len(request.items), "max_history_items"),
            ("exclude_ids", len(request.exclude_ids), "max_exclude_ids"),
            ("filter_values", len(request.filter_values), "max_filter_values"),
        ):
            check_count(count, getattr(self.limits, limit_name), field=f"{prefix}{name}", limit_name=limit_name)
        text_weights = [
            check_weight(weight, field=f"{prefix}texts[{i}].weight", negative=True)
            for i, (_, weight) in enumerate(request.texts)
        ]
        item_weights = [
            check_weight(weight, field=f"{prefix}items[{i}].weight", negative=True)
            for i, (_, weight) in enumerate(request.items)
        ]
        parts: list[ProfilePart] = []
        if len(request.user_vector):
            vector = check_vector(request.user_vector, self.encoder.dim, field=f"{prefix}user_vector")
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
        if not parts and not request.texts:
            combine_profile(parts)  # raises the "profile is empty" error before any text is embedded
        row_filter = items.selection(
            history if request.exclude_history else replace(history, handle=None),
            request.exclude_ids,
            request.filter_values,
            field=f"{prefix}filter_values",
            conditions=request.where,
            conditions_field=f"{prefix}where",
        )
        diversity = None
        if request.diversity is not None:
            name, limit = request.diversity
            items.check_categorical(name, field=f"{prefix}diversity.field")
            if limit < 1:
                raise InvalidArgument(f"{prefix}diversity.max_per_value must be at least 1, got {limit}")
            diversity = (name, limit)
        texts = [text for text, _ in request.texts]
        unknown_ids = [item_ids[index] for index in history.unknown_positions]
        return _PreparedProfile(
            request.k, parts, texts, f"{prefix}texts", text_weights, row_filter, unknown_ids, diversity
        )

    async def upsert_items(self, upserts: Sequence[ItemUpsert], *, timeout: float | None) -> UpsertResult:
        """Insert or replace `upserts` in the served collection: texts embedded with the served
        model and the items' document prompt, vectors normalised, fields checked against the
        collection's. Raises FailedPrecondition on a store that cannot change live (naming it),
        InvalidArgument naming items[i] on bad input."""
        store = self._live_store("UpsertItems")
        described = store.describe()
        if not upserts:
            raise InvalidArgument(
                f"items is empty; send 1 to max_texts_per_request={self.limits.max_texts_per_request}"
            )
        check_count(len(upserts), self.limits.max_texts_per_request, field="items", limit_name="max_texts_per_request")
        check_distinct([one.item_id for one in upserts], "items")
        vectors: dict[int, FloatArray] = {}
        texts: list[tuple[int, str]] = []
        for index, one in enumerate(upserts):
            name = f"items[{index}]"
            check_item_id(one.item_id, field=f"{name}.id")
            if (one.text is None) == (one.vector is None):
                raise InvalidArgument(f"{name}: give exactly one of text and vector")
            if one.vector is not None:
                vectors[index] = l2_normalize(check_vector(one.vector, described.dim, field=f"{name}.vector")[None, :])[
                    0
                ]
            else:
                assert one.text is not None
                texts.append((index, one.text))
            check_item_fields(one.categorical, one.numeric, described.fields, field=name)
        if texts:
            for index, text in texts:
                check_texts([text], self.limits, field=f"items[{index}].text")
            embedded = await self.embed(
                [text for _, text in texts],
                normalize=True,
                prompt_name=described.prompt_name,
                timeout=timeout,
                field_name="items[].text",
            )
            vectors.update({index: vector for (index, _), vector in zip(texts, embedded.vectors, strict=True)})
        rows = [
            ItemRow(one.item_id, vectors[index], {**{k: list(v) for k, v in one.categorical.items()}, **one.numeric})
            for index, one in enumerate(upserts)
        ]
        deadline = None if timeout is None else time.monotonic() + timeout
        return await asyncio.to_thread(store.upsert, rows, deadline)

    async def delete_items(self, item_ids: Sequence[str], *, timeout: float | None) -> DeleteResult:
        """Remove `item_ids` from the served collection (unknown ids are reported). Raises
        FailedPrecondition on a store that cannot change live, InvalidArgument past
        max_exclude_ids ids or for an empty list."""
        store = self._live_store("DeleteItems")
        if not item_ids:
            raise InvalidArgument(f"ids is empty; send 1 to max_exclude_ids={self.limits.max_exclude_ids} ids")
        check_count(len(item_ids), self.limits.max_exclude_ids, field="ids", limit_name="max_exclude_ids")
        deadline = None if timeout is None else time.monotonic() + timeout
        return await asyncio.to_thread(store.delete, list(item_ids), deadline)

    def _live_store(self, operation: str) -> MilvusItems:
        items = self.items
        if items is None:
            raise FailedPrecondition(NO_ITEMS)
        if not isinstance(items, MilvusItems):
            raise FailedPrecondition(
                f"{operation} needs the milvus item store; this server serves the {items.describe().kind} store "
                "(read-only: rebuild it with embedrec export-items, or serve a Milvus collection with "
                "--items-store milvus)"
            )
        return items

    def replace_items(self, items: ItemStore) -> None:
        """Serve `items` from now on (calls already running finish on the old store). The caller
        checks that `items` belongs to this model."""
        self.items = items

    def info(self) -> ServiceInfo:
        """The model, the provider in use, the item matrix identity and the limits."""
        manifest = self.encoder.manifest
        items = self.items.describe() if self.items is not None else None
        return ServiceInfo(
            model_name=manifest.model_name,
            dim=manifest.dim,
            max_length=manifest.max_length,
            pooling=manifest.pooling,
            normalize=manifest.normalize,
            provider=self.encoder.provider,
            model_sha256=manifest.onnx_sha256,
            item_count=items.item_count if items is not None else 0,
            items_sha256=items.items_sha256 if items is not None else "",
            server_version=__version__,
            runtime_version=onnxruntime.__version__,
            server_instance=f"{socket.gethostname()}:{os.getpid()}",
            max_batch_size=self.batcher.policy.max_batch_size,
            max_batch_tokens=self.batcher.policy.max_batch_cost,
            max_queued_texts=self.batcher.policy.max_queued_items,
            limits=self.limits,
            items_filter_field=items.filter_field if items is not None else "",
            instances=self.batcher.instances,
            sessions=self.encoder.session_count,
            tuning=self.tuning,
            prompts=dict(manifest.prompts),
            default_prompt_name=manifest.default_prompt_name,
            query_prompt_name=query_prompt_name(manifest),
            items_prompt_name=items.prompt_name if items is not None else "",
            hidden_item_count=items.hidden_count if items is not None else 0,
            items_fields=dict(items.fields) if items is not None else {},
        )
