"""The gRPC edge: protobuf in, core calls, protobuf out, and the one error table.

Each handler converts its request to plain Python, calls `EmbeddingService`, and converts the
result back. `_guarded` wraps every handler with the call's life cycle, each step its own piece:
the request id (`_request_id`), admission (`_admission`), the in-flight count
(`ServingState.in_flight_call`), the error table (`_answer`: domain errors become their status
with their message; anything else is INTERNAL with the traceback in the server log and nothing
internal in the reply), and accounting (`_account`: metrics and the access log). Request text
is never logged.

Responses are built without per-value Python work where it matters: vectors go out as packed
float bytes (`_packed_floats`), and Recommend responses past INLINE_RESPONSE_MAX_ITEMS items are
built in the CPU pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import numpy as np

from embedrec.server.errors import EmbedrecError, InvalidArgument
from embedrec.server.handlers import UndecodableRequest
from embedrec.server.items import Recommendation
from embedrec.server.manifest import PoolingName
from embedrec.server.metrics import ServerMetrics
from embedrec.server.offload import INLINE_RESPONSE_MAX_ITEMS
from embedrec.server.pooling import FloatArray
from embedrec.server.service import EmbeddingService, ProfileRequest, ReloadResult
from embedrec.v1 import embedrec_pb2 as pb
from embedrec.v1 import embedrec_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

POOLING_FROM_PROTO: dict[int, PoolingName | None] = {
    pb.POOLING_UNSPECIFIED: None,
    pb.POOLING_MEAN: "mean",
    pb.POOLING_CLS: "cls",
}
POOLING_TO_PROTO = {"mean": pb.POOLING_MEAN, "cls": pb.POOLING_CLS}
REQUEST_ID_KEY = "x-request-id"
EMBED_VALUES_FIELD = pb.EmbedResponse.DESCRIPTOR.fields_by_name["values"].number
SIMILARITY_SCORES_FIELD = pb.SimilarityResponse.DESCRIPTOR.fields_by_name["scores"].number

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[["EmbedRecServicer", Request, grpc.aio.ServicerContext], Awaitable[Response]]


@dataclass
class ServingState:
    """Whether calls are served: `service` is None while starting; `draining` once stopping.

    `calls` counts answered calls by (method, status code name); `metrics`, when set, records
    them for Prometheus; `access_log` logs one line per call (sizes only, never text).
    `in_flight` counts calls being handled; `idle` is set whenever it is zero (drain awaits it).
    """

    service: EmbeddingService | None = None
    draining: bool = False
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    metrics: ServerMetrics | None = None
    access_log: bool = False
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    @contextlib.contextmanager
    def in_flight_call(self) -> Iterator[None]:
        """Count one call as in flight for the duration of the block."""
        self.in_flight += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()


@dataclass(frozen=True)
class _Refusal:
    """The status a call is answered with instead of a response."""

    code: grpc.StatusCode
    message: str


@dataclass(frozen=True)
class _Call:
    """What accounting needs to know of one call."""

    rpc: str
    request_id: str
    request: object
    started: float = field(default_factory=time.perf_counter)


def _guarded(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    rpc = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self: EmbedRecServicer, request: Request, context: grpc.aio.ServicerContext) -> Response:
        call = _Call(rpc, _request_id(context), request)
        context.set_trailing_metadata(((REQUEST_ID_KEY, call.request_id),))
        answered: grpc.StatusCode | None = None  # None while unanswered: the caller went away
        with self.state.in_flight_call():
            try:
                refusal = _admission(self.state, request)
                outcome = refusal if refusal is not None else await _answer(handler(self, request, context), call)
                if not isinstance(outcome, _Refusal):
                    answered = grpc.StatusCode.OK
                    return outcome
                # Counted before the status leaves: a caller reading the metrics next sees this call.
                _account(self.state, call, outcome.code)
                answered = outcome.code
                await context.abort(outcome.code, outcome.message)
                raise AssertionError("unreachable: abort raises")
            finally:
                if answered is None or answered == grpc.StatusCode.OK:
                    _account(self.state, call, answered or grpc.StatusCode.CANCELLED)

    return wrapper


async def _answer(handling: Awaitable[Response], call: _Call) -> Response | _Refusal:
    """The handler's response, or the refusal its error maps to (the one error table)."""
    try:
        return await handling
    except EmbedrecError as error:
        return _Refusal(grpc.StatusCode[error.status], str(error))
    except Exception:  # the boundary: nothing unexpected reaches the caller
        logger.exception("internal error in %s (request id %s)", call.rpc, call.request_id)
        return _Refusal(grpc.StatusCode.INTERNAL, "internal error; the details are in the server log")


