"""The gRPC edge: protobuf in, core calls, protobuf out, and the one error table.

Each handler converts its request to plain Python, calls `EmbeddingService`, and converts the
result back. `_guarded` applies the error mapping in one place: domain errors become their
status with their message; anything else is INTERNAL with the traceback in the server log and
nothing internal in the reply. Request text is never logged.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import numpy as np

from embedrec.server.errors import EmbedrecError, InvalidArgument
from embedrec.server.handlers import UndecodableRequest
from embedrec.server.items import Recommendation
from embedrec.server.manifest import PoolingName
from embedrec.server.metrics import ServerMetrics
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

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[["EmbedRecServicer", Request, grpc.aio.ServicerContext], Awaitable[Response]]


@dataclass
class ServingState:
    """Whether calls are served: `service` is None while starting; `draining` once stopping.

    `calls` counts answered calls by (method, status code name); `metrics`, when set, records
    them for Prometheus; `access_log` logs one line per call (sizes only, never text).
    """

    service: EmbeddingService | None = None
    draining: bool = False
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    metrics: ServerMetrics | None = None
    access_log: bool = False
    in_flight: int = 0


def _guarded(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    rpc = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self: EmbedRecServicer, request: Request, context: grpc.aio.ServicerContext) -> Response:
        started = time.perf_counter()
        request_id = _request_id(context)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        code, message = _admission(self.state, request)
        accounted = False
        self.state.in_flight += 1
        try:
            if code is None:
                try:
                    response = await handler(self, request, context)
                    code = grpc.StatusCode.OK
                    return response
                except EmbedrecError as error:
                    code, message = grpc.StatusCode[error.status], str(error)
                except Exception:  # the boundary: nothing unexpected reaches the caller
                    logger.exception("internal error in %s (request id %s)", rpc, request_id)
                    code, message = grpc.StatusCode.INTERNAL, "internal error; the details are in the server log"
            # Counted before the status leaves: a caller reading the metrics next sees this call.
            _account(self.state, rpc, code, started, request_id, request)
            accounted = True
            await context.abort(code, message)
            raise AssertionError("unreachable: abort raises")
        finally:
            self.state.in_flight -= 1
            if not accounted:  # answered OK, or cancelled (the client went away: code None)
                _account(self.state, rpc, code or grpc.StatusCode.CANCELLED, started, request_id, request)

    return wrapper


def _account(
    state: ServingState, rpc: str, code: grpc.StatusCode, started: float, request_id: str, request: object
) -> None:
    elapsed = time.perf_counter() - started
    state.calls[(rpc, code.name)] += 1
    if state.metrics is not None:
        state.metrics.observe_call(rpc, code.name, elapsed)
    if state.access_log:
        texts, characters = request_size(request)
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


def _admission(state: ServingState, request: object) -> tuple[grpc.StatusCode | None, str]:
    """(None, "") when the call may run, else the status and message that refuse it."""
    if state.draining:
        return grpc.StatusCode.UNAVAILABLE, "server is draining; retry another replica or later"
    if state.service is None:
        return grpc.StatusCode.UNAVAILABLE, "server is starting; retry shortly"
    if isinstance(request, UndecodableRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, f"request is not a valid {request.type_name}: {request.reason}"
    return None, ""


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
        return pb.EmbedResponse(
            values=result.vectors.ravel(), dim=result.vectors.shape[1], token_counts=result.token_counts
        )

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
        return pb.SimilarityResponse(scores=scores)

    @_guarded
    async def Recommend(self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext) -> pb.RecommendResponse:
        found = await self.service.recommend(_profile_request(request), timeout=_deadline(context))
        return _recommend_response(found)

    @_guarded
    async def RecommendBatch(
        self, request: pb.RecommendBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecommendBatchResponse:
        profiles = [_profile_request(user) for user in request.users]
        found = await self.service.recommend_many(profiles, timeout=_deadline(context))
        return pb.RecommendBatchResponse(results=[_recommend_response(one) for one in found])

    @_guarded
    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        info = self.service.info()
        limits = info.limits
        return pb.InfoResponse(
            model_name=info.model_name,
            dim=info.dim,
            max_length=info.max_length,
            pooling=POOLING_TO_PROTO[info.pooling],
            normalize=info.normalize,
            provider=info.provider,
            model_sha256=info.model_sha256,
            item_count=info.item_count,
            items_sha256=info.items_sha256,
            server_version=info.server_version,
            max_texts_per_request=limits.max_texts_per_request,
            max_chars_per_text=limits.max_chars_per_text,
            max_total_chars=limits.max_total_chars,
            max_k=limits.max_k,
            max_history_items=limits.max_history_items,
            max_exclude_ids=limits.max_exclude_ids,
            runtime_version=info.runtime_version,
            server_instance=info.server_instance,
            max_batch_size=info.batch_policy.max_batch_size,
            max_batch_tokens=info.batch_policy.max_batch_tokens,
            max_queued_texts=info.batch_policy.max_queued_items,
            items_filter_field=info.items_filter_field,
            max_batch_users=limits.max_batch_users,
            max_filter_values=limits.max_filter_values,
        )


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
