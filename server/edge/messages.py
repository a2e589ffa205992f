"""The embedrec.v1 operations on protobuf messages: request message in, core call, response out.

Transport-free beyond protobuf: the gRPC servicer and the HTTP/JSON routes (which parse the
proto's JSON mapping into the same messages) both call these, so every transport has the same
semantics, limits and errors. Responses are built without per-value Python work where it
matters: vectors go out as packed float bytes (`_packed_floats`), and Recommend responses past
INLINE_RESPONSE_MAX_ITEMS items are built in the CPU pool, off the event loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.message import DecodeError, Message

from embedrec.server.batching.offload import INLINE_PARSE_MAX_BYTES, INLINE_RESPONSE_MAX_ITEMS
from embedrec.server.catalog.fields import ConditionSpec
from embedrec.server.catalog.live import ItemUpsert
from embedrec.server.catalog.recommendation import ProfileRequest, RecommendResult
from embedrec.server.catalog.rerank_stage import RerankSpec
from embedrec.server.catalog.score_formula import ScoreFormulaSpec, ScoreTermSpec
from embedrec.server.catalog.search import Strategy
from embedrec.server.catalog.store import SearchEffort
from embedrec.server.edge.request_limits import LimitTable, limits_of, too_many
from embedrec.server.edge.wire_limits import check_wire
from embedrec.server.errors import InvalidArgument
from embedrec.server.inference.embedding import EmbedResult
from embedrec.server.inference.pooling import FloatArray
from embedrec.server.inference.quantization import CodeType, quantized
from embedrec.server.manifest import PoolingName
from embedrec.server.service import EmbeddingService
from embedrec.v1 import embedrec_pb2 as pb

POOLING_FROM_PROTO: dict[int, PoolingName | None] = {
    pb.POOLING_UNSPECIFIED: None,
    pb.POOLING_MEAN: "mean",
    pb.POOLING_CLS: "cls",
}
POOLING_TO_PROTO = {"mean": pb.POOLING_MEAN, "cls": pb.POOLING_CLS}
STRATEGY_FROM_PROTO: dict[int, Strategy] = {
    pb.STRATEGY_UNSPECIFIED: "average_vector",
    pb.STRATEGY_AVERAGE_VECTOR: "average_vector",
    pb.STRATEGY_BEST_SCORE: "best_score",
}
SCORE_FUNCTION_FROM_PROTO = {
    pb.SCORE_FUNCTION_LOG1P: "log1p",
    pb.SCORE_FUNCTION_VALUE: "value",
    pb.SCORE_FUNCTION_GAUSS: "gauss",
    pb.SCORE_FUNCTION_EXP: "exp",
    pb.SCORE_FUNCTION_LINEAR: "linear",
}
PART_TO_PROTO = {"user_vector": pb.PROFILE_PART_USER_VECTOR, "text": pb.PROFILE_PART_TEXT, "item": pb.PROFILE_PART_ITEM}
CODE_TYPE_FROM_PROTO: dict[int, CodeType] = {
    pb.EMBEDDING_TYPE_INT8: "int8",
    pb.EMBEDDING_TYPE_UINT8: "uint8",
    pb.EMBEDDING_TYPE_BINARY: "binary",
    pb.EMBEDDING_TYPE_UBINARY: "ubinary",
}
FLOAT_TYPES = (pb.EMBEDDING_TYPE_UNSPECIFIED, pb.EMBEDDING_TYPE_FLOAT)
# Echo little: the unknown history ids a Recommend response lists (the count says how many in all).
MAX_ECHOED_IDS = 32
MAX_ECHOED_ID_BYTES = 16 * 1024
EMBED_VALUES_FIELD = pb.EmbedResponse.DESCRIPTOR.fields_by_name["values"].number
SIMILARITY_SCORES_FIELD = pb.SimilarityResponse.DESCRIPTOR.fields_by_name["scores"].number


async def decode(service: EmbeddingService, data: bytes, message_class: type[Message]) -> Any:
    """`data` decoded as `message_class` once its count limits hold on the wire; in the CPU pool
    past INLINE_PARSE_MAX_BYTES. Raises InvalidArgument naming the field past its limit, or
    saying why the bytes are not such a message."""
    return await service.cpu.run_unless_small(
        len(data) <= INLINE_PARSE_MAX_BYTES, _decode, data, message_class, limits_of(service)
    )


def _decode(data: bytes, message_class: type[Message], table: LimitTable) -> Message:
    check_wire(data, message_class.DESCRIPTOR, table)
    try:
        return message_class.FromString(data)
    except (DecodeError, ValueError) as error:
        reason = str(error).split(":")[-1].strip()
        raise InvalidArgument(f"request is not a valid {message_class.DESCRIPTOR.name}: {reason}") from None


async def embed(service: EmbeddingService, request: pb.EmbedRequest, timeout: float | None) -> pb.EmbedResponse:
    """Embed: one vector per text, in request order (float32 values, or codes)."""
    code_type = embedding_code_type(request.embedding_type)
    result = await embed_result(service, request, timeout)
    response = pb.EmbedResponse(dim=result.vectors.shape[1], token_counts=result.token_counts)
    if code_type is None:
        response.MergeFromString(_packed_floats(EMBED_VALUES_FIELD, result.vectors))
    else:
        codes = quantized(result.vectors, code_type)
        response.codes, response.code_bytes = codes.tobytes(), codes.shape[1]
    return response


def embedding_code_type(value: int) -> CodeType | None:
    """The code type EmbedRequest.embedding_type asks for (None: float32); InvalidArgument for
    an unknown value."""
    if value in FLOAT_TYPES:
        return None
    if value not in CODE_TYPE_FROM_PROTO:
        known = ", ".join(pb.EmbeddingType.keys())
        raise InvalidArgument(f"embedding_type has unknown value {value}; use one of {known}", field="embedding_type")
    return CODE_TYPE_FROM_PROTO[value]


async def embed_result(service: EmbeddingService, request: pb.EmbedRequest, timeout: float | None) -> EmbedResult:
    """Embed's result in core terms (vectors as numpy), for edges that write their own format."""
    return await service.models.embedder(request.model).embed(
        list(request.texts),
        normalize=_optional_bool(request, "normalize"),
        truncate=_optional_bool(request, "truncate"),
        pooling=_pooling(request.pooling),
        prompt_name=request.prompt_name if request.HasField("prompt_name") else None,
        dimensions=request.dimensions if request.HasField("dimensions") else None,
        timeout=timeout,
    )


