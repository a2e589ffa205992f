"""Every dialect through the real client libraries from PyPI, each pointed at one real server (a
tiny BERT, its items and a tiny cross-encoder) by its documented base-URL setting: huggingface_hub,
llama-index's TEI embeddings, cohere (v1 and v2 clients), langchain-cohere, langchain-openai,
infinity-client. Vectors must equal gRPC Embed's and rerank orders the Rerank RPC's."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from embedrec.client import EmbedrecClient
from embedrec.server.errors import MAX_MESSAGE_CHARS
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server
from tests.e2e.test_hostile_input import json_string_variants

TEXTS = ["energy saving air conditioner", "我喜欢喝咖啡", "running shoes, light and fast"]
QUERY = "shoes for running"
DOCUMENTS = ["red running shoes", "coffee and tea", "a quiet air conditioner", "light shoes for the road"]


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tiny_items_dir: Path, tiny_reranker_dir: Path) -> Iterator[ServerThread]:
    started = start_server(server_settings(tiny_model_dir, tiny_items_dir, model=(f"ranker={tiny_reranker_dir}",)))
    yield started
    started.close()


@pytest.fixture(scope="module")
def grpc_client(server: ServerThread) -> Iterator[EmbedrecClient]:
    with EmbedrecClient(server.target, timeout=30) as connected:
        yield connected


def base(server: ServerThread) -> str:
    return f"http://127.0.0.1:{server.app.http_port}"


def model_of(server: ServerThread) -> str:
    assert server.app.state.service is not None
    return server.app.state.service.models.encoder.manifest.model_name


def post(server: ServerThread, path: str, body: object) -> tuple[int, Any]:
    request = urllib.request.Request(
        base(server) + path,
        data=json.dumps(body, ensure_ascii=False).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def assert_same_vectors(got: object, expected: np.ndarray) -> None:
    rows = np.asarray(got, dtype=np.float32).reshape(expected.shape)
    cosines = np.sum(rows * expected, axis=1) / (np.linalg.norm(rows, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosines.min() >= 0.9999
    np.testing.assert_allclose(rows, expected, atol=1e-6)


@pytest.fixture()
def http_client() -> Iterator[httpx.Client]:
    """The HTTP client a library under test is handed, closed after the test (the cohere SDK does
    not close the one it makes itself)."""
    with httpx.Client(timeout=30) as client:
        yield client


def rerank_order(client: EmbedrecClient, top_n: int | None = None) -> list[int]:
    return [hit.index for hit in client.rerank(QUERY, DOCUMENTS, top_n=top_n)]


class TestTei:
    def test_huggingface_hub_feature_extraction_posts_to_the_base_url(
        self, server: ServerThread, grpc_client: EmbedrecClient
    ) -> None:
        from huggingface_hub import InferenceClient

        client = InferenceClient(base_url=base(server), timeout=30)
        vector = client.feature_extraction(TEXTS[0])
        assert_same_vectors(vector, grpc_client.embed(TEXTS[:1]))
        left = client.feature_extraction(TEXTS[2], truncate=True, truncation_direction="Left", normalize=False)
        assert_same_vectors(left, grpc_client.embed(TEXTS[2:], normalize=False))

    def test_llama_index_tei_embeddings(self, server: ServerThread, grpc_client: EmbedrecClient) -> None:
        from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

        embedder = TextEmbeddingsInference(model_name=model_of(server), base_url=base(server), timeout=30)
        assert_same_vectors(embedder.get_text_embedding_batch(TEXTS), grpc_client.embed(TEXTS))
        assert_same_vectors([embedder.get_query_embedding(QUERY)], grpc_client.embed([QUERY]))

    def test_embed_takes_teis_fields_and_answers_nested_arrays(
        self, server: ServerThread, grpc_client: EmbedrecClient
    ) -> None:
        body = {"inputs": TEXTS, "normalize": False, "dimensions": 8, "truncate": None, "prompt_name": None}
        status, answer = post(server, "/embed", body)
        assert status == 200 and isinstance(answer[0], list)
        assert_same_vectors(answer, grpc_client.embed(TEXTS, normalize=False, dimensions=8))

    def test_left_truncation_keeps_the_end_of_a_long_text(
        self, server: ServerThread, grpc_client: EmbedrecClient
    ) -> None:
        long_text = "coffee " * 200 + "running shoes"
        _, right = post(server, "/embed", {"inputs": long_text})
        _, left = post(server, "/embed", {"inputs": long_text, "truncation_direction": "Left"})
        assert_same_vectors(right, grpc_client.embed([long_text]))
        assert not np.allclose(left, right, atol=1e-3)
        assert post(server, "/embed", {"inputs": long_text, "truncate": False})[0] == 422

    def test_tokenize_answers_ids_and_byte_offsets(self, server: ServerThread) -> None:
        status, answer = post(server, "/tokenize", {"inputs": ["héllo coffee"]})
        assert status == 200 and len(answer) == 1
        tokens = answer[0]
        assert tokens[0]["special"] and tokens[0]["start"] is None and tokens[-1]["special"]
        text = "héllo coffee".encode()
        for token in tokens[1:-1]:
            assert not token["special"]
            assert text[token["start"] : token["stop"]].decode() == token["text"]
        _, bare = post(server, "/tokenize", {"inputs": "coffee", "add_special_tokens": False})
        assert not any(token["special"] for token in bare[0])

    def test_info_and_root(self, server: ServerThread, grpc_client: EmbedrecClient) -> None:
        with urllib.request.urlopen(base(server) + "/info", timeout=30) as response:
            info = json.loads(response.read())
        assert info["model_id"] == model_of(server) and info["max_input_length"] == grpc_client.info().max_length
        assert info["model_type"] == {"embedding": {"pooling": grpc_client.info().pooling}}
        with urllib.request.urlopen(base(server) + "/", timeout=30) as response:
            assert response.status == 200  # GET /: TEI's health route
        status, answer = post(server, "/", {"inputs": TEXTS[1]})
        assert status == 200
        assert_same_vectors(answer, grpc_client.embed(TEXTS[1:2]))

    @pytest.mark.parametrize(
        ("path", "body", "status", "named"),
        [
            ("/embed", {"inputs": []}, 422, "inputs"),
            ("/embed", {"inputs": [[101, 102]]}, 422, "token ids"),
            ("/embed", {"inputs": "x", "truncation_direction": "Up"}, 422, "truncation_direction"),
            ("/embed", {"inputs": "x", "normalize": "yes"}, 422, "normalize"),
            ("/embed", {"inputs": ["x"] * 1000}, 422, "limit"),
            ("/tokenize", {"inputs": 3}, 422, "inputs"),
            ("/rerank", {"query": "q"}, 422, "texts"),
        ],
    )
    def test_bad_input_is_teis_error_shape(
        self, server: ServerThread, path: str, body: object, status: int, named: str
    ) -> None:
        got, answer = post(server, path, body)
        assert got == status
        assert named in answer["error"] and answer["error_type"] == "Validation"


class TestCohere:
    def test_the_v1_client_reranks_like_the_rpc(
        self, server: ServerThread, grpc_client: EmbedrecClient, http_client: httpx.Client
    ) -> None:
        import cohere

        client = cohere.Client(api_key="unused", base_url=base(server), httpx_client=http_client)
        result = client.rerank(query=QUERY, documents=DOCUMENTS, model="ranker", top_n=3)
        assert [hit.index for hit in result.results] == rerank_order(grpc_client, 3)

    def test_the_v2_client_reranks_like_the_rpc(
        self, server: ServerThread, grpc_client: EmbedrecClient, http_client: httpx.Client
    ) -> None:
        import cohere

        client = cohere.ClientV2(api_key="unused", base_url=base(server), httpx_client=http_client)
        result = client.rerank(model="ranker", query=QUERY, documents=DOCUMENTS)
        assert [hit.index for hit in result.results] == rerank_order(grpc_client)
        scores = [hit.relevance_score for hit in result.results]
        expected = [hit.score for hit in grpc_client.rerank(QUERY, DOCUMENTS)]
        np.testing.assert_allclose(scores, expected, rtol=1e-6)

    def test_max_tokens_per_doc_cuts_the_documents(
        self, server: ServerThread, grpc_client: EmbedrecClient, http_client: httpx.Client
    ) -> None:
        import cohere

        client = cohere.ClientV2(api_key="unused", base_url=base(server), httpx_client=http_client)
        long_documents = [document + " and more" * 30 for document in DOCUMENTS]
        cut = client.rerank(model="ranker", query=QUERY, documents=long_documents, max_tokens_per_doc=3)
        first_words = [" ".join(document.split()[:3]) for document in long_documents]
        expected = grpc_client.rerank(QUERY, first_words)
        by_index = {hit.index: hit.relevance_score for hit in cut.results}
        np.testing.assert_allclose(
            [by_index[hit.index] for hit in expected], [hit.score for hit in expected], rtol=1e-5
        )

    def test_langchain_cohere_rerank(
        self, server: ServerThread, grpc_client: EmbedrecClient, http_client: httpx.Client
    ) -> None:
        import cohere
        from langchain_cohere import CohereRerank

        client = cohere.ClientV2(api_key="unused", base_url=base(server), httpx_client=http_client)
        reranker = CohereRerank(client=client, model="ranker", top_n=2, cohere_api_key="unused")
        found = reranker.rerank(DOCUMENTS, QUERY)
        assert [hit["index"] for hit in found] == rerank_order(grpc_client, 2)

    def test_v2_embed_in_every_embedding_type(
        self, server: ServerThread, grpc_client: EmbedrecClient, http_client: httpx.Client
    ) -> None:
        import cohere
        from sentence_transformers.util.quantization import quantize_embeddings

        client = cohere.ClientV2(api_key="unused", base_url=base(server), httpx_client=http_client)
        types = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
        result = client.embed(texts=TEXTS, model=model_of(server), input_type="search_document", embedding_types=types)
        expected = grpc_client.embed(TEXTS)
        embeddings = result.embeddings
        assert_same_vectors(embeddings.float_, expected)
        floats = [np.frombuffer(base64.b64decode(row), dtype="<f4") for row in embeddings.base64 or []]
        assert_same_vectors(floats, expected)
        int8 = np.asarray(embeddings.int8)
        np.testing.assert_array_equal(int8, np.rint(127 * expected / np.abs(expected).max(axis=1, keepdims=True)))
        np.testing.assert_array_equal(np.asarray(embeddings.uint8), int8 + 128)
        np.testing.assert_array_equal(np.asarray(embeddings.ubinary), quantize_embeddings(expected, "ubinary"))
        np.testing.assert_array_equal(np.asarray(embeddings.binary), quantize_embeddings(expected, "binary"))
        cosines = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(int8, expected, strict=True)]
        assert min(cosines) > 0.999

    def test_v2_embed_output_dimension_and_truncate(
        self, server: ServerThread, grpc_client: EmbedrecClient, http_client: httpx.Client
    ) -> None:
        import cohere

        client = cohere.ClientV2(api_key="unused", base_url=base(server), httpx_client=http_client)
        short = client.embed(texts=TEXTS, model=model_of(server), input_type="search_query", output_dimension=8)
        assert_same_vectors(short.embeddings.float_, grpc_client.embed(TEXTS, dimensions=8))
        with pytest.raises(cohere.BadRequestError, match="truncate is false"):
            client.embed(texts=["coffee " * 300], model=model_of(server), input_type="search_query", truncate="NONE")

    @pytest.mark.parametrize(
        ("path", "body", "status", "named"),
        [
            ("/v2/embed", {"texts": "x"}, 400, "texts"),
            ("/v2/embed", {"texts": ["x"], "embedding_types": ["float16"]}, 400, "embedding_types"),
            ("/v2/embed", {"texts": ["x"], "input_type": "image"}, 400, "input_type"),
            ("/v2/embed", {"texts": ["x"], "truncate": "MIDDLE"}, 400, "truncate"),
            ("/v2/embed", {"texts": ["x"], "model": "embed-v4.0"}, 404, "embed-v4.0"),
            ("/v2/rerank", {"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}, 400, "max_tokens_per_doc"),
            ("/v2/rerank", {"query": "q", "documents": ["a"], "model": "nope"}, 404, "nope"),
        ],
    )
    def test_bad_input_is_cohere_error_shape(
        self, server: ServerThread, path: str, body: object, status: int, named: str
    ) -> None:
        got, answer = post(server, path, body)
        assert got == status and named in answer["message"]


class TestOpenAIDialectClients:
    def test_langchain_openai_with_text_inputs(self, server: ServerThread, grpc_client: EmbedrecClient) -> None:
        from langchain_openai import OpenAIEmbeddings

        embeddings = OpenAIEmbeddings(
            model=model_of(server),
            base_url=base(server) + "/v1",
            api_key="unused",  # type: ignore[arg-type]
            check_embedding_ctx_length=False,
            max_retries=0,
        )
        assert_same_vectors(embeddings.embed_documents(TEXTS), grpc_client.embed(TEXTS))

    def test_token_id_inputs_are_refused_saying_how_to_send_text(self, server: ServerThread) -> None:
        client = openai.OpenAI(base_url=base(server) + "/v1", api_key="unused", max_retries=0, timeout=30)
        with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length=False"):
            client.embeddings.create(model=model_of(server), input=[[101, 2000, 102]])

    def test_infinity_client(self, server: ServerThread, grpc_client: EmbedrecClient) -> None:
        from infinity_client import Client
        from infinity_client.api.default import embeddings
        from infinity_client.models import OpenAIEmbeddingInputText

        with Client(base_url=base(server) + "/v1") as client:
            body = OpenAIEmbeddingInputText(input_=TEXTS, model=model_of(server))  # dimensions 0 by default
            result = embeddings.sync(client=client, body=body)
        assert result is not None and not isinstance(result, dict)
        assert_same_vectors([row.embedding for row in result.data], grpc_client.embed(TEXTS))  # type: ignore[union-attr]

    def test_explicit_nulls_mean_unset(self, server: ServerThread, grpc_client: EmbedrecClient) -> None:
        body = {"model": model_of(server), "input": TEXTS, "encoding_format": None, "dimensions": None, "user": None}
        status, answer = post(server, "/v1/embeddings", body)
        assert status == 200
        assert_same_vectors([row["embedding"] for row in answer["data"]], grpc_client.embed(TEXTS))
        status, answer = post(server, "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS, "top_n": None})
        assert status == 200 and all("document" not in hit for hit in answer["results"])  # omitted, not null


class TestOpenApi:
    def document(self, server: ServerThread) -> dict[str, Any]:
        with urllib.request.urlopen(base(server) + "/openapi.json", timeout=30) as response:
            document: dict[str, Any] = json.loads(response.read())
        return document

    def test_the_document_is_valid_openapi_3_1_and_covers_the_route_table(self, server: ServerThread) -> None:
        from openapi_spec_validator import validate

        from embedrec.server.edge.http_routes import ROUTES

        document = self.document(server)
        validate(document)
        assert document["openapi"].startswith("3.1")
        described = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
        served = {(path, method) for path, methods in ROUTES.items() for method in methods}
        assert described == served
        assert ("/v2/embed", "POST") in served and ("/embed", "POST") in served and ("/", "GET") in served

    def test_every_route_in_it_is_answered_and_every_example_as_described(self, server: ServerThread) -> None:
        import jsonschema

        document = self.document(server)
        components = document["components"]
        for path, item in document["paths"].items():
            for method, operation in item.items():
                content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
                if method == "post" and "example" not in content:
                    pytest.fail(f"POST {path} has no example")
                if method == "post":
                    jsonschema.validate({**content["schema"], "components": components}, content["example"])  # type: ignore[no-untyped-call]
                    status, answer = post(server, path, content["example"])
                else:
                    with urllib.request.urlopen(base(server) + path, timeout=30) as response:
                        status, answer = response.status, json.loads(response.read())
                assert status == 200, (method, path, answer)
                schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
                jsonschema.validate(answer, {**schema, "components": components})  # type: ignore[no-untyped-call]

    def test_an_error_is_described_in_its_routes_dialect(self, server: ServerThread) -> None:
        import jsonschema

        document = self.document(server)
        components = document["components"]
        for path, body in (("/embed", {"inputs": []}), ("/v2/embed", {}), ("/v1/embeddings", {})):
            status, answer = post(server, path, body)
            schema = document["paths"][path]["post"]["responses"][str(status)]["content"]["application/json"]["schema"]
            jsonschema.validate(answer, {**schema, "components": components})  # type: ignore[no-untyped-call]


class TestEchoAndCodes:
    def test_recommend_echoes_at_most_32_unknown_ids_on_both_edges(
        self, server: ServerThread, grpc_client: EmbedrecClient
    ) -> None:
        unknown = [f"gone-{index}-" + "x" * 1000 for index in range(200)]
        history = [{"id": item_id} for item_id in ["ac-1", *unknown]]
        body = {"k": 2, "items": history, "ignoreUnknownItems": True}
        status, answer = post(server, "/v1/recommend", body)
        assert status == 200 and answer["unknownItemCount"] == 200
        assert answer["unknownItemIds"] == unknown[:16]  # the 16 KiB budget ends the list first
        found = grpc_client.recommend(2, item_ids=["ac-1", *unknown], ignore_unknown_items=True)
        assert found.unknown_item_ids == unknown[:16] and found.unknown_item_count == 200
        short = [f"gone-{index}" for index in range(100)]
        found = grpc_client.recommend(2, item_ids=["ac-1", *short], ignore_unknown_items=True)
        assert found.unknown_item_ids == short[:32] and found.unknown_item_count == 100

    def test_grpc_embed_answers_codes_by_the_stated_rules(self, server: ServerThread) -> None:
        import grpc
        from sentence_transformers.util.quantization import quantize_embeddings

        from embedrec.v1 import embedrec_pb2 as pb
        from embedrec.v1 import embedrec_pb2_grpc

        with grpc.insecure_channel(server.target) as channel:
            stub = embedrec_pb2_grpc.EmbedRecStub(channel)
            floats = stub.Embed(pb.EmbedRequest(texts=TEXTS), timeout=30)
            expected = np.asarray(floats.values, dtype=np.float32).reshape(len(TEXTS), floats.dim)
            for kind, dtype in (("INT8", np.int8), ("UINT8", np.uint8), ("BINARY", np.int8), ("UBINARY", np.uint8)):
                response = stub.Embed(
                    pb.EmbedRequest(texts=TEXTS, embedding_type=getattr(pb, f"EMBEDDING_TYPE_{kind}")), timeout=30
                )
                assert not response.values and response.dim == floats.dim
                codes = np.frombuffer(response.codes, dtype=dtype).reshape(len(TEXTS), response.code_bytes)
                if kind in ("BINARY", "UBINARY"):
                    np.testing.assert_array_equal(codes, quantize_embeddings(expected, kind.lower()))
                else:
                    int8 = np.rint(127 * expected / np.abs(expected).max(axis=1, keepdims=True))
                    np.testing.assert_array_equal(codes, int8 + (128 if kind == "UINT8" else 0))
            with pytest.raises(grpc.RpcError) as raised:
                stub.Embed(pb.EmbedRequest(texts=TEXTS, embedding_type=42), timeout=30)  # type: ignore[arg-type]
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "embedding_type" in (raised.value.details() or "")


DIALECT_DOCUMENTS: list[tuple[str, dict[str, Any]]] = [
    ("/embed", {"inputs": ["hello"], "truncation_direction": "Left", "prompt_name": ""}),
    ("/", {"inputs": "hello"}),
    ("/tokenize", {"inputs": ["hello"], "prompt_name": ""}),
    ("/v2/embed", {"texts": ["hello"], "input_type": "search_query", "embedding_types": ["int8"], "truncate": "END"}),
    ("/v2/rerank", {"query": "q", "documents": ["a", {"text": "b"}], "model": "ranker"}),
]
DIALECT_CASES = [
    (route, f"{route} {path}", variant)
    for route, document in DIALECT_DOCUMENTS
    for path, variant in json_string_variants(document)
]


@pytest.mark.parametrize(("route", "case_id", "document"), DIALECT_CASES, ids=[case[1] for case in DIALECT_CASES])
def test_a_megabyte_in_any_string_or_key_of_a_dialect_route_is_a_short_4xx(
    server: ServerThread, route: str, case_id: str, document: Any
) -> None:
    status, answer = post(server, route, document)
    if "key:" in case_id and not any(f"key:{name}" in case_id for name in ("inputs", "texts", "query", "documents")):
        assert status == 200  # an unknown field is ignored, as TEI and Cohere do: nothing echoed
    else:
        assert 400 <= status < 500, (case_id, status)
    assert len(json.dumps(answer, ensure_ascii=False)) < MAX_MESSAGE_CHARS + 200


def test_tokens_overload_and_metrics_apply_to_the_dialect_routes(
    tiny_model_dir: Path, tiny_items_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "clients").write_text("client-token\n")
    settings = server_settings(
        tiny_model_dir, tiny_items_dir, auth_tokens_file=tmp_path / "clients", max_queued_texts=2
    )
    guarded = start_server(settings)
    try:
        denied = [
            post(guarded, path, body) for path, body in (("/embed", {"inputs": "x"}), ("/v2/embed", {"texts": ["x"]}))
        ]
        assert denied[0][0] == 401 and denied[0][1]["error_type"] == "Validation"
        assert denied[1][0] == 401 and "bearer token" in denied[1][1]["message"]
        request = urllib.request.Request(
            base(guarded) + "/embed",
            data=json.dumps({"inputs": ["a", "b", "c"]}).encode(),
            headers={"content-type": "application/json", "authorization": "Bearer client-token"},
        )
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=30)
        with raised.value as error:
            assert error.code == 429 and error.headers["retry-after"] == "1"
            assert json.loads(error.read())["error_type"] == "Overloaded"
        assert guarded.app.state.calls[("POST /embed", "RESOURCE_EXHAUSTED")] == 1
        assert guarded.app.state.calls[("POST /v2/embed", "UNAUTHENTICATED")] == 1
    finally:
        guarded.close()