def _account(state: ServingState, call: _Call, code: grpc.StatusCode) -> None:
    """Count the answered call (calls, metrics) and write its access-log line when enabled."""
    rpc, request_id = call.rpc, call.request_id
    elapsed = time.perf_counter() - call.started
    state.calls[(rpc, code.name)] += 1
    if state.metrics is not None:
        state.metrics.observe_call(rpc, code.name, elapsed)
    if state.access_log:
        texts, characters = request_size(call.request)
        logger.info(
            "rpc=%s code=%s ms=%.2f texts=%d chars=%d request_id=%s",
            rpc,
            code.name,
            elapsed * 1000,
            texts,
            characters,
            request_id,
            extra={
                "rpc": rpc,
                "code": code.name,
                "ms": round(elapsed * 1000, 3),
                "texts": texts,
                "chars": characters,
                "request_id": request_id,
            },
        )


def request_size(request: object) -> tuple[int, int]:
    """(texts, characters) a request carries: sizes for the access log, never the text itself."""
    if isinstance(request, pb.EmbedRequest):
        texts = list(request.texts)
    elif isinstance(request, pb.SimilarityRequest):
        texts = [request.query, *request.candidates, *(t for pair in request.pairs for t in (pair.a, pair.b))]
        texts = [text for text in texts if text]
    elif isinstance(request, pb.RecommendRequest):
        texts = [entry.text for entry in request.texts]
    elif isinstance(request, pb.RecommendBatchRequest):
        texts = [entry.text for user in request.users for entry in user.texts]
    else:
        texts = []
    return len(texts), sum(len(text) for text in texts)


