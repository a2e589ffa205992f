"""The gRPC edge: protobuf in, `embedrec.server.edge.messages` operations, protobuf out.

`_guarded` wraps every handler with the call's life cycle from `embedrec.server.edge.calls` (request
id, in-flight count, admission, the one error table, accounting) and maps the status names to
gRPC status codes. Request text is never logged.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2

from embedrec.results import DeleteResult, ReloadResult, UpsertResult, VisibilityResult
from embedrec.server.catalog.live import ItemUpsert
from embedrec.server.edge import messages
from embedrec.server.edge.calls import (
    REQUEST_ID_KEY,
    Call,
    Refusal,
    ServingState,
    account,
    admission,
    answer,
    request_id,
)
from embedrec.server.edge.grpc_handlers import REQUEST_TYPES
from embedrec.server.observability.tracing import server_span
from embedrec.server.service import EmbeddingService
from embedrec.v1 import embedrec_pb2 as pb
from embedrec.v1 import embedrec_pb2_grpc as pb_grpc

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]
RawHandler = Callable[[Any, bytes, grpc.aio.ServicerContext], Awaitable[Response]]


class _Guarded(Protocol):
    state: ServingState


def _guarded(handler: Handler[Request, Response]) -> RawHandler[Response]:
    """The handler behind the call's life cycle: admission, then the request's bytes checked
    against the count limits and decoded, then the handler; one answer whatever happens."""
    rpc = handler.__name__
    request_type = REQUEST_TYPES[rpc]

    async def decoded_and_handled(self: _Guarded, data: bytes, context: grpc.aio.ServicerContext, call: Call) -> Any:
        assert self.state.service is not None  # admitted
        request = await messages.decode(self.state.service, data, request_type)
        call.request = request  # for the access log's sizes
        return await handler(self, request, context)

    @functools.wraps(handler)
    async def wrapper(self: _Guarded, data: bytes, context: grpc.aio.ServicerContext) -> Response:
        metadata = context.invocation_metadata() or ()
        call = Call(rpc, request_id(metadata))
        context.set_trailing_metadata(((REQUEST_ID_KEY, call.request_id),))
        answered: str | None = None  # None while unanswered: the caller went away
        with self.state.in_flight_call(), server_span(rpc, metadata, request_id=call.request_id) as span:
            try:
                refusal = admission(self.state)
                outcome = (
                    refusal
                    if refusal is not None
                    else await answer(decoded_and_handled(self, data, context, call), call)
                )
                if not isinstance(outcome, Refusal):
                    answered = "OK"
                    response: Response = outcome
                    return response
                span.refused(outcome.status)
                # Counted before the status leaves: a caller reading the metrics next sees this call.
                account(self.state, call, outcome.status)
                answered = outcome.status
                await context.abort(
                    grpc.StatusCode[outcome.status],
                    outcome.message,
                    ((REQUEST_ID_KEY, call.request_id), *status_details(outcome)),
                )
                raise AssertionError("unreachable: abort raises")
            finally:
                if answered is None or answered == "OK":
                    account(self.state, call, answered or "CANCELLED")

    return wrapper


# The trailer a status's details travel in (google.rpc.Status, serialised), as grpcio-status writes it.
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def status_details(refusal: Refusal) -> tuple[tuple[str, bytes], ...]:
    """The trailer of a refusal about one request field: a google.rpc.Status whose details hold a
    BadRequest with that field's violation (its wire path; the message as description); none
    for a refusal about no field."""
    if refusal.field is None:
        return ()
    violation = error_details_pb2.BadRequest.FieldViolation(field=refusal.field, description=refusal.message)
    detail = status_pb2.Status(code=getattr(code_pb2, refusal.status, code_pb2.UNKNOWN), message=refusal.message)
    detail.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return ((STATUS_DETAILS_KEY, detail.SerializeToString()),)


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
        return await messages.embed(self.service, request, _deadline(context))

    @_guarded
    async def Similarity(
        self, request: pb.SimilarityRequest, context: grpc.aio.ServicerContext
    ) -> pb.SimilarityResponse:
        return await messages.similarity(self.service, request, _deadline(context))

    @_guarded
    async def Recommend(self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext) -> pb.RecommendResponse:
        return await messages.recommend(self.service, request, _deadline(context))

    @_guarded
    async def RecommendBatch(
        self, request: pb.RecommendBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecommendBatchResponse:
        return await messages.recommend_batch(self.service, request, _deadline(context))

    @_guarded
    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        return await messages.info(self.service, request, _deadline(context))

    @_guarded
    async def Rerank(self, request: pb.RerankRequest, context: grpc.aio.ServicerContext) -> pb.RerankResponse:
        return await messages.rerank(self.service, request, _deadline(context))


class AdminOperations(Protocol):
    """What the admin service does (implemented by the server app)."""

    async def reload_items(self) -> ReloadResult: ...

    async def change_visibility(self, item_ids: Sequence[str], *, hide: bool) -> VisibilityResult: ...

    async def hidden_ids(self) -> Sequence[str]: ...

    async def upsert_items(self, upserts: Sequence[ItemUpsert], *, timeout: float | None) -> UpsertResult: ...

    async def delete_items(self, item_ids: Sequence[str], *, timeout: float | None) -> DeleteResult: ...


class EmbedRecAdminServicer(pb_grpc.EmbedRecAdminServicer):  # type: ignore[misc]
    """Adapter from the embedrec.v1 admin service to the server's operations."""

    def __init__(self, state: ServingState, operations: AdminOperations) -> None:
        self.state = state
        self._operations = operations

    @_guarded
    async def ReloadItems(
        self, request: pb.ReloadItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReloadItemsResponse:
        result = await self._operations.reload_items()
        return pb.ReloadItemsResponse(
            items_sha256=result.items_sha256,
            item_count=result.item_count,
            previous_items_sha256=result.previous_items_sha256,
            changed=result.changed,
        )

    @_guarded
    async def HideItems(
        self, request: pb.HideItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ItemVisibilityResponse:
        return _visibility(await self._operations.change_visibility(list(request.ids), hide=True))

    @_guarded
    async def RestoreItems(
        self, request: pb.RestoreItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ItemVisibilityResponse:
        return _visibility(await self._operations.change_visibility(list(request.ids), hide=False))

    @_guarded
    async def ListHiddenItems(
        self, request: pb.ListHiddenItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListHiddenItemsResponse:
        return pb.ListHiddenItemsResponse(ids=await self._operations.hidden_ids())

    @_guarded
    async def UpsertItems(
        self, request: pb.UpsertItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertItemsResponse:
        upserts = [messages.item_upsert(one) for one in request.items]
        result = await self._operations.upsert_items(upserts, timeout=_deadline(context))
        return pb.UpsertItemsResponse(inserted=result.inserted, updated=result.updated, item_count=result.item_count)

    @_guarded
    async def DeleteItems(
        self, request: pb.DeleteItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteItemsResponse:
        result = await self._operations.delete_items(list(request.ids), timeout=_deadline(context))
        return pb.DeleteItemsResponse(
            deleted=result.deleted, unknown_ids=result.unknown_ids, item_count=result.item_count
        )


def _visibility(result: VisibilityResult) -> pb.ItemVisibilityResponse:
    return pb.ItemVisibilityResponse(
        changed=result.changed, unknown_ids=result.unknown_ids, hidden_count=result.hidden_count
    )
