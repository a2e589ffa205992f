"""The HTTP/JSON edge: an OpenAI-compatible embeddings API and JSON mirrors of the gRPC RPCs.

An ASGI application (`HttpApi`) served by uvicorn (`http_server.HttpServer`, behind the
connection guard of `http_protocol`) in the server's own process and event loop, so it shares the
batcher, the item index, the limits, the bearer tokens, TLS and the metrics with gRPC. Routes:

- `POST /v1/embeddings`: the OpenAI embeddings API (`input` a string or a list of strings,
  `model`, `encoding_format` float|base64, `dimensions`; `user` is ignored; `prompt_name`, an
  embedrec extension, picks one of the model's prompts; `model` picks among the served embedding
  models). `GET /v1/models` lists every served model (`models.ServedModels`).
- `POST /v1/rerank`: the Cohere/Jina rerank API (vLLM's, LangChain's and LlamaIndex's clients);
  it and the two above live in `openai_routes`.
- `POST /v1/embed`, `/v1/similarity`, `/v1/recommend`, `/v1/recommend-batch` and `GET /v1/info`:
  the RPCs of embedrec.v1 with bodies in the proto's JSON mapping (lowerCamelCase or the proto
  field names accepted; lowerCamelCase written, 64-bit integers as strings).
- `GET /health`: 200 while SERVING, 503 while starting or draining.
- TEI's /embed, /, /rerank, /tokenize and /info (`tei_routes`), Cohere's /v2/embed and /v2/rerank
  (`cohere_routes`) and GET /openapi.json (`openapi`), each refusing in its dialect's error shape
  (`http_errors`). The route table of them all: `http_routes.ROUTES`. On every JSON route an
  explicit null in a field means unset.

Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with `code` always a
gRPC status name (`GRPC_CODE` for refusals only HTTP has) and the HTTP status from `HTTP_STATUS`
(429 and 503 carry Retry-After). Every call has a deadline (the server's, or the client's shorter
`x-request-timeout`); POST bodies must be JSON, and are checked against the request limits in
bounded steps before they are parsed (`json_limits`). Like the gRPC edge, a handler only parses,
admits, awaits the core and answers: JSON for more than a few vectors is written in the CPU pool
(orjson: ~20 us per 384-d vector against ~440 us for the standard library's json, measured here),
and request text is never logged.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message

from embedrec.server.batching.offload import INLINE_JSON_MAX_FLOATS, INLINE_PARSE_MAX_BYTES
from embedrec.server.edge import messages
from embedrec.server.edge.auth import Access, TokenGuard
from embedrec.server.edge.calls import (
    REQUEST_ID_KEY,
    Call,
    Refusal,
    ServingState,
    account,
    admission,
    answer,
    clean_request_id,
)
from embedrec.server.edge.http_errors import ERROR_DIALECTS
from embedrec.server.edge.json_limits import check_json, check_json_structure, max_json_values
from embedrec.server.edge.request_limits import LimitTable, limits_of
from embedrec.server.errors import DeadlineExpired, EmbedrecError, InvalidArgument, bounded, quoted
from embedrec.server.inference.quantization import quantized
from embedrec.server.observability.tracing import server_span
from embedrec.server.service import EmbeddingService
from embedrec.v1 import embedrec_pb2 as pb

logger = logging.getLogger(__name__)

# gRPC status name -> (HTTP status, OpenAI error type).
HTTP_STATUS: dict[str, tuple[int, str]] = {
    "OK": (200, ""),
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "FAILED_PRECONDITION": (400, "invalid_request_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
    "PERMISSION_DENIED": (403, "permission_error"),
    "NOT_FOUND": (404, "not_found_error"),
    "REQUEST_TIMEOUT": (408, "timeout_error"),
    "PAYLOAD_TOO_LARGE": (413, "invalid_request_error"),
    "REQUEST_HEADER_FIELDS_TOO_LARGE": (431, "invalid_request_error"),
    "UNSUPPORTED_MEDIA_TYPE": (415, "invalid_request_error"),
    "METHOD_NOT_ALLOWED": (405, "invalid_request_error"),
    "CANCELLED": (499, "client_closed_request"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "INTERNAL": (500, "server_error"),
    "UNAVAILABLE": (503, "service_unavailable"),
    "DEADLINE_EXCEEDED": (504, "timeout_error"),
}
# The gRPC status name each refusal only HTTP has writes as `code` (the HTTP status says more);
# the metrics keep the HTTP name. As grpc-gateway maps them (405: UNIMPLEMENTED).
GRPC_CODE = {
    "REQUEST_TIMEOUT": "DEADLINE_EXCEEDED",
    "PAYLOAD_TOO_LARGE": "RESOURCE_EXHAUSTED",
    "REQUEST_HEADER_FIELDS_TOO_LARGE": "RESOURCE_EXHAUSTED",
    "UNSUPPORTED_MEDIA_TYPE": "INVALID_ARGUMENT",
    "METHOD_NOT_ALLOWED": "UNIMPLEMENTED",
}
UNAUTHENTICATED_HTTP = "missing or unknown bearer token (send the header 'authorization: Bearer <token>')"
NOT_JSON = "the request body must be JSON: send the header content-type: application/json"
RETRY_AFTER_SECONDS = "1"
REQUEST_ID_HEADER = REQUEST_ID_KEY.encode()
# A client's deadline for the whole call, in seconds (like gRPC's deadline); the server's
# --http-request-timeout-s applies when it is absent or longer.
TIMEOUT_HEADER = b"x-request-timeout"
# The raw-structure check refuses only bodies far past what the route accepts (this many times
# its widest array and its values, at least STRUCTURE_FLOOR): a moderately oversized list still
# reaches the field checks, whose messages name the field; parsing STRUCTURE_FLOOR values costs
# ~5 ms here.
STRUCTURE_SLACK = 4
STRUCTURE_FLOOR = 65_536
JSON = orjson.OPT_SERIALIZE_NUMPY

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class _HttpRefusal(EmbedrecError):
    """A refusal only HTTP has (a body too large, a client gone): `status` is a key of HTTP_STATUS."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Reply:
    """An answered call: HTTP status and JSON body bytes."""

    body: bytes
    http_status: int = 200


