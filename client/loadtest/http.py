"""The load tester's HTTP mode: the same workload sent to the HTTP/JSON edge.

Embed goes to the OpenAI-compatible `POST /v1/embeddings` (what most HTTP users call),
Recommend and Similarity to their JSON mirrors, Info to `GET /v1/info`. Every request is encoded
to bytes once, before the run; calls reuse keep-alive HTTP/1.1 connections (one per call in
flight, as wrk does), read with asyncio streams: the client's own cost per call stays below the
gRPC client's, so a server-side comparison is not flattered by the client.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from embedrec.client.loadtest.workload import RequestPool
from embedrec.v1 import embedrec_pb2 as pb

# HTTP status -> the gRPC status name the load tester reports (the server's own mapping, inverted).
CODE_OF_STATUS = {
    200: "OK",
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
ROUTES = {
    "embed": "/v1/embeddings",
    "recommend": "/v1/recommend",
    "similarity": "/v1/similarity",
}

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def server_info(target: str, token: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """GET /v1/info of the HTTP edge at `target` ("host:port"): the InfoResponse as JSON."""
    request = urllib.request.Request(f"http://{target}/v1/info")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        info: dict[str, Any] = json.loads(response.read())
    return info


def encode_call(name: str, request: Message, *, host: str, model: str, token: str | None) -> bytes:
    """The complete HTTP/1.1 request (head and body) for one pooled gRPC request."""
    if name == "info":
        method, path, body = "GET", "/v1/info", b""
    elif name == "embed":
        assert isinstance(request, pb.EmbedRequest)
        texts = list(request.texts)
        method, path = "POST", ROUTES[name]
        body = _json({"input": texts[0] if len(texts) == 1 else texts, "model": model})
    else:
        method, path = "POST", ROUTES[name]
        body = _json(json_format.MessageToDict(request))
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    head.append(f"Content-Length: {len(body)}")
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class HttpSender:
    """Sends pooled requests to one HTTP target over keep-alive connections."""

    def __init__(self, target: str, pool: RequestPool, *, model: str, token: str | None = None) -> None:
        self.host, _, port = target.rpartition(":")
        self.port = int(port)
        self._encoded = {
            id(request): encode_call(name, request, host=target, model=model, token=token)
            for name, built in pool.requests.items()
            for request, _ in built
        }
        self._idle: list[Connection] = []

    async def send(self, name: str, request: object, timeout: float) -> str:
        """One call; the gRPC status name its HTTP status maps to (transport failures:
        UNAVAILABLE, the timeout: DEADLINE_EXCEEDED)."""
        connection = self._idle.pop() if self._idle else None
        try:
            async with asyncio.timeout(timeout):
                if connection is None:
                    connection = await asyncio.open_connection(self.host, self.port)
                reader, writer = connection
                writer.write(self._encoded[id(request)])
                head = await reader.readuntil(b"\r\n\r\n")
                status, length, keep_alive = _parse_head(head)
                await reader.readexactly(length)
        except TimeoutError:
            _close(connection)
            return "DEADLINE_EXCEEDED"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            _close(connection)
            return "UNAVAILABLE"
        if keep_alive:
            self._idle.append(connection)
        else:
            _close(connection)
        return CODE_OF_STATUS.get(status, f"HTTP_{status}")

    async def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            _close(self._idle.pop())
        await asyncio.sleep(0)


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, whether the connection stays open) of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, keep_alive = 0, True
    for line in lines[1:]:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "content-length":
            length = int(value)
        elif key == "connection" and value.strip().lower() == "close":
            keep_alive = False
    return status, length, keep_alive


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _close(connection: Connection | None) -> None:
    if connection is not None:
        connection[1].close()
