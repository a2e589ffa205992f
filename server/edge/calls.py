"""One call's life cycle, shared by every transport (gRPC and HTTP).

A transport edge parses its request, then: counts the call as in flight
(`ServingState.in_flight_call`), asks `admission` whether it may run, awaits its handler through
`answer` (the one error table: domain errors become their status with their message; anything else
is INTERNAL with the traceback in the server log and nothing internal in the reply), and records
it with `account` (metrics and the access log, sizes only: request text is never logged).
Statuses are gRPC status code names ("OK", "INVALID_ARGUMENT", ...); each edge maps them to its
own codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from embedrec.server.errors import EmbedrecError, bounded, bounded_field
from embedrec.server.observability.metrics import ServerMetrics
from embedrec.server.service import EmbeddingService
from embedrec.v1 import embedrec_pb2 as pb

logger = logging.getLogger(__name__)

Response = TypeVar("Response")
REQUEST_ID_KEY = "x-request-id"  # gRPC metadata key and HTTP header of a call's request id
MAX_REQUEST_ID_CHARS = 64
# What a request id may hold in logs and replies: no spaces, quotes, '=' or control characters,
# so a caller cannot forge access-log fields or lines.
_REQUEST_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:/+-]")


def clean_request_id(value: str) -> str:
    """The caller's request id made safe for logs and headers: at most MAX_REQUEST_ID_CHARS
    characters, each unsafe one replaced by '_'; a new random id when `value` is empty."""
    if not value:
        return uuid.uuid4().hex[:16]
    return _REQUEST_ID_UNSAFE.sub("_", value[:MAX_REQUEST_ID_CHARS])


def request_id(metadata: object) -> str:
    """The caller's x-request-id (sanitised: see `calls.clean_request_id`), or a new random one."""
    for key, value in metadata:  # type: ignore[attr-defined]
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return clean_request_id(value)
    return clean_request_id("")


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
class Refusal:
    """The status (a gRPC status code name) a call is answered with instead of a response."""

    status: str
    message: str
    field: str | None = None  # the request field's wire path, when the refusal is about one
    limit: float | None = None  # the bound that field broke, where there is one

    def __post_init__(self) -> None:
        # The one cap every answered message passes, whichever layer wrote it.
        object.__setattr__(self, "message", bounded(self.message))
        object.__setattr__(self, "field", bounded_field(self.field))


@dataclass
class Call:
    """What accounting needs to know of one call: its method, request id and request (for sizes)."""

    rpc: str
    request_id: str
    request: object = None
    started: float = field(default_factory=time.perf_counter)


def admission(state: ServingState) -> Refusal | None:
    """None when the call may run, else the refusal (starting, draining)."""
    if state.draining:
        return Refusal("UNAVAILABLE", "server is draining; retry another replica or later")
    if state.service is None:
        return Refusal("UNAVAILABLE", "server is starting; retry shortly")
    return None


async def answer(handling: Awaitable[Response], call: Call) -> Response | Refusal:
    """The handler's response, or the refusal its error maps to (the one error table)."""
    try:
        return await handling
    except EmbedrecError as error:
        return Refusal(error.status, str(error), error.field, error.limit)
    except Exception:  # the boundary: nothing unexpected reaches the caller
        logger.exception("internal error in %s (request id %s)", call.rpc, call.request_id)
        return Refusal("INTERNAL", "internal error; the details are in the server log")


def account(state: ServingState, call: Call, status: str) -> None:
    """Count the answered call (calls, metrics) and write its access-log line when enabled."""
    rpc, request_id = call.rpc, call.request_id
    elapsed = time.perf_counter() - call.started
    state.calls[(rpc, status)] += 1
    if state.metrics is not None:
        state.metrics.observe_call(rpc, status, elapsed)
    if state.access_log:
        texts, characters = request_size(call.request)
        logger.info(
            "rpc=%s code=%s ms=%.2f texts=%d chars=%d request_id=%s",
            rpc,
            status,
            elapsed * 1000,
            texts,
            characters,
            request_id,
            extra={
                "rpc": rpc,
                "code": status,
                "ms": round(elapsed * 1000, 3),
                "texts": texts,
                "chars": characters,
                "request_id": request_id,
            },
        )


def request_size(request: object) -> tuple[int, int]:
    """(texts, characters) a request carries: sizes for the access log, never the text itself.
    A request is a protobuf message or, from the OpenAI route, a list of texts."""
    if isinstance(request, list):
        texts = [text for text in request if isinstance(text, str)]
    elif isinstance(request, pb.EmbedRequest):
        texts = list(request.texts)
    elif isinstance(request, pb.SimilarityRequest):
        texts = [request.query, *request.candidates, *(t for pair in request.pairs for t in (pair.a, pair.b))]
        texts = [text for text in texts if text]
    elif isinstance(request, pb.RerankRequest):
        texts = [request.query, *request.documents]
    elif isinstance(request, pb.RecommendRequest):
        texts = [entry.text for entry in request.texts]
    elif isinstance(request, pb.RecommendBatchRequest):
        texts = [entry.text for user in request.users for entry in user.texts]
    else:
        texts = []
    return len(texts), sum(len(text) for text in texts)
