"""The HTTP connection under abuse: what uvicorn's httptools protocol leaves unbounded.

uvicorn bounds idle keep-alive connections (`timeout_keep_alive`) but, with the httptools parser,
not the request head: headers of any size are buffered, a client that connects and says nothing
(or stalls mid-head) is never timed out, and nothing caps open connections before file
descriptors run out. `GuardedHttpProtocol` adds, per connection:

- a head size limit (431, connection closed) checked as bytes arrive, not after parsing;
- a head timeout from the connection's start (or the end of the previous response's keep-alive
  wait) until the head is complete (408; a connection that sent nothing is just closed);
- a cap on open connections: past it, the connection that has waited longest for a request head
  (a new connection saying nothing, a slow head, an idle keep-alive) is closed to make room, so
  slow clients cannot lock good ones out; only when every connection is past its head (requests
  being read or answered) does the new one get 503 with Retry-After, closed at once;
- malformed requests answered 400 without a log line each (a flood of them must not flood logs).

The body's read timeout and the request deadline live in the ASGI app (`embedrec.server.edge.http_api`),
which sees the body. `rate_limited_accept_errors` keeps asyncio's accept-failure message
(one per failed accept: thousands a second once descriptors run out) to one line per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from embedrec.server.edge.http_api import error_body

logger = logging.getLogger(__name__)

ACCEPT_FAILURE = "socket.accept() out of system resource"
# After answering a request whose body is still arriving (413, 408), the connection reads and
# drops the rest for this long, or this many bytes, before closing: closing at once would make
# the client's kernel answer its further writes with a reset, and the client would see the reset
# instead of the answer (a "lingering close", as nginx and Apache do).
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    """What one HTTP connection may cost before the request reaches the app."""

    max_header_bytes: int = 32 * 1024
    header_timeout_s: float = 10.0
    max_connections: int = 1000
    # Called with a reason ("connections", "header_size", "header_timeout", "malformed", "evicted":
    # closed at the cap to make room) per refusal.
    refused: Callable[[str], None] = lambda reason: None


REASONS = {
    400: ("malformed", "INVALID_ARGUMENT", "malformed HTTP request"),
    408: ("header_timeout", "REQUEST_TIMEOUT", "request head not received within {timeout:g} s"),
    431: ("header_size", "REQUEST_HEADER_FIELDS_TOO_LARGE", "request head exceeds {size} bytes"),
    503: ("connections", "UNAVAILABLE", "too many open connections ({count}); retry shortly"),
}


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `limits` (set by `guarded_protocol`)."""

    limits = ConnectionLimits()
    # The connections waiting for a request head, longest-waiting first (one per bound class, so
    # per server: see `guarded_protocol`).
    waiting: ClassVar[OrderedDict[GuardedHttpProtocol, None]] = OrderedDict()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._in_head = True
        self._in_body = False
        self._lingering = False
        self._lingered_bytes = 0
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._head_bytes = 0
        self._answered = False
        self._head_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.limits.max_connections and not self._evict_longest_waiting():
            self._refuse(503, count=self.limits.max_connections)
            return
        self._wait_for_head()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self.waiting.pop(self, None)
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._wait_for_head()  # kept alive: waiting for the next request's head from now

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingered_bytes += len(data)
            if self._lingered_bytes > LINGER_MAX_BYTES:
                self._close_now()
            return
        if self._answered:
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            if not self._answered:
                self._refuse(400)
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, size=self.limits.max_header_bytes)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # the next request on a kept-alive connection
            self._in_head = True
            self._head_bytes = 0
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self.waiting.pop(self, None)
        self._cancel_head_timer()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._refuse(431, size=self.limits.max_header_bytes)
            raise _Answered  # stops the parser: no app call for this request
        self._in_body = True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        if not self._answered:
            super().on_message_complete()

    def eof_received(self) -> None:
        if self._lingering:  # the client finished sending: the answer has been read or never will be
            self._close_now()

    def linger(self) -> None:
        """Close after the rest of the request body has arrived (dropped unread), at most
        LINGER_SECONDS or LINGER_MAX_BYTES from now; the answer already written goes first."""
        real = self.transport.wrapped  # type: ignore[attr-defined]
        self._lingering = True
        self._answered = True
        self._cancel_head_timer()
        if real.can_write_eof():
            real.write_eof()  # the client sees the answer end while it still sends
        real.resume_reading()  # flow control may have paused it: the rest must be read to be dropped
        self.loop.call_later(LINGER_SECONDS, self._close_now)

    def _close_now(self) -> None:
        self._lingering = False
        self.transport.wrapped.close()  # type: ignore[attr-defined]

    def _wait_for_head(self) -> None:
        self.waiting[self] = None
        self.waiting.move_to_end(self)

    def _evict_longest_waiting(self) -> bool:
        """Close the connection that has waited longest for a request head (counted "evicted");
        False when no connection is waiting for one."""
        while self.waiting:
            oldest, _ = self.waiting.popitem(last=False)
            if oldest is self or oldest.transport.is_closing():
                continue
            oldest._answered = True
            oldest._cancel_head_timer()
            oldest.limits.refused("evicted")
            oldest.transport.close()
            return True
        return False

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:  # said nothing: nobody to answer
            self.limits.refused("header_timeout")
            self._answered = True
            self.transport.close()
            return
        self._refuse(408, timeout=self.limits.header_timeout_s)

    def _refuse(self, status: int, **details: Any) -> None:
        """Answer `status` with a JSON error, close the connection, count the refusal."""
        reason, code, template = REASONS[status]
        self._answered = True
        self.waiting.pop(self, None)
        self._cancel_head_timer()
        self.limits.refused(reason)
        body = error_body(code, template.format(**details))
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        if status == 503:
            head.append("retry-after: 1")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body)
        self.transport.close()


class _LingeringTransport:
    """The connection's transport as uvicorn and the app see it: `close()` while a request body
    is still arriving lingers (GuardedHttpProtocol.linger) instead of closing at once; everything
    else is the transport's own."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpProtocol) -> None:
        self.wrapped = transport
        self._protocol = protocol

    def close(self) -> None:
        protocol = self._protocol
        if protocol._in_body and not protocol._lingering and not self.wrapped.is_closing():
            protocol.linger()
        elif not protocol._lingering:
            self.wrapped.close()

    def is_closing(self) -> bool:
        return self._protocol._lingering or self.wrapped.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


class _Answered(Exception):
    """Raised from a parser callback to stop parsing a request already answered."""


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpProtocol]:
    """A GuardedHttpProtocol class bound to `limits`, for uvicorn's `http=` setting (with its
    own table of connections waiting for a head)."""
    return type("BoundGuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits, "waiting": OrderedDict()})


def rate_limited_accept_errors(loop: asyncio.AbstractEventLoop, interval_s: float = 10.0) -> None:
    """Log asyncio's accept failures (out of descriptors or memory) at most once per `interval_s`
    on `loop`, with how many there were; every other exception goes to the handler before."""
    previous = loop.get_exception_handler()
    state = {"last": -interval_s, "suppressed": 0}

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_FAILURE:
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - state["last"] < interval_s:
            state["suppressed"] += 1
            return
        logger.error(
            "cannot accept connections: %s (%d more such failures since the last line; connections wait in the "
            "backlog until descriptors free up)",
            context.get("exception"),
            state["suppressed"],
        )
        state["last"], state["suppressed"] = now, 0

    loop.set_exception_handler(handle)