async def similarity(
    service: EmbeddingService, request: pb.SimilarityRequest, timeout: float | None
) -> pb.SimilarityResponse:
    """Similarity: a query against candidates, or pairs."""
    response = pb.SimilarityResponse()
    response.MergeFromString(
        _packed_floats(SIMILARITY_SCORES_FIELD, await similarity_scores(service, request, timeout))
    )
    return response


async def similarity_scores(
    service: EmbeddingService, request: pb.SimilarityRequest, timeout: float | None
) -> FloatArray:
    """Similarity's scores in core terms (numpy), for edges that write their own format."""
    has_query_form = bool(request.query or request.candidates)
    if has_query_form and request.pairs:
        raise InvalidArgument("give either query with candidates, or pairs, not both")
    embedder = service.models.embedder(request.model)
    if has_query_form:
        scores = await embedder.similarity_to_query(request.query, list(request.candidates), timeout=timeout)
    else:
        pairs = [(pair.a, pair.b) for pair in request.pairs]
        scores = await embedder.similarity_of_pairs(pairs, timeout=timeout)
    return scores


async def rerank(service: EmbeddingService, request: pb.RerankRequest, timeout: float | None) -> pb.RerankResponse:
    """Rerank: the top_n documents by the reranker's score, best first."""
    reranker = service.models.reranker(request.model)
    result = await reranker.rerank(request.query, list(request.documents), top_n=request.top_n, timeout=timeout)
    documents = request.documents
    return pb.RerankResponse(
        results=[
            pb.RerankResult(
                index=hit.index,
                relevance_score=hit.score,
                document=documents[hit.index] if request.return_documents else "",
            )
            for hit in result.hits
        ],
        model=reranker.name,
        tokens=result.tokens,
    )


