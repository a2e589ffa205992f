"""The client's exceptions, and the one place that maps gRPC status codes to them.

Every exception keeps the server's message (which names the field and limit), the status code it
came from, and `field`: the wire path of the request field it is about (e.g. `texts[3].text`), read
from the google.rpc.BadRequest field violation in the status details (None when there is none).
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

# The trailer the server's status details travel in (a serialised google.rpc.Status).
STATUS_DETAILS_KEY = "grpc-status-details-bin"


class EmbedrecClientError(Exception):
    """Base of every error the client raises for a failed call."""

    def __init__(self, message: str, code: grpc.StatusCode, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field

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


# gRPC's words for a connection that TLS on one side only breaks, and what to change. A
# plaintext client's handshake with a TLS port ends in "Socket closed"; a TLS client's with a
# plaintext port in WRONG_VERSION_NUMBER (None: with TLS or without).
_CONNECTION_HINTS: tuple[tuple[bool | None, str, str], ...] = (
    (None, "Connection refused", "nothing listens there: check the target (the CLI's --target or EMBEDREC_TARGET)"),
    (
        False,
        "Socket closed",
        "if the server uses TLS, connect with TLS: the CLI's --tls (--ca CA.pem for a private CA), "
        "ChannelConfig(tls=True, root_certificates=Path('ca.pem'))",
    ),
    (True, "WRONG_VERSION_NUMBER", "the server speaks plaintext on this port: drop --tls/--ca (tls=False)"),
    (
        True,
        "CERTIFICATE_VERIFY_FAILED",
        "the server's certificate is not signed by a CA this client trusts: pass that CA with --ca CA.pem "
        "(ChannelConfig(root_certificates=Path('ca.pem')))",
    ),
)


def from_rpc_error(error: grpc.RpcError, *, uses_tls: bool | None = None) -> EmbedrecClientError:
    """The client exception for a failed call (`error` is a grpc.Call as well as an RpcError);
    with `uses_tls` (the channel's), an UNAVAILABLE that looks like TLS on one side only says
    what to change."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    message = details or code.name
    if code == grpc.StatusCode.UNAVAILABLE and uses_tls is not None:
        hints = (text for tls, words, text in _CONNECTION_HINTS if tls in (None, uses_tls) and words in message)
        hint = next(hints, None)
        message = f"{message} ({hint})" if hint else message
    return _BY_CODE.get(code, ServerError)(message, code, field_of(error))


def field_of(error: grpc.RpcError) -> str | None:
    """The request field a failed call's status details name (their first BadRequest field
    violation), or None."""
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad_request = error_details_pb2.BadRequest()
                if detail.Unpack(bad_request) and bad_request.field_violations:
                    return str(bad_request.field_violations[0].field)
        except DecodeError:
            return None
    return None
