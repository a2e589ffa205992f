"""The HTTP/JSON edge: the real `openai` client against /v1/embeddings, JSON mirrors of the RPCs
equal to gRPC's answers, and every refusal in OpenAI's error shape with the right HTTP status."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import openai
import pytest

from embedrec.client import EmbedrecClient
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server
from tests.support.certificates import make_certificates

TEXTS = ["energy saving air conditioner", "我喜欢喝咖啡", "running shoes, light and fast"]


def http_base(server: ServerThread) -> str:
    return f"http://127.0.0.1:{server.app.http_port}"


def call(
    base: str,
    path: str,
    body: object | bytes | None = None,
    *,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """(status, decoded JSON body, headers) of one HTTP call; POST when there is a body."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers={"content-type": "application/json"})
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read()), dict(error.headers)


_OPENAI_CLIENTS: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_openai_clients() -> Iterator[None]:
    """Close the OpenAI clients a test made (their pooled sockets would otherwise be collected
    open: a ResourceWarning, an error here)."""
    yield
    while _OPENAI_CLIENTS:
        _OPENAI_CLIENTS.pop().close()


def openai_client(server: ServerThread, api_key: str = "unused") -> openai.OpenAI:
    client = openai.OpenAI(base_url=http_base(server) + "/v1", api_key=api_key, max_retries=0, timeout=30)
    _OPENAI_CLIENTS.append(client)
    return client


def model_name(client: EmbedrecClient) -> str:
    return client.info().model_name


def served_model(server: ServerThread) -> str:
    assert server.app.state.service is not None
    return server.app.state.service.models.encoder.manifest.model_name


