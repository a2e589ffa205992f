"""Hostile input never hangs, freezes or floods: every echoed value is capped, limits are checked
before per-element work, and slow or greedy HTTP clients are cut off with a clear answer.

The attack payloads are generated here from the proto's descriptors and the server's limits, so a
new field or route is covered without a new fixture."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from embedrec.client import EmbedrecClient
from embedrec.server.edge.calls import clean_request_id
from embedrec.server.edge.request_limits import request_limits
from embedrec.server.errors import MAX_MESSAGE_CHARS, MAX_QUOTED_CHARS
from embedrec.server.limits import Limits
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, serve_command, start_server
from tests.e2e.test_hardening import call_raw
from tests.e2e.test_http import call, http_base
from tests.support.hostile_cases import (
    ADMIN_REQUESTS,
    DIM,
    GRPC_CASES,
    MEGABYTE_ASCII,
    MEGABYTE_WIDE,
    VALID_REQUESTS,
)

CLIENT_ERRORS = {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}


def test_valid_forms_are_answered_ok(tiny_server: ServerThread) -> None:
    for method, request in VALID_REQUESTS:
        reply = call_raw(tiny_server.target, method, request.SerializeToString())
        assert not isinstance(reply, grpc.RpcError), (method, reply)


@pytest.mark.parametrize(("method", "case_id", "request_bytes"), GRPC_CASES, ids=[case[1] for case in GRPC_CASES])
def test_a_megabyte_in_any_grpc_string_field_is_a_short_client_error(
    tiny_server: ServerThread, method: str, case_id: str, request_bytes: bytes
) -> None:
    service = "EmbedRecAdmin" if method in dict(ADMIN_REQUESTS) else "EmbedRec"
    reply = _call(tiny_server.target, service, method, request_bytes)
    assert isinstance(reply, grpc.RpcError), case_id
    code, details = reply.code().name, reply.details() or ""  # type: ignore[attr-defined]
    assert code in CLIENT_ERRORS, (case_id, code, details[:200])  # never DEADLINE_EXCEEDED: no hang
    assert len(details) <= MAX_MESSAGE_CHARS
    assert "a" * (MAX_QUOTED_CHARS + 1) not in details and "界" * (MAX_QUOTED_CHARS + 1) not in details


def _call(target: str, service: str, method: str, request_bytes: bytes) -> grpc.RpcError | bytes:
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = channel.unary_unary(f"/embedrec.v1.{service}/{method}", request_serializer=None)
        try:
            return stub(request_bytes, timeout=30)  # type: ignore[no-any-return]
        except grpc.RpcError as error:
            return error


JSON_ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/embeddings", {"model": "MODEL", "input": ["hello"], "encoding_format": "float", "prompt_name": ""}),
    ("/v1/embed", {"texts": ["hello"], "promptName": ""}),
    ("/v1/similarity", {"query": "a", "candidates": ["b"]}),
    ("/v1/similarity", {"pairs": [{"a": "a", "b": "b"}]}),
    (
        "/v1/recommend",
        {
            "k": 3,
            "texts": [{"text": "air"}],
            "items": [{"id": "ac-1"}],
            "excludeIds": ["ac-2"],
            "where": [{"field": "category", "anyOf": ["appliances"]}],
            "diversity": {"field": "category", "maxPerValue": 2},
            "strategy": "STRATEGY_AVERAGE_VECTOR",
        },
    ),
    ("/v1/recommend-batch", {"users": [{"k": 3, "texts": [{"text": "air"}], "filterValues": ["appliances"]}]}),
]


def json_string_variants(document: Any) -> Iterator[tuple[str, Any]]:
    """(path, document with one string, key or enum made 1 MB) for every string and key."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield f"key:{key}", {**{k: v for k, v in document.items() if k != key}, MEGABYTE_WIDE: value}
            for path, changed in json_string_variants(value):
                yield f"{key}.{path}", {**document, key: changed}
            if isinstance(value, str):
                for kind, text in (("ascii", MEGABYTE_ASCII), ("wide", MEGABYTE_WIDE)):
                    yield f"{key}:{kind}", {**document, key: text}
    elif isinstance(document, list) and document:
        for path, changed in json_string_variants(document[0]):
            yield f"[0].{path}", [changed, *document[1:]]
        if isinstance(document[0], str):
            yield "[0]:wide", [MEGABYTE_WIDE, *document[1:]]


