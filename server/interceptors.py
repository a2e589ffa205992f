"""gRPC server interceptors: bearer-token authentication for every service but (optionally)
health, applied before any handler runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from embedrec.server.auth import TokenPolicy

HEALTH_SERVICE_PREFIX = "/grpc.health.v1.Health/"
DENIED = "missing or invalid bearer token (metadata 'authorization: Bearer <token>')"


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls without an accepted bearer token with UNAUTHENTICATED.

    Health stays open when `exempt_health` (orchestrators probe it without credentials).
    """

    def __init__(self, policy: TokenPolicy, *, exempt_health: bool) -> None:
        self._policy = policy
        self._exempt_health = exempt_health

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or (self._exempt_health and details.method.startswith(HEALTH_SERVICE_PREFIX)):
            return handler
        metadata = dict(details.invocation_metadata or ())
        if self._policy.allows(metadata.get("authorization")):
            return handler
        return _denying(handler)


def _denying(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)
        yield  # pragma: no cover (makes this an async generator)

    codecs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **codecs)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **codecs)