class TestOpenAIEmbeddings:
    def test_the_openai_client_gets_the_same_vectors_as_grpc_in_both_encodings(
        self, tiny_server: ServerThread, client: EmbedrecClient
    ) -> None:
        expected = client.embed(TEXTS)
        api = openai_client(tiny_server)
        for encoding in ("float", "base64"):
            result = api.embeddings.create(model=model_name(client), input=TEXTS, encoding_format=encoding)
            assert [item.index for item in result.data] == [0, 1, 2]
            rows = [
                np.frombuffer(base64.b64decode(item.embedding), dtype="<f4") if encoding == "base64" else item.embedding
                for item in result.data
            ]
            np.testing.assert_array_equal(np.asarray(rows, dtype=np.float32), expected)  # float32 exactly, both ways
            assert result.model == model_name(client) and result.object == "list"
            assert result.usage.prompt_tokens == result.usage.total_tokens > len(TEXTS)

    def test_the_default_encoding_of_the_openai_client_round_trips(
        self, tiny_server: ServerThread, client: EmbedrecClient
    ) -> None:
        result = openai_client(tiny_server).embeddings.create(model=model_name(client), input="one text")
        np.testing.assert_array_equal(
            np.asarray(result.data[0].embedding, dtype=np.float32), client.embed(["one text"])[0]
        )

    def test_base64_is_little_endian_float32(self, tiny_server: ServerThread, client: EmbedrecClient) -> None:
        body = {"input": TEXTS[0], "model": model_name(client), "encoding_format": "base64"}
        status, answer, _ = call(http_base(tiny_server), "/v1/embeddings", body)
        assert status == 200
        vector = np.frombuffer(base64.b64decode(answer["data"][0]["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(vector, client.embed(TEXTS[:1])[0])

    def test_dimensions_shorten_and_renormalise_like_grpc(
        self, tiny_server: ServerThread, client: EmbedrecClient
    ) -> None:
        full = client.embed(TEXTS, normalize=False)
        result = openai_client(tiny_server).embeddings.create(model=model_name(client), input=TEXTS, dimensions=8)
        short = np.asarray([item.embedding for item in result.data], dtype=np.float32)
        assert short.shape == (3, 8)
        expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
        np.testing.assert_allclose(short, expected, atol=1e-6)
        np.testing.assert_array_equal(short, client.embed(TEXTS, dimensions=8))

    def test_the_short_model_name_is_accepted_and_models_lists_the_served_one(
        self, tiny_server: ServerThread, client: EmbedrecClient
    ) -> None:
        api = openai_client(tiny_server)
        assert [model.id for model in api.models.list()] == [model_name(client)]
        short = model_name(client).rsplit("/", 1)[-1]
        assert len(api.embeddings.create(model=short, input="x").data) == 1

    def test_an_unknown_model_is_404_model_not_found(self, tiny_server: ServerThread) -> None:
        with pytest.raises(openai.NotFoundError) as raised:
            openai_client(tiny_server).embeddings.create(model="text-embedding-3-small", input="x")
        assert "is not served here" in str(raised.value)

    @pytest.mark.parametrize(
        ("body", "named"),
        [
            ({"input": ""}, "texts[0]"),
            ({"input": []}, "input"),
            ({"input": [[1, 2, 3]]}, "token ids"),
            ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
            ({"input": "x", "dimensions": -1}, "dimensions"),
            ({"input": "x", "dimensions": 10_000}, "dimensions"),
            ({"input": "x", "dimensions": "8"}, "dimensions"),
            ({"input": "x", "prompt_name": "query"}, "prompt_name"),
            ({"input": ["x"] * 10_000}, "the limit is 64"),
            ({"input": "x" * 20_000}, "max_chars_per_text"),
        ],
    )
    def test_bad_input_is_400_naming_the_field(
        self, tiny_server: ServerThread, client: EmbedrecClient, body: dict[str, Any], named: str
    ) -> None:
        status, answer, _ = call(http_base(tiny_server), "/v1/embeddings", {"model": model_name(client), **body})
        assert status == 400
        assert named in answer["error"]["message"]
        assert answer["error"]["type"] == "invalid_request_error" and answer["error"]["code"] == "INVALID_ARGUMENT"

    def test_a_missing_model_or_a_body_that_is_not_json_is_400(self, tiny_server: ServerThread) -> None:
        assert call(http_base(tiny_server), "/v1/embeddings", {"input": "x"})[0] == 400
        status, answer, _ = call(http_base(tiny_server), "/v1/embeddings", b"{not json")
        assert status == 400 and "not valid JSON" in answer["error"]["message"]


class TestJsonRoutes:
    def test_embed_mirrors_the_rpc(self, tiny_server: ServerThread, client: EmbedrecClient) -> None:
        status, answer, _ = call(http_base(tiny_server), "/v1/embed", {"texts": TEXTS, "normalize": False})
        assert status == 200
        vectors = np.asarray(answer["values"], dtype=np.float32).reshape(len(TEXTS), answer["dim"])
        np.testing.assert_array_equal(vectors, client.embed(TEXTS, normalize=False))
        assert len(answer["tokenCounts"]) == len(TEXTS)

    def test_similarity_mirrors_the_rpc(self, tiny_server: ServerThread, client: EmbedrecClient) -> None:
        status, answer, _ = call(http_base(tiny_server), "/v1/similarity", {"query": TEXTS[0], "candidates": TEXTS[1:]})
        assert status == 200
        np.testing.assert_array_equal(np.float32(answer["scores"]), client.similarity(TEXTS[0], TEXTS[1:]))

    def test_recommend_mirrors_the_rpc_in_the_proto_json_mapping(
        self, tiny_server: ServerThread, client: EmbedrecClient
    ) -> None:
        body = {"texts": [{"text": "coffee"}], "items": [{"id": "ac-1", "weight": 0.5}], "k": 4, "explain": True}
        status, answer, _ = call(http_base(tiny_server), "/v1/recommend", body)
        assert status == 200
        expected = client.recommend(4, texts=["coffee"], item_ids={"ac-1": 0.5}, explain=True)
        assert [item["id"] for item in answer["items"]] == [r.id for r in expected]
        np.testing.assert_allclose([item["score"] for item in answer["items"]], [r.score for r in expected], rtol=1e-6)
        assert answer["items"][0]["topContribution"]["part"] in ("PROFILE_PART_TEXT", "PROFILE_PART_ITEM")
        for item, mirrored in zip(answer["items"], expected, strict=True):  # an id only for an item part
            top, contribution = item["topContribution"], mirrored.contribution
            assert contribution is not None and top["index"] == contribution.index
            assert top.get("itemId") == contribution.item_id == ("ac-1" if contribution.part == "item" else None)
        # The proto field names are accepted too.
        status, same, _ = call(http_base(tiny_server), "/v1/recommend", {**body, "exclude_ids": ["coffee-1"]})
        assert status == 200 and "coffee-1" not in [item["id"] for item in same["items"]]

    def test_recommend_batch_answers_each_user_in_order(
        self, tiny_server: ServerThread, client: EmbedrecClient
    ) -> None:
        users = [{"texts": [{"text": "coffee"}], "k": 2}, {"texts": [{"text": "shoes"}], "k": 3}]
        status, answer, _ = call(http_base(tiny_server), "/v1/recommend-batch", {"users": users})
        assert status == 200
        assert [len(result["items"]) for result in answer["results"]] == [2, 3]
        assert [item["id"] for item in answer["results"][1]["items"]] == [
            r.id for r in client.recommend(3, texts=["shoes"])
        ]

    def test_info_is_the_rpcs_answer(self, tiny_server: ServerThread, client: EmbedrecClient) -> None:
        status, answer, _ = call(http_base(tiny_server), "/v1/info")
        info = client.info()
        assert status == 200
        assert answer["modelName"] == info.model_name and answer["dim"] == info.dim
        assert int(answer["itemCount"]) == info.item_count  # 64-bit integers are strings in the mapping
        assert answer["maxK"] == info.limits["max_k"]

    @pytest.mark.parametrize(
        ("path", "body", "status", "named"),
        [
            ("/v1/recommend", {"k": 0, "texts": [{"text": "x"}]}, 400, "k"),
            ("/v1/recommend", {"k": 2, "bogus": 1}, 400, "bogus"),
            ("/v1/recommend", {"k": "two"}, 400, "k"),
            ("/v1/recommend", {"k": 2, "items": [{"id": "no-such-item"}]}, 404, "no-such-item"),
            ("/v1/similarity", {"query": "a"}, 400, "candidates"),
            ("/v1/embed", {"texts": ["x"], "pooling": "POOLING_NONSENSE"}, 400, "pooling"),
            ("/v1/embed", [1, 2], 400, "JSON object"),
        ],
    )
    def test_bad_requests_get_their_status_and_name_the_field(
        self, tiny_server: ServerThread, path: str, body: object, status: int, named: str
    ) -> None:
        got, answer, _ = call(http_base(tiny_server), path, body)
        assert got == status
        assert named in answer["error"]["message"]

    def test_unknown_routes_are_404_and_wrong_methods_405(self, tiny_server: ServerThread) -> None:
        assert call(http_base(tiny_server), "/v2/nothing")[0] == 404
        assert call(http_base(tiny_server), "/v1/recommend")[0] == 405  # GET of a POST route
        status, answer, headers = call(http_base(tiny_server), "/v1/info", {})
        assert (status, answer["error"]["code"], headers["allow"]) == (405, "UNIMPLEMENTED", "GET")  # gRPC names only
        plain = call(http_base(tiny_server), "/v1/embed", {"texts": ["x"]}, headers={"content-type": "text/plain"})
        assert (plain[0], plain[1]["error"]["code"]) == (415, "INVALID_ARGUMENT")

    def test_calls_are_counted_with_the_grpc_ones(self, tiny_server: ServerThread, client: EmbedrecClient) -> None:
        before = tiny_server.app.state.calls[("POST /v1/embed", "OK")]
        call(http_base(tiny_server), "/v1/embed", {"texts": ["x"]})
        assert tiny_server.app.state.calls[("POST /v1/embed", "OK")] == before + 1


def test_every_error_code_is_a_grpc_status_name() -> None:
    """`code` is a gRPC status name for every refusal, the ones only HTTP has included (415, 405,
    408, 413, 431: their HTTP status says the rest)."""
    from embedrec.server.edge.http_api import HTTP_STATUS, error_body
    from embedrec.server.edge.http_protocol import REASONS

    statuses = [*HTTP_STATUS, *(code for _, code, _ in REASONS.values())]
    codes = {status: json.loads(error_body(status, "x"))["error"]["code"] for status in statuses}
    assert all(code in grpc.StatusCode.__members__ for code in codes.values()), codes


# Values of the wrong JSON type for any field; none may reach the caller as a parser's internals.
WRONG_VALUES: list[object] = ["three", "3", "NaN", 2.5, 1e30, -1, True, [], {}, [1], {"a": 1}]
INTERNALS = ("int()", "float()", "invalid literal", "Failed to parse", "Couldn't parse", "ParseError", "NoneType")


def wrong_documents(route: str, valid: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """`valid` with each field of the route's message, and of its first list entries, set to
    each of WRONG_VALUES in turn."""
    from embedrec.v1 import embedrec_pb2 as pb

    descriptor = {"/v1/recommend": pb.RecommendRequest, "/v1/embed": pb.EmbedRequest}[route].DESCRIPTOR
    for field in descriptor.fields:
        for value in WRONG_VALUES:
            yield f"{field.name}={value!r}", {**valid, field.json_name: value}
        if field.message_type is not None and field.is_repeated and not field.message_type.GetOptions().map_entry:
            for inner in field.message_type.fields:
                for value in WRONG_VALUES:
                    entry = [{inner.json_name: value}]
                    yield f"{field.name}[0].{inner.name}={value!r}", {**valid, field.json_name: entry}


@pytest.mark.parametrize(
    ("route", "valid"),
    [("/v1/recommend", {"texts": [{"text": "coffee"}], "k": 3}), ("/v1/embed", {"texts": ["coffee"]})],
)
def test_no_wrong_value_gets_a_parsers_internals(tiny_server: ServerThread, route: str, valid: dict[str, Any]) -> None:
    for case, document in wrong_documents(route, valid):
        status, answer, _ = call(http_base(tiny_server), route, document)
        if status == 200:
            continue  # e.g. an empty list, or -1 where any integer will do
        message = answer["error"]["message"]
        assert status in (400, 404) and not any(word in message for word in INTERNALS), (case, status, message)


def test_a_body_over_the_message_limit_is_413(tiny_model_dir: Path, tiny_items_dir: Path) -> None:
    server = start_server(server_settings(tiny_model_dir, tiny_items_dir, max_message_bytes=4096))
    try:
        status, answer, _ = call(http_base(server), "/v1/embeddings", {"model": "x", "input": "y" * 5000})
        assert status == 413 and "4096" in answer["error"]["message"]
        assert server.app.state.calls[("POST /v1/embeddings", "PAYLOAD_TOO_LARGE")] == 1
    finally:
        server.close()


def test_overload_is_429_with_retry_after(tiny_model_dir: Path, tiny_items_dir: Path) -> None:
    server = start_server(server_settings(tiny_model_dir, tiny_items_dir, max_queued_texts=2))
    try:
        with pytest.raises(openai.RateLimitError) as raised:
            openai_client(server).embeddings.create(model=served_model(server), input=["a", "b", "c"])
        assert raised.value.response.headers["retry-after"] == "1"
        assert "max_queued_texts" in str(raised.value)
    finally:
        server.close()


def test_starting_and_draining_are_503_with_retry_after(tiny_model_dir: Path, tiny_items_dir: Path) -> None:
    server = ServerThread(server_settings(tiny_model_dir, tiny_items_dir)).start()
    try:
        status, answer, headers = call(http_base(server), "/v1/embeddings", {"model": "bert", "input": "x"})
        assert status == 503 and headers["retry-after"] == "1" and "starting" in answer["error"]["message"]
        assert call(http_base(server), "/health")[0] == 503
        server.load()
        assert call(http_base(server), "/health")[:2] == (200, {"status": "SERVING"})
        server.app.state.draining = True
        status, answer, _ = call(http_base(server), "/v1/embeddings", {"model": served_model(server), "input": "x"})
        assert status == 503 and "draining" in answer["error"]["message"]
        server.app.state.draining = False
    finally:
        server.close()


def test_http_can_be_turned_off(tiny_model_dir: Path) -> None:
    server = start_server(server_settings(tiny_model_dir, None, http_port=-1))
    try:
        assert server.app.http_port is None
    finally:
        server.close()


@pytest.fixture()
def guarded_server(tiny_model_dir: Path, tiny_items_dir: Path, tmp_path: Path) -> Iterator[ServerThread]:
    (tmp_path / "clients").write_text("client-token\n")
    server = start_server(server_settings(tiny_model_dir, tiny_items_dir, auth_tokens_file=tmp_path / "clients"))
    yield server
    server.close()


def test_bearer_tokens_guard_http_like_grpc(guarded_server: ServerThread) -> None:
    model = served_model(guarded_server)
    with openai_client(guarded_server, api_key="wrong") as refused, pytest.raises(openai.AuthenticationError):
        refused.embeddings.create(model=model, input="x")
    with openai_client(guarded_server, api_key="client-token") as accepted:
        result = accepted.embeddings.create(model=model, input="x")
    assert len(result.data) == 1
    status, answer, _ = call(http_base(guarded_server), "/v1/info")
    assert status == 401 and answer["error"]["code"] == "UNAUTHENTICATED"
    assert call(http_base(guarded_server), "/health")[0] == 200  # exempt, like gRPC health


def test_health_needs_a_token_when_health_is_not_exempt(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "clients").write_text("client-token\n")
    settings = server_settings(tiny_model_dir, None, auth_tokens_file=tmp_path / "clients", auth_exempt_health=False)
    server = start_server(settings)
    try:
        assert call(http_base(server), "/health")[0] == 401
        authorized = {"authorization": "Bearer client-token"}
        assert call(http_base(server), "/health", headers=authorized)[:2] == (200, {"status": "SERVING"})
    finally:
        server.close()


def test_https_with_the_grpc_tls_settings(tiny_model_dir: Path, tmp_path: Path) -> None:
    files = make_certificates(tmp_path)
    server = start_server(
        server_settings(tiny_model_dir, None, tls_cert=files["server.crt"], tls_key=files["server.key"])
    )
    try:
        context = ssl.create_default_context(cafile=str(files["ca.crt"]))
        base = f"https://localhost:{server.app.http_port}"
        body = {"model": served_model(server), "input": "x"}
        status, answer, _ = call(base, "/v1/embeddings", body, context=context)
        assert status == 200 and len(answer["data"]) == 1
        with pytest.raises(OSError):  # plaintext to the TLS port: the connection is refused, not served
            urllib.request.urlopen(f"http://127.0.0.1:{server.app.http_port}/health", timeout=5).read()
    finally:
        server.close()


def test_concurrent_http_and_grpc_calls_share_batches_and_all_succeed(
    tiny_server: ServerThread, client: EmbedrecClient
) -> None:
    expected = client.embed(["shared"])[0]
    api = openai_client(tiny_server)
    failures: list[BaseException] = []

    def http_caller() -> None:
        try:
            for _ in range(10):
                vector = api.embeddings.create(model=served_model(tiny_server), input="shared").data[0].embedding
                np.testing.assert_array_equal(np.float32(vector), expected)
        except BaseException as error:  # noqa: BLE001 (collected for the assertion below)
            failures.append(error)

    threads = [threading.Thread(target=http_caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(10):
        np.testing.assert_array_equal(client.embed(["shared"])[0], expected)
    for thread in threads:
        thread.join(60)
    assert not failures


def test_accepted_connections_have_nagle_off() -> None:
    """A response's head and body are two writes: with Nagle on, the body would wait for the
    client's delayed ACK (+40 ms per call)."""
    import asyncio
    import socket

    from embedrec.server.edge.http_server import _listen

    async def accepted_nodelay() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connection, sock=_listen("127.0.0.1", 0, reuse_port=False))
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        value = await asyncio.wait_for(accepted, 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return value

    assert asyncio.run(accepted_nodelay()) != 0