# A route's handler: (api, body, service, timeout) -> (reply, the request, for the access log's sizes).
Handler = Callable[["HttpApi", bytes, EmbeddingService, float], Awaitable[tuple[_Reply, object]]]


@dataclass(frozen=True)
class Route:
    """One route of the table the server dispatches on (`http_routes.ROUTES`) and /openapi.json
    describes: `request` and `response` are JSON Schemas (dicts) or proto message descriptors
    (their JSON mapping), `example` a request body it answers 200."""

    method: str
    name: str  # the "rpc" label in metrics and traces
    handle: Handler
    probe: bool = False  # a health check: no token needed when the server exempts health
    dialect: str = "openai"  # the error shape of its refusals: a key of ERROR_DIALECTS
    summary: str = ""
    request: Any = None
    response: Any = None
    example: Any = None


RouteTable = Mapping[str, Mapping[str, Route]]  # path -> method -> route


class HttpApi:
    """The ASGI application. `state` and `tokens` are the gRPC edge's own objects."""

    def __init__(
        self,
        state: ServingState,
        tokens: TokenGuard,
        *,
        routes: RouteTable,
        max_body_bytes: int,
        exempt_health: bool = True,
        body_timeout_s: float = 10.0,
        request_timeout_s: float = 60.0,
    ) -> None:
        """`routes`: the route table (`http_routes.ROUTES`); `body_timeout_s`: the longest wait for
        the next piece of a request body (408 after); `request_timeout_s`: the deadline of a call
        whose client gives none (504 after)."""
        self.routes = routes
        self.openapi: bytes | None = None  # /openapi.json, written once
        self.state = state
        self.tokens = tokens
        self.max_body_bytes = max_body_bytes
        self.exempt_health = exempt_health
        self.body_timeout_s = body_timeout_s
        self.request_timeout_s = request_timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = scope["headers"]
        request_id = clean_request_id(_header(headers, REQUEST_ID_HEADER))
        methods = self.routes.get(scope["path"])
        method = scope["method"]
        if methods is None:
            message = f"no route {quoted(method)} {quoted(scope['path'])}"
            await _send(send, error_body("NOT_FOUND", message), 404, request_id)
            return
        route = methods.get(method)
        if route is None:
            message = f"{scope['path']} takes {' or '.join(methods)}, not {quoted(method)}"
            allow = [(b"allow", ", ".join(methods).encode())]
            await _send(send, error_body("METHOD_NOT_ALLOWED", message), 405, request_id, extra=allow)
            return
        call = Call(f"{route.method} {scope['path']}", request_id)
        with self.state.in_flight_call(), server_span(call.rpc, headers, request_id=request_id, system="http") as span:
            reply, status = await self._handle(route, scope, receive, call)
            span.refused(status)
            account(self.state, call, status)
            await _send(send, reply.body, reply.http_status, request_id, extra=_reply_headers(status))

    async def _handle(self, route: Route, scope: dict[str, Any], receive: Receive, call: Call) -> tuple[_Reply, str]:
        """The reply and its status name; never raises."""
        if not (route.probe and self.exempt_health):
            access = self.tokens.policy.check(_header(scope["headers"], b"authorization") or None, admin=False)
            if access is not Access.ALLOWED:
                denied = Refusal("UNAUTHENTICATED", UNAUTHENTICATED_HTTP)
                return _refused(route.dialect, denied), denied.status
        refusal = admission(self.state)
        if refusal is not None:
            return _refused(route.dialect, refusal), refusal.status
        if route.method == "POST" and not _is_json(_header(scope["headers"], b"content-type")):
            refusal = Refusal("UNSUPPORTED_MEDIA_TYPE", NOT_JSON)
            return _refused(route.dialect, refusal), refusal.status
        outcome = await answer(self._run(route, scope, receive, call), call)
        if isinstance(outcome, Refusal):
            return _refused(route.dialect, outcome), outcome.status
        return outcome, "OK"

    async def _run(self, route: Route, scope: dict[str, Any], receive: Receive, call: Call) -> _Reply:
        """The route's reply within the call's deadline (DEADLINE_EXCEEDED past it: the work
        still queued is dropped by the batchers)."""
        timeout = _deadline(_header(scope["headers"], TIMEOUT_HEADER), self.request_timeout_s)
        try:
            async with asyncio.timeout(timeout):
                body = await _read_body(scope, receive, self.max_body_bytes, self.body_timeout_s)
                assert self.state.service is not None  # admitted
                reply, request = await route.handle(self, body, self.state.service, timeout)
        except TimeoutError:
            raise DeadlineExpired(f"the call's deadline of {timeout:g} s passed") from None
        call.request = request  # for the access log's sizes
        return reply

    async def embed(self, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
        """POST /v1/embed: EmbedRequest -> EmbedResponse in the proto's JSON mapping."""
        request = await _parsed(service, body, pb.EmbedRequest())
        code_type = messages.embedding_code_type(request.embedding_type)
        result = await messages.embed_result(service, request, timeout)
        vectors = result.vectors
        document: dict[str, Any] = {
            "values": vectors.ravel(),
            "dim": vectors.shape[1],
            "tokenCounts": result.token_counts,
        }
        if code_type is not None:
            codes = quantized(vectors, code_type)
            document |= {"values": [], "codes": base64.b64encode(codes.tobytes()).decode(), "codeBytes": codes.shape[1]}
        return _Reply(await _dumps(service, document, vectors.size)), request

    async def similarity(self, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
        """POST /v1/similarity: SimilarityRequest -> SimilarityResponse."""
        request = await _parsed(service, body, pb.SimilarityRequest())
        scores = await messages.similarity_scores(service, request, timeout)
        return _Reply(orjson.dumps({"scores": scores}, option=JSON)), request

    async def recommend(self, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
        """POST /v1/recommend: RecommendRequest -> RecommendResponse."""
        request = await _parsed(service, body, pb.RecommendRequest())
        response = await messages.recommend(service, request, timeout)
        return _Reply(await _message_json(service, response, len(response.items))), request

    async def recommend_batch(self, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
        """POST /v1/recommend-batch: RecommendBatchRequest -> RecommendBatchResponse."""
        request = await _parsed(service, body, pb.RecommendBatchRequest())
        response = await messages.recommend_batch(service, request, timeout)
        items = sum(len(result.items) for result in response.results)
        return _Reply(await _message_json(service, response, items)), request

    async def info(self, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
        """GET /v1/info: InfoResponse."""
        response = await messages.info(service, pb.InfoRequest(), None)
        return _Reply(_message_dumps(response)), None

    async def health(self, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
        """GET /health: reached only when admitted, i.e. SERVING (starting or draining: 503)."""
        return _Reply(orjson.dumps({"status": "SERVING"})), None


def _json_object(body: bytes, max_entries: int, max_values: int) -> dict[str, Any]:
    """`body` parsed as a JSON object once its structure is within reach of what the route
    takes (`max_entries` in its widest array, `max_values` in all; see STRUCTURE_SLACK and
    `json_limits.check_json_structure`); InvalidArgument otherwise."""
    check_json_structure(
        body,
        max_entries=max(STRUCTURE_SLACK * max_entries, STRUCTURE_FLOOR),
        max_values=max(STRUCTURE_SLACK * max_values, STRUCTURE_FLOOR),
    )
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidArgument(f"request body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("request body must be a JSON object")
    return {key: entry for key, entry in value.items() if entry is not None}  # an explicit null means unset


async def _parsed(service: EmbeddingService, body: bytes, message: Message) -> Any:
    """`_parse`, in the CPU pool for bodies past INLINE_PARSE_MAX_BYTES (json_format works in
    Python, ~0.5 us per value)."""
    return await service.cpu.run_unless_small(
        len(body) <= INLINE_PARSE_MAX_BYTES, _parse, body, message, limits_of(service)
    )


def _parse(body: bytes, message: Message, table: LimitTable) -> Any:
    """`body` (JSON in the proto's mapping) into `message`; InvalidArgument naming what is wrong.
    Each step bounds the next: the raw structure (depth, widths, values) before parsing, the
    document's fields and counts before json_format walks it."""
    descriptor = message.DESCRIPTOR
    document = _json_object(body, *max_json_values(descriptor, table))
    check_json(document, descriptor, table)
    try:
        json_format.ParseDict(document, message)
    except json_format.ParseError as error:
        raise InvalidArgument(f"request does not match {message.DESCRIPTOR.name}: {error}") from None
    return message


async def _dumps(service: EmbeddingService, document: object, floats: int) -> bytes:
    return await service.cpu.run_unless_small(floats <= INLINE_JSON_MAX_FLOATS, orjson.dumps, document, option=JSON)


async def _message_json(service: EmbeddingService, message: Message, items: int) -> bytes:
    """`message` in the proto's JSON mapping; in the CPU pool past a few items (json_format walks
    every field in Python)."""
    return await service.cpu.run_unless_small(items <= 8, _message_dumps, message)


def _message_dumps(message: Message) -> bytes:
    return orjson.dumps(json_format.MessageToDict(message, always_print_fields_with_no_presence=True))


def _refused(dialect: str, refusal: Refusal) -> _Reply:
    """The reply of `refusal` in the error shape of `dialect` (OpenAI's, or one of ERROR_DIALECTS)."""
    http_status = HTTP_STATUS.get(refusal.status, (500, ""))[0]
    if dialect in ERROR_DIALECTS:
        code, body = ERROR_DIALECTS[dialect](refusal.status, refusal.message, http_status)
        return _Reply(body, code)
    return _Reply(error_body(refusal.status, refusal.message, refusal.field), http_status)


def error_body(status: str, message: str, param: str | None = None) -> bytes:
    """The JSON error body (OpenAI's shape) of a refusal with `status`, a key of HTTP_STATUS;
    `param`: the wire path of the request field it is about, if any."""
    error_type = HTTP_STATUS.get(status, (500, "server_error"))[1]
    code = GRPC_CODE.get(status, status)
    return orjson.dumps({"error": {"message": bounded(message), "type": error_type, "param": param, "code": code}})


def _reply_headers(status: str) -> list[tuple[bytes, bytes]]:
    """Headers a refusal of `status` carries beyond the usual ones."""
    if status in ("RESOURCE_EXHAUSTED", "UNAVAILABLE"):
        return [(b"retry-after", RETRY_AFTER_SECONDS.encode())]
    if status == "UNAUTHENTICATED":
        return [(b"www-authenticate", b'Bearer realm="embedrec"')]
    if status in ("REQUEST_TIMEOUT", "PAYLOAD_TOO_LARGE"):
        return [(b"connection", b"close")]  # the rest of the body is not read: end the connection
    return []


def _is_json(content_type: str) -> bool:
    """True for application/json (any parameters) and application/*+json."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _deadline(header: str, default_s: float) -> float:
    """The call's timeout: the client's x-request-timeout (seconds) when valid and shorter than
    the server's `default_s`."""
    try:
        asked = float(header) if header else math.inf
    except ValueError:
        asked = math.inf
    return min(asked, default_s) if asked > 0 else default_s


async def _read_body(scope: dict[str, Any], receive: Receive, limit: int, timeout_s: float) -> bytes:
    """The request body, at most `limit` bytes (413 beyond, before reading it when the client
    declares its length), each piece arriving within `timeout_s` (408 otherwise)."""
    declared = _header(scope["headers"], b"content-length")
    if declared.isdigit() and int(declared) > limit:
        raise _HttpRefusal("PAYLOAD_TOO_LARGE", f"request body of {quoted(declared)} bytes exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                message = await receive()
        except TimeoutError:
            raise _HttpRefusal("REQUEST_TIMEOUT", f"request body stalled for {timeout_s:g} s") from None
        if message["type"] == "http.disconnect":
            raise _HttpRefusal("CANCELLED", "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _HttpRefusal("PAYLOAD_TOO_LARGE", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return ""


async def _send(
    send: Send, body: bytes, status: int, request_id: str, *, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (REQUEST_ID_HEADER, request_id.encode("ascii")),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
