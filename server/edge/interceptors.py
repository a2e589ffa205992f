"""gRPC server interceptors: bearer-token authentication for every service (reflection included)
but, optionally, health, applied before any handler runs; admin RPCs need an admin token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from embedrec.server.edge.auth import Access, TokenGuard
from embedrec.server.edge.calls import REQUEST_ID_KEY, Call, ServingState, account, request_id
from embedrec.v1 import embedrec_pb2 as pb

HEALTH_SERVICE_PREFIX = "/grpc.health.v1.Health/"
ADMIN_SERVICE_PREFIX = "/" + pb.DESCRIPTOR.services_by_name["EmbedRecAdmin"].full_name + "/"
UNAUTHENTICATED = (
    "missing or invalid bearer token (metadata 'authorization: Bearer <token>'; the CLI's --token or EMBEDREC_TOKEN)"
)
PERMISSION_DENIED = (
    "this RPC needs an admin token (the server's --admin-tokens-file or EMBEDREC_ADMIN_TOKENS); "
    "a client token may not call it"
)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls without an accepted bearer token with UNAUTHENTICATED, and admin RPCs called
    with a client token with PERMISSION_DENIED, by the policy `guard` holds at call time.

    Health stays open when `exempt_health` (orchestrators probe it without credentials).
    """

    def __init__(self, guard: TokenGuard, *, exempt_health: bool, state: ServingState | None = None) -> None:
        """`state`: where refusals are counted (metrics, access log) like every other answer."""
        self._guard = guard
        self._exempt_health = exempt_health
        self._state = state

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or (self._exempt_health and details.method.startswith(HEALTH_SERVICE_PREFIX)):
            return handler
        metadata = dict(details.invocation_metadata or ())
        access = self._guard.policy.check(
            metadata.get("authorization"), admin=details.method.startswith(ADMIN_SERVICE_PREFIX)
        )
        if access is Access.ALLOWED:
            return handler
        rpc = details.method.rsplit("/", 1)[-1]
        if access is Access.PERMISSION_DENIED:
            return _denying(handler, grpc.StatusCode.PERMISSION_DENIED, PERMISSION_DENIED, rpc, self._state)
        return _denying(handler, grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED, rpc, self._state)


def _denying(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str, rpc: str, state: ServingState | None
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers `code` with `message`, counted in
    `state` under `rpc`."""

    async def refuse(context: grpc.aio.ServicerContext) -> None:
        if state is not None:
            call = Call(rpc, request_id(context.invocation_metadata() or ()))
            context.set_trailing_metadata(((REQUEST_ID_KEY, call.request_id),))
            account(state, call, code.name)
        await context.abort(code, message)

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await refuse(context)

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await refuse(context)
        yield  # pragma: no cover (makes this an async generator)

    codecs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **codecs)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **codecs)