async def recommend(
    service: EmbeddingService, request: pb.RecommendRequest, timeout: float | None
) -> pb.RecommendResponse:
    """Recommend: top-k items for one profile; flagged when the index was loading (before or
    after the search)."""
    loading = service.index_loading()
    found = await service.recommend(profile_request(request), timeout=timeout)
    response = await service.cpu.run_unless_small(
        len(found.items) <= INLINE_RESPONSE_MAX_ITEMS, _recommend_response, found
    )
    response.index_loading = loading or service.index_loading()
    return response


async def recommend_batch(
    service: EmbeddingService, request: pb.RecommendBatchRequest, timeout: float | None
) -> pb.RecommendBatchResponse:
    """RecommendBatch: Recommend for several users in one pass."""
    users = limits_of(service).counts[("RecommendBatchRequest", "users")]
    if len(request.users) > users.limit:  # before any per-user work
        raise too_many("users", users, len(request.users))
    profiles = [profile_request(user) for user in request.users]
    loading = service.index_loading()
    found = await service.recommend_many(profiles, timeout=timeout)
    response = await service.cpu.run_unless_small(
        sum(len(one.items) for one in found) <= INLINE_RESPONSE_MAX_ITEMS, _recommend_batch_response, found
    )
    if loading or service.index_loading():
        for result in response.results:
            result.index_loading = True
    return response


async def info(service: EmbeddingService, request: pb.InfoRequest, timeout: float | None) -> pb.InfoResponse:
    """Info: the model, items and limits in force."""
    fields = service.info().fields()
    fields["pooling"] = POOLING_TO_PROTO[fields["pooling"]]
    return pb.InfoResponse(**fields)


def profile_request(request: pb.RecommendRequest) -> ProfileRequest:
    """A RecommendRequest in core terms (unset optional fields take their documented defaults)."""
    return ProfileRequest(
        k=request.k,
        user_vector=np.asarray(request.user_vector, dtype=np.float32),
        user_vector_weight=request.user_vector_weight if request.HasField("user_vector_weight") else 1.0,
        texts=[(t.text, t.weight if t.HasField("weight") else 1.0) for t in request.texts],
        items=[(i.id, i.weight if i.HasField("weight") else 1.0) for i in request.items],
        exclude_ids=list(request.exclude_ids),
        exclude_history=request.exclude_history if request.HasField("exclude_history") else True,
        filter_values=list(request.filter_values),
        explain=request.explain,
        min_score=request.min_score if request.HasField("min_score") else None,
        offset=request.offset,
        ignore_unknown_items=request.ignore_unknown_items,
        where=[_condition(condition) for condition in request.where],
        diversity=(request.diversity.field, request.diversity.max_per_value) if request.HasField("diversity") else None,
        strategy=_strategy(request.strategy),
        approximate=SearchEffort(request.approximate.ef, request.approximate.nprobe),
        rerank=(
            RerankSpec(request.rerank.candidates, request.rerank.model, request.rerank.query)
            if request.HasField("rerank")
            else None
        ),
        score_formula=score_formula(request.score_formula) if request.HasField("score_formula") else None,
    )


def score_formula(formula: pb.ScoreFormula) -> ScoreFormulaSpec:
    """A ScoreFormula in core terms (unset optional parameters stay None: their defaults)."""
    return ScoreFormulaSpec(tuple(_score_term(term) for term in formula.terms), formula.expression)


def _score_term(term: pb.ScoreTerm) -> ScoreTermSpec:
    def number(name: str) -> float | None:
        return float(getattr(term, name)) if term.HasField(name) else None

    return ScoreTermSpec(
        term.field,
        SCORE_FUNCTION_FROM_PROTO.get(term.function, f"ScoreFunction {term.function}"),
        weight=number("weight"),
        origin=number("origin"),
        origin_now=term.origin_now,
        scale=number("scale"),
        offset=number("offset"),
        decay=number("decay"),
        missing=number("missing"),
    )


