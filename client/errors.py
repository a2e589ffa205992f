"""The client's exceptions, and the one place that maps gRPC status codes to them.

Every exception keeps the server's message (which names the field and limit) and the status
code it came from.
"""

from __future__ import annotations

import grpc


class EmbedrecClientError(Exception):
    """Base of every error the client raises for a failed call."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(EmbedrecClientError):
    """The request broke the contract (INVALID_ARGUMENT, OUT_OF_RANGE); do not retry as is."""


class NotFound(EmbedrecClientError):
    """An item id is not in the served catalog (NOT_FOUND)."""


class Overloaded(EmbedrecClientError):
    """The server's queue is full (RESOURCE_EXHAUSTED); retry later with backoff."""


class Unavailable(EmbedrecClientError):
    """The server is starting, draining or unreachable (UNAVAILABLE); safe to retry."""


class DeadlineExceeded(EmbedrecClientError):
    """The call's deadline passed (DEADLINE_EXCEEDED)."""


class Unauthenticated(EmbedrecClientError):
    """Missing or wrong credentials (UNAUTHENTICATED)."""


class PermissionDenied(Unauthenticated):
    """Valid credentials without the right to this call, e.g. a client token on an admin RPC
    (PERMISSION_DENIED). A subclass of Unauthenticated, which caught both before."""


class FailedPrecondition(EmbedrecClientError):
    """The server cannot do this, e.g. Recommend without items (FAILED_PRECONDITION)."""


class Cancelled(EmbedrecClientError):
    """The call was cancelled (CANCELLED)."""


class ServerError(EmbedrecClientError):
    """Anything else, e.g. INTERNAL: a server bug, details in the server's log."""


_BY_CODE: dict[grpc.StatusCode, type[EmbedrecClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def from_rpc_error(error: grpc.RpcError) -> EmbedrecClientError:
    """The client exception for a failed call (`error` is a grpc.Call as well as an RpcError)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return _BY_CODE.get(code, ServerError)(details or code.name, code)