HTTP_CASES = [
    (route, f"{route} {path}", variant)
    for route, document in JSON_ROUTES
    for path, variant in json_string_variants(document)
]


@pytest.mark.parametrize(("route", "case_id", "document"), HTTP_CASES, ids=[case[1] for case in HTTP_CASES])
def test_a_megabyte_in_any_json_string_or_key_is_a_short_400(
    tiny_server: ServerThread, client: EmbedrecClient, route: str, case_id: str, document: Any
) -> None:
    if route == "/v1/embeddings" and document.get("model") == "MODEL":
        document = {**document, "model": client.info().model_name}
    status, answer, _ = call(http_base(tiny_server), route, json.dumps(document, ensure_ascii=False).encode())
    if route == "/v1/embeddings" and "key:" in case_id and "key:model" not in case_id and "key:input" not in case_id:
        assert status == 200  # like OpenAI's optional parameters, unknown ones are ignored: nothing echoed
    else:
        assert 400 <= status < 500, (case_id, status)
    assert len(json.dumps(answer, ensure_ascii=False)) < MAX_MESSAGE_CHARS + 200


def test_json_parser_and_schema_errors_quote_little(tiny_server: ServerThread) -> None:
    base = http_base(tiny_server)
    for route, document in [
        ("/v1/embeddings", {"model": "x", "input": "hi", "dimensions": list(range(400_000))}),
        ("/v1/embeddings", {"model": "\u0085" * 1_000_000, "input": "hi"}),
        ("/v1/recommend", {"k": 3, "strategy": "S" * 1_000_000, "texts": [{"text": "x"}]}),
        ("/v1/recommend", {"k": 3, "pooling": 1, "texts": [{"text": "x"}]}),
    ]:
        status, answer, _ = call(base, route, json.dumps(document, ensure_ascii=False).encode())
        assert status in (400, 404), route
        assert len(answer["error"]["message"]) <= MAX_MESSAGE_CHARS


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "body",
    [
        f'{{"model": {nested(1000)}, "input": "x"}}',
        f'{{"texts": [{nested(1000)}]}}',
        f'{{"k": 3, "where": [{nested(1000)}]}}',
        f'{{"users": {nested(1000)}}}',
        f'{{"k": 3, "texts": [{{"text": {nested(40)}}}]}}',
    ],
    ids=["model", "texts", "where", "users", "shallow-but-wrong-type"],
)
def test_deeply_nested_json_is_400(tiny_server: ServerThread, body: str) -> None:
    route = "/v1/embeddings" if "model" in body else "/v1/recommend-batch" if "users" in body else "/v1/recommend"
    if 'texts": [[' in body:
        route = "/v1/embed"
    status, answer, _ = call(http_base(tiny_server), route, body.encode())
    assert status == 400, answer
    assert answer["error"]["code"] == "INVALID_ARGUMENT"


# --- limits before per-element work ------------------------------------------------------------

LIMITS = Limits()
TABLE = request_limits(LIMITS, DIM)