def item_upsert(item: pb.ItemUpsert) -> ItemUpsert:
    """UpsertItems' item in core terms."""
    content = item.WhichOneof("content")
    categorical: dict[str, list[str]] = {}
    numeric: dict[str, float] = {}
    for name, value in item.fields.items():
        kind = value.WhichOneof("value")
        if kind == "number":
            numeric[name] = value.number
        elif kind == "values":
            categorical[name] = list(value.values.values)
        # neither set: the field has no value, as when it is left out
    return ItemUpsert(
        item.id,
        text=item.text if content == "text" else None,
        vector=list(item.vector.values) if content == "vector" else None,
        categorical=categorical,
        numeric=numeric,
    )


def _condition(condition: pb.Condition) -> ConditionSpec:
    def bound(name: str) -> float | None:
        return getattr(condition, name) if condition.HasField(name) else None

    return ConditionSpec(
        condition.field,
        list(condition.any_of),
        list(condition.none_of),
        bound("gte"),
        bound("gt"),
        bound("lte"),
        bound("lt"),
    )


def _strategy(value: int) -> Strategy:
    if value not in STRATEGY_FROM_PROTO:
        raise InvalidArgument(
            f"strategy has unknown value {value}; use STRATEGY_AVERAGE_VECTOR or STRATEGY_BEST_SCORE", field="strategy"
        )
    return STRATEGY_FROM_PROTO[value]


def _optional_bool(message: object, field: str) -> bool | None:
    return bool(getattr(message, field)) if message.HasField(field) else None  # type: ignore[attr-defined]


def _pooling(value: int) -> PoolingName | None:
    if value not in POOLING_FROM_PROTO:
        raise InvalidArgument(f"pooling has unknown value {value}; use POOLING_MEAN or POOLING_CLS", field="pooling")
    return POOLING_FROM_PROTO[value]


def _recommend_batch_response(found: list[RecommendResult]) -> pb.RecommendBatchResponse:
    return pb.RecommendBatchResponse(results=[_recommend_response(one) for one in found])


def _recommend_response(found: RecommendResult) -> pb.RecommendResponse:
    items = []
    for recommendation in found.items:
        item = pb.ScoredItem(id=recommendation.item_id, score=recommendation.score)
        if recommendation.rerank_score is not None:
            item.rerank_score = recommendation.rerank_score
        if recommendation.similarity is not None:
            item.similarity = recommendation.similarity
            item.score_terms.extend(recommendation.score_terms)
        contribution = recommendation.contribution
        if contribution is not None:
            item.top_contribution.CopyFrom(
                pb.Contribution(
                    part=PART_TO_PROTO[contribution.part],
                    index=contribution.index,
                    score=contribution.score,
                )
            )
            if contribution.item_id is not None:
                item.top_contribution.item_id = contribution.item_id
        items.append(item)
    unknown = found.unknown_item_ids
    return pb.RecommendResponse(
        items=items, unknown_item_ids=echoed_ids(unknown), unknown_item_count=len(unknown), warnings=found.warnings
    )


def echoed_ids(ids: list[str]) -> list[str]:
    """The first of `ids` a response may echo: at most MAX_ECHOED_IDS of them, together at most
    MAX_ECHOED_ID_BYTES characters (a long id past the budget ends the list)."""
    echoed, size = [], 0
    for item_id in ids[:MAX_ECHOED_IDS]:
        size += len(item_id)
        if size > MAX_ECHOED_ID_BYTES:
            break
        echoed.append(item_id)
    return echoed


def _packed_floats(field_number: int, values: FloatArray) -> bytes:
    """Wire bytes of a packed `repeated float` field holding `values` (row-major), for
    MergeFromString. Setting the field from a numpy array converts one Python float per value:
    147 us for one 384-d vector, 37 ms for 256 of them, on the event loop; these bytes cost 4 us
    and 64 us (BENCHMARKS.md, "Event-loop isolation")."""
    payload = np.ascontiguousarray(values, dtype="<f4").tobytes()
    if not payload:
        return b""
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    """Protocol buffers' base-128 varint encoding of a non-negative int."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
