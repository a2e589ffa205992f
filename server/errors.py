"""Domain errors of the core, each naming the gRPC status it becomes at the edge.

The core raises these with a message meant for the caller (field names and limits, never
request text); `server.edge.calls.answer` turns them into the refusal every transport sends.
Anything else is a bug and becomes INTERNAL with the details logged server-side only.

An error about one request field names it as data too: `field` is its wire path (the proto's
field names, snake_case, with `[i]` for a repeated entry and `.` for a nested one, e.g.
`texts[3].text`, `users[1].k`), `limit` the bound it broke where there is one. gRPC sends them as a
`google.rpc.BadRequest` field violation in the status details, HTTP as OpenAI's `param`.
"""

from __future__ import annotations

# How much of a caller's value an error message quotes, and how long any message may be: no
# message carries unbounded input (gRPC puts it in a trailer, whose size is capped: a longer one
# never arrives, and the call hangs until the caller's deadline).
MAX_QUOTED_CHARS = 64
MAX_MESSAGE_CHARS = 1024
# How long a field path may be (one built from a caller's JSON key is the caller's length).
MAX_FIELD_CHARS = 256


class EmbedrecError(Exception):
    """Base of the errors a caller may see; `status` is the gRPC status code's name."""

    status = "INTERNAL"

    def __init__(self, message: str = "", *, field: str | None = None, limit: float | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.limit = limit


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


def quoted(value: object) -> str:
    """A short, printable rendering of a caller's `value` for an error message: a string's first
    MAX_QUOTED_CHARS characters (repr-escaped, with the full length when cut), a number as
    itself, and a container by its type and size only (never its contents, which may be huge or
    nested thousands deep)."""
    if isinstance(value, str):
        if len(value) <= MAX_QUOTED_CHARS:
            return repr(value)
        return f"{value[:MAX_QUOTED_CHARS]!r}… ({len(value)} characters)"
    if value is None or isinstance(value, bool | int | float):
        text = repr(value)
        return text if len(text) <= MAX_QUOTED_CHARS else f"{text[:MAX_QUOTED_CHARS]}… ({len(text)} digits)"
    if isinstance(value, list | tuple | dict):
        return f"a {'JSON object' if isinstance(value, dict) else 'list'} of {len(value)} entries"
    return f"a value of type {type(value).__name__}"


def bounded(message: str) -> str:
    """`message` cut to MAX_MESSAGE_CHARS characters: applied to every message a caller gets."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "…"


def bounded_field(field: str | None) -> str | None:
    """`field` cut to MAX_FIELD_CHARS characters (ending in "…" when cut): applied to every
    field path a caller gets."""
    if field is None or len(field) <= MAX_FIELD_CHARS:
        return field
    return field[: MAX_FIELD_CHARS - 1] + "…"