def _request_id(context: grpc.aio.ServicerContext) -> str:
    """The caller's x-request-id (first 64 characters), or a new random one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and value:
            return value[:64]
    return uuid.uuid4().hex[:16]


def _admission(state: ServingState, request: object) -> _Refusal | None:
    """None when the call may run, else the refusal."""
    if state.draining:
        return _Refusal(grpc.StatusCode.UNAVAILABLE, "server is draining; retry another replica or later")
    if state.service is None:
        return _Refusal(grpc.StatusCode.UNAVAILABLE, "server is starting; retry shortly")
    if isinstance(request, UndecodableRequest):
        return _Refusal(
            grpc.StatusCode.INVALID_ARGUMENT, f"request is not a valid {request.type_name}: {request.reason}"
        )
    return None


def _optional(message: object, field: str) -> bool | None:
    return bool(getattr(message, field)) if message.HasField(field) else None  # type: ignore[attr-defined]


def _pooling(value: int) -> PoolingName | None:
    if value not in POOLING_FROM_PROTO:
        raise InvalidArgument(f"pooling has unknown value {value}; use POOLING_MEAN or POOLING_CLS")
    return POOLING_FROM_PROTO[value]


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(remaining, 0.0)


class EmbedRecServicer(pb_grpc.EmbedRecServicer):  # type: ignore[misc]
    """Adapter from the embedrec.v1 service to EmbeddingService."""

    def __init__(self, state: ServingState) -> None:
        self.state = state

    @property
    def service(self) -> EmbeddingService:
        assert self.state.service is not None
        return self.state.service

    @_guarded
    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        result = await self.service.embed(
            list(request.texts),
            normalize=_optional(request, "normalize"),
            truncate=_optional(request, "truncate"),
            pooling=_pooling(request.pooling),
            timeout=_deadline(context),
        )
        response = pb.EmbedResponse(dim=result.vectors.shape[1], token_counts=result.token_counts)
        response.MergeFromString(_packed_floats(EMBED_VALUES_FIELD, result.vectors))
        return response

    @_guarded
    async def Similarity(
        self, request: pb.SimilarityRequest, context: grpc.aio.ServicerContext
    ) -> pb.SimilarityResponse:
        has_query_form = bool(request.query or request.candidates)
        if has_query_form and request.pairs:
            raise InvalidArgument("give either query with candidates, or pairs, not both")
        if has_query_form:
            scores = await self.service.similarity_to_query(
                request.query, list(request.candidates), timeout=_deadline(context)
            )
        else:
            pairs = [(pair.a, pair.b) for pair in request.pairs]
            scores = await self.service.similarity_of_pairs(pairs, timeout=_deadline(context))
        response = pb.SimilarityResponse()
        response.MergeFromString(_packed_floats(SIMILARITY_SCORES_FIELD, scores))
        return response

    @_guarded
    async def Recommend(self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext) -> pb.RecommendResponse:
        found = await self.service.recommend(_profile_request(request), timeout=_deadline(context))
        return await self.service.cpu.run_unless_small(
            len(found) <= INLINE_RESPONSE_MAX_ITEMS, _recommend_response, found
        )

    @_guarded
    async def RecommendBatch(
        self, request: pb.RecommendBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecommendBatchResponse:
        profiles = [_profile_request(user) for user in request.users]
        found = await self.service.recommend_many(profiles, timeout=_deadline(context))
        return await self.service.cpu.run_unless_small(
            sum(len(one) for one in found) <= INLINE_RESPONSE_MAX_ITEMS, _recommend_batch_response, found
        )

    @_guarded
    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        fields = self.service.info().fields()
        fields["pooling"] = POOLING_TO_PROTO[fields["pooling"]]
        return pb.InfoResponse(**fields)


class EmbedRecAdminServicer(pb_grpc.EmbedRecAdminServicer):  # type: ignore[misc]
    """Adapter from the embedrec.v1 admin service to the server's operations."""

    def __init__(self, state: ServingState, reload_items: Callable[[], Awaitable[ReloadResult]]) -> None:
        self.state = state
        self._reload_items = reload_items

    @_guarded
    async def ReloadItems(
        self, request: pb.ReloadItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReloadItemsResponse:
        result = await self._reload_items()
        return pb.ReloadItemsResponse(
            items_sha256=result.items_sha256,
            item_count=result.item_count,
            previous_items_sha256=result.previous_items_sha256,
            changed=result.changed,
        )


PART_TO_PROTO = {"user_vector": pb.PROFILE_PART_USER_VECTOR, "text": pb.PROFILE_PART_TEXT, "item": pb.PROFILE_PART_ITEM}


def _profile_request(request: pb.RecommendRequest) -> ProfileRequest:
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
    )


def _recommend_batch_response(found: list[list[Recommendation]]) -> pb.RecommendBatchResponse:
    return pb.RecommendBatchResponse(results=[_recommend_response(one) for one in found])


def _recommend_response(found: list[Recommendation]) -> pb.RecommendResponse:
    items = []
    for recommendation in found:
        item = pb.ScoredItem(id=recommendation.item_id, score=recommendation.score)
        contribution = recommendation.contribution
        if contribution is not None:
            item.top_contribution.CopyFrom(
                pb.Contribution(
                    part=PART_TO_PROTO[contribution.kind],
                    index=contribution.index,
                    item_id=contribution.item_id,
                    score=contribution.score,
                )
            )
        items.append(item)
    return pb.RecommendResponse(items=items)


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
