"""The gRPC edge: protobuf in, core calls, protobuf out, and the one error table.

Each handler converts its request to plain Python, calls `EmbeddingService`, and converts the
result back. `_guarded` applies the error mapping in one place: domain errors become their
status with their message; anything else is INTERNAL with the traceback in the server log and
nothing internal in the reply. Request text is never logged.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import numpy as np

from embedrec.v1 import embedrec_pb2 as pb
from embedrec.v1 import embedrec_pb2_grpc as pb_grpc
from server.auth import TokenPolicy
from server.errors import EmbedrecError, InvalidArgument
from server.manifest import PoolingName
from server.service import EmbeddingService, ProfileRequest

logger = logging.getLogger(__name__)

POOLING_FROM_PROTO: dict[int, PoolingName | None] = {
    pb.POOLING_UNSPECIFIED: None,
    pb.POOLING_MEAN: "mean",
    pb.POOLING_CLS: "cls",
}
POOLING_TO_PROTO = {"mean": pb.POOLING_MEAN, "cls": pb.POOLING_CLS}

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[["EmbedRecServicer", Request, grpc.aio.ServicerContext], Awaitable[Response]]


@dataclass
class ServingState:
    """Whether calls are served: `service` is None while starting; `draining` once stopping.

    `calls` counts answered calls by (method, status code name).
    """

    service: EmbeddingService | None = None
    draining: bool = False
    tokens: TokenPolicy = field(default_factory=lambda: TokenPolicy([]))
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)


def _guarded(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    @functools.wraps(handler)
    async def wrapper(self: EmbedRecServicer, request: Request, context: grpc.aio.ServicerContext) -> Response:
        code, message = _admission(self.state, context)
        if code is None:
            try:
                response = await handler(self, request, context)
                self.state.calls[(handler.__name__, "OK")] += 1
                return response
            except EmbedrecError as error:
                code, message = grpc.StatusCode[error.status], str(error)
            except Exception:  # the boundary: nothing unexpected reaches the caller
                logger.exception("internal error in %s", handler.__name__)
                code, message = grpc.StatusCode.INTERNAL, "internal error; the details are in the server log"
        self.state.calls[(handler.__name__, code.name)] += 1
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises")

    return wrapper


def _admission(state: ServingState, context: grpc.aio.ServicerContext) -> tuple[grpc.StatusCode | None, str]:
    """(None, "") when the call may run, else the status and message that refuse it."""
    if state.tokens.enabled:
        metadata = dict(context.invocation_metadata() or ())
        if not state.tokens.allows(metadata.get("authorization")):
            return grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token (metadata 'authorization')"
    if state.draining:
        return grpc.StatusCode.UNAVAILABLE, "server is draining; retry another replica or later"
    if state.service is None:
        return grpc.StatusCode.UNAVAILABLE, "server is starting; retry shortly"
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
        profile = ProfileRequest(
            k=request.k,
            user_vector=np.asarray(request.user_vector, dtype=np.float32),
            user_vector_weight=request.user_vector_weight if request.HasField("user_vector_weight") else 1.0,
            texts=[(t.text, t.weight if t.HasField("weight") else 1.0) for t in request.texts],
            items=[(i.id, i.weight if i.HasField("weight") else 1.0) for i in request.items],
            exclude_ids=list(request.exclude_ids),
            exclude_history=request.exclude_history if request.HasField("exclude_history") else True,
        )
        found = await self.service.recommend(profile, timeout=_deadline(context))
        return pb.RecommendResponse(items=[pb.ScoredItem(id=r.item_id, score=r.score) for r in found])

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
        )
