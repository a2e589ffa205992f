"""Domain errors of the core, each naming the gRPC status it becomes at the edge.

The core raises these with a message meant for the caller (field names and limits, never
request text); `server.servicer` maps them through `status_name` in one place. Anything else is
a bug and becomes INTERNAL with the details logged server-side only.
"""

from __future__ import annotations


class EmbedrecError(Exception):
    """Base of the errors a caller may see; `status` is the gRPC status code's name."""

    status = "INTERNAL"


class InvalidArgument(EmbedrecError):
    """A request field breaks the contract (INVALID_ARGUMENT)."""

    status = "INVALID_ARGUMENT"


class NotFound(EmbedrecError):
    """A referenced item id is not in the served catalog (NOT_FOUND)."""

    status = "NOT_FOUND"


class Overloaded(EmbedrecError):
    """The work queue is full; retry later or elsewhere (RESOURCE_EXHAUSTED)."""

    status = "RESOURCE_EXHAUSTED"


class DeadlineExpired(EmbedrecError):
    """The caller's deadline passed before the work was done (DEADLINE_EXCEEDED)."""

    status = "DEADLINE_EXCEEDED"


class Unavailable(EmbedrecError):
    """The server is starting, draining or its worker is down (UNAVAILABLE)."""

    status = "UNAVAILABLE"


class FailedPrecondition(EmbedrecError):
    """The request needs something this server does not serve, e.g. items (FAILED_PRECONDITION)."""

    status = "FAILED_PRECONDITION"


class ConfigurationError(Exception):
    """The server cannot start with these settings or artefacts (a start-up error, not an RPC)."""