def worst_inputs(dim: int) -> list[tuple[str, str, bytes]]:
    """(transport, route or method, body) of the attacks of the hostile-input report, generated,
    each just under the 4 MiB message limit: millions of empty users, long arrays in every
    repeated field, a million conditions, JSON nested 1,000 deep."""
    budget = 4 * 1024 * 1024 - 64
    attacks: list[tuple[str, str, bytes]] = [
        ("grpc", "RecommendBatch", b"\x0a\x00" * (budget // 2)),
        ("http", "/v1/recommend-batch", b'{"users":[' + b",".join([b"{}"] * (budget // 3)) + b"]}"),
        ("http", "/v1/recommend", b'{"k":3,"where":[' + b",".join([b"{}"] * (budget // 3)) + b"]}"),
        ("http", "/v1/recommend", b'{"k":3,"userVector":[' + b",".join([b"1"] * (budget // 2)) + b"]}"),
        ("http", "/v1/recommend", b'{"k":3,"excludeIds":[' + b",".join([b'"i"'] * (budget // 4)) + b"]}"),
        ("http", "/v1/similarity", b'{"pairs":[' + b",".join([b"{}"] * (budget // 3)) + b"]}"),
        ("http", "/v1/embed", b'{"texts":[' + b",".join([b'"t"'] * (budget // 4)) + b"]}"),
        ("http", "/v1/embeddings", b'{"model":"m","input":[' + b",".join([b'"t"'] * (budget // 4)) + b"]}"),
        ("http", "/v1/recommend", b'{"k":3,"texts":' + b"[" * 1000 + b"]" * 1000 + b"}"),
    ]
    for name, field in (("exclude_ids", 5), ("where", 13), ("user_vector", 1)):
        record = bytes([field << 3 | 2]) + b"\x01" + (b"i" if name == "exclude_ids" else b"\x00")
        if name == "user_vector":
            record = bytes([field << 3 | 5]) + b"\x00\x00\x80\x3f"  # unpacked floats, one record each
        attacks.append(("grpc", "Recommend", record * (budget // len(record))))
    return attacks


def test_worst_inputs_are_refused_while_health_and_info_keep_answering(tiny_server: ServerThread) -> None:
    """Each attack is refused with a client error; meanwhile Info (gRPC) and /health (HTTP) keep
    answering. Probes carry a 1 s deadline (a frozen loop fails them) and most must answer within
    100 ms (a median, not a single sample: these machines are shared and noisy)."""
    base = http_base(tiny_server)
    stop = threading.Event()
    latencies: list[float] = []
    failures: list[str] = []

    def probe() -> None:
        with EmbedrecClient(tiny_server.target, timeout=1.0) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    client.info()
                    with urllib.request.urlopen(base + "/health", timeout=1.0) as response:
                        assert response.status == 200
                except Exception as error:  # noqa: BLE001
                    failures.append(repr(error))
                latencies.append(time.perf_counter() - started)
                time.sleep(0.01)

    def attack(transport: str, route: str, body: bytes) -> str:
        if transport == "grpc":
            reply = _call(tiny_server.target, "EmbedRec", route, body)
            return reply.code().name if isinstance(reply, grpc.RpcError) else "OK"  # type: ignore[attr-defined]
        request = urllib.request.Request(base + route, data=body, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return str(response.status)
        except urllib.error.HTTPError as error:
            with error:
                return str(error.code)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        time.sleep(0.2)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(lambda args: attack(*args), worst_inputs(DIM)))
    finally:
        stop.set()
        prober.join()
    assert set(outcomes) <= {"INVALID_ARGUMENT", "400"}, outcomes
    assert not failures, failures[:3]
    assert statistics.median(latencies) < 0.1, sorted(latencies)[-5:]


# --- vectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e18, 1e-20, 3e38])
def test_user_vectors_of_any_finite_scale_rank_like_their_direction(client: EmbedrecClient, scale: float) -> None:
    direction = np.linspace(-1.0, 1.0, DIM, dtype=np.float32)
    expected = client.recommend(k=5, vector=direction)
    assert [item.id for item in client.recommend(k=5, vector=direction * np.float32(scale))] == [
        item.id for item in expected
    ]
    found = client.recommend(k=5, vector=direction * np.float32(scale), strategy="best_score")
    assert [item.id for item in found] == [
        item.id for item in client.recommend(k=5, vector=direction, strategy="best_score")
    ]
    assert np.allclose([item.score for item in found], [item.score for item in expected], atol=1e-5)


# --- the HTTP connection under abuse ------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_server(tiny_model_dir: Path, tiny_items_dir: Path) -> Iterator[ServerThread]:
    """A server with short HTTP timeouts and a small connection cap, so the tests are quick."""
    server = start_server(
        server_settings(
            tiny_model_dir,
            tiny_items_dir,
            http_header_timeout_s=0.5,
            http_body_timeout_s=0.5,
            http_max_connections=8,
            http_max_header_bytes=4096,
        )
    )
    yield server
    server.close()


def connect(server: ServerThread) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.app.http_port), timeout=10)


def read_all(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def refused_count(server: ServerThread, reason: str) -> float:
    metric = server.app.metrics.http_connections_refused.labels(reason=reason)
    return float(metric._value.get())


def test_a_silent_connection_is_closed_after_the_head_timeout(strict_server: ServerThread) -> None:
    before = refused_count(strict_server, "header_timeout")
    with connect(strict_server) as connection:
        assert read_all(connection) == b""  # closed, nothing said to a client that said nothing
    assert refused_count(strict_server, "header_timeout") == before + 1


def test_a_head_stalled_midway_gets_408_and_is_closed(strict_server: ServerThread) -> None:
    with connect(strict_server) as connection:
        connection.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        reply = read_all(connection)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"DEADLINE_EXCEEDED"' in reply  # a gRPC status name; the HTTP status says 408


def test_an_oversized_head_gets_431_without_waiting_for_its_end(strict_server: ServerThread) -> None:
    with connect(strict_server) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000)
        reply = read_all(connection)  # the head never ends: the answer comes from its size alone
    assert reply.startswith(b"HTTP/1.1 431 ")


def test_a_body_stalled_midway_gets_408(strict_server: ServerThread) -> None:
    with connect(strict_server) as connection:
        connection.sendall(
            b"POST /v1/embed HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"
        )
        reply = read_all(connection)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert b"stalled" in reply


def test_at_the_cap_the_longest_waiting_connection_makes_room_for_a_new_one(strict_server: ServerThread) -> None:
    before = refused_count(strict_server, "evicted")
    held = [connect(strict_server) for _ in range(8)]  # silent: all waiting for a head
    try:
        time.sleep(0.1)
        held[1].sendall(b"GET /health HT")  # a head begun, not finished: still waiting
        status, _, _ = call(http_base(strict_server), "/health")  # one past the cap: served
        assert status == 200
        assert read_all(held[0]) == b""  # the longest waiting was closed to make room
        assert refused_count(strict_server, "evicted") >= before + 1
    finally:
        for connection in held:
            connection.close()


def test_past_the_cap_with_every_connection_past_its_head_the_new_one_gets_503(strict_server: ServerThread) -> None:
    head = b"POST /v1/embed HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"
    held = [connect(strict_server) for _ in range(8)]
    try:
        for connection in held:
            connection.sendall(head)  # heads complete, bodies stalled: nobody to evict
        time.sleep(0.1)
        with connect(strict_server) as extra:
            reply = read_all(extra)
        assert reply.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 1" in reply.lower()
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.2)
    status, _, _ = call(http_base(strict_server), "/health")
    assert status == 200


def test_malformed_requests_get_400_without_a_log_line_each(
    strict_server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            with connect(strict_server) as connection:
                connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                assert read_all(connection).startswith(b"HTTP/1.1 400 ")
    assert not [record for record in caplog.records if "Invalid HTTP" in record.getMessage()]


def test_post_bodies_must_be_json(tiny_server: ServerThread) -> None:
    request = urllib.request.Request(
        http_base(tiny_server) + "/v1/embed", data=b'{"texts":["x"]}', headers={"content-type": "text/plain"}
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    with raised.value as error:
        assert error.code == 415
    status, _, _ = call(
        http_base(tiny_server),
        "/v1/embed",
        b'{"texts":["x"]}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert status == 200


def test_405_names_the_allowed_method(tiny_server: ServerThread) -> None:
    status, _answer, headers = call(http_base(tiny_server), "/v1/info", b"{}")
    assert status == 405
    assert {key.lower(): value for key, value in headers.items()}["allow"] == "GET"


def test_an_http_call_past_its_deadline_is_504(tiny_model_dir: Path, tiny_items_dir: Path) -> None:
    from tests.e2e.test_hardening import GatedInference

    server = start_server(server_settings(tiny_model_dir, tiny_items_dir))
    try:
        gated = GatedInference(server)
        status, answer, _ = call(
            http_base(server), "/v1/embed", {"texts": ["waits"]}, headers={"x-request-timeout": "0.3"}
        )
        gated.gate.set()
        assert status == 504
        assert answer["error"]["code"] == "DEADLINE_EXCEEDED"
        assert call(http_base(server), "/v1/embed", {"texts": ["fine"]})[0] == 200
    finally:
        server.close()


# --- auth, request ids, ports ------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_server(tiny_model_dir: Path, tiny_items_dir: Path) -> Iterator[ServerThread]:
    server = start_server(server_settings(tiny_model_dir, tiny_items_dir, auth_tokens="client-secret", access_log=True))
    yield server
    server.close()


def test_the_bearer_scheme_is_case_insensitive(token_server: ServerThread) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        status, _, _ = call(http_base(token_server), "/v1/info", headers={"authorization": f"{scheme} client-secret"})
        assert status == 200
        with grpc.insecure_channel(token_server.target) as channel:
            stub = channel.unary_unary("/embedrec.v1.EmbedRec/Info", request_serializer=None)
            stub(b"", timeout=10, metadata=(("authorization", f"{scheme} client-secret"),))


def test_401_says_how_to_authenticate(token_server: ServerThread) -> None:
    status, _, headers = call(http_base(token_server), "/v1/info")
    assert status == 401
    assert {key.lower(): value for key, value in headers.items()}["www-authenticate"].startswith("Bearer")


def test_grpc_refusals_by_the_token_check_are_counted_and_logged(
    token_server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    counter = token_server.app.metrics.requests.labels(rpc="Info", code="UNAUTHENTICATED")
    before = counter._value.get()
    with caplog.at_level(logging.INFO), grpc.insecure_channel(token_server.target) as channel:
        stub = channel.unary_unary("/embedrec.v1.EmbedRec/Info", request_serializer=None)
        with pytest.raises(grpc.RpcError) as raised:
            stub(b"", timeout=10, metadata=(("x-request-id", "denied-1"),))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert counter._value.get() == before + 1
    assert any(getattr(record, "request_id", "") == "denied-1" for record in caplog.records)


def test_request_ids_cannot_forge_log_fields(token_server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    forged = "abc code=OK\nrpc=Forged x" + "y" * 200
    with caplog.at_level(logging.INFO):
        call(
            http_base(token_server),
            "/v1/info",
            headers={"authorization": "Bearer client-secret", "x-request-id": forged.replace("\n", " ")},
        )
    ids = [getattr(record, "request_id", None) for record in caplog.records if getattr(record, "rpc", None)]
    assert ids and all(i is not None and " " not in i and "=" not in i and len(i) <= 64 for i in ids)
    assert clean_request_id(forged) == clean_request_id(forged)[:64]
    assert "\n" not in clean_request_id(forged)


@pytest.mark.parametrize("flag", ["--http-port", "--metrics-port", "--port"])
def test_a_taken_port_is_one_line_and_exit_2(tiny_model_dir: Path, flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        ports = {"--port": "0", "--http-port": "0", "--metrics-port": "0", flag: port}
        command = serve_command(tiny_model_dir, "--provider", "cpu")
        for name, value in ports.items():
            command += [name, value]
        finished = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert finished.returncode == 2, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr
    assert flag in finished.stderr and port in finished.stderr


def test_a_client_still_sending_an_oversized_body_reads_the_413_not_a_reset(tiny_server: ServerThread) -> None:
    """The answer comes before the body is read (its declared length is over the limit); the
    server then reads and drops the rest before closing, so the client sees the 413."""
    body = b"x" * (5 * 1024 * 1024)
    head = (
        b"POST /v1/embed HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with connect(tiny_server) as connection:
        connection.sendall(head + body)  # a reset here, or below, is what lingering prevents
        reply = read_all(connection)
    assert reply.startswith(b"HTTP/1.1 413 ")
