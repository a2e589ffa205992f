"""Several models in one server, and Rerank: a server started with --model NAME=DIR serves a
second embedding model and a cross-encoder beside its first model, each on its own batcher;
calls name the model (gRPC `model`, OpenAI's `model`), Info, /v1/models and the metrics list
them all; Rerank (gRPC, the client, the CLI, Cohere/Jina's /v1/rerank, TEI's /rerank) scores as
the exported model does in process. Through real servers and the real client."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from embedrec.client import (
    EmbedrecClient,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from embedrec.client.cli import rerank_main
from embedrec.export.onnx_model import export_model
from embedrec.server.errors import ConfigurationError
from embedrec.server.inference.encoder import OnnxEncoder
from embedrec.server.settings import Settings
from tests.conftest import server_settings
from tests.server_thread import ServerThread, start_server
from tests.tiny_models import build_tiny_bert

QUERY = "quiet air conditioner"
DOCUMENTS = [
    "energy saving air conditioner for the home",
    "red running shoes for the family",
    "a novel to read with tea",
    "这是一款高效节能的空调",
    "red running shoes for the family",  # a duplicate: an equal score, ranked after the first
]


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second embedding model (another random tiny BERT), exported."""
    source = build_tiny_bert(tmp_path_factory.mktemp("other-bert"), seed=7)
    output = tmp_path_factory.mktemp("exports") / "other"
    export_model(str(source), output)
    return output


@pytest.fixture(scope="module")
def multi_server(
    tiny_model_dir: Path, tiny_items_dir: Path, other_model_dir: Path, tiny_reranker_dir: Path
) -> Iterator[ServerThread]:
    settings = server_settings(
        tiny_model_dir, tiny_items_dir, model=(f"other={other_model_dir}", f"ranker={tiny_reranker_dir}")
    )
    server = start_server(settings)
    yield server
    server.close()


def http_post(server: ServerThread, path: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.app.http_port}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def http_get(server: ServerThread, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.app.http_port}{path}", timeout=30) as response:
        return json.loads(response.read())


# -- several models ------------------------------------------------------------------------------


def test_info_and_v1_models_list_every_model_the_first_first(multi_server: ServerThread) -> None:
    with EmbedrecClient(multi_server.target, timeout=30) as client:
        info = client.info()
    names = [(model.name, model.task) for model in info.models]
    assert names == [(info.model_name, "embed"), ("other", "embed"), ("ranker", "rerank")]
    ranker = info.models[2]
    assert (ranker.dim, ranker.activation, ranker.max_length) == (1, "sigmoid", 48)
    listed = http_get(multi_server, "/v1/models")["data"]
    assert [(model["id"], model["task"]) for model in listed] == names


def test_calls_name_the_embedding_model_and_default_to_the_first(
    multi_server: ServerThread, tiny_model_dir: Path, other_model_dir: Path
) -> None:
    texts = ["running shoes", "一款空调"]
    with EmbedrecClient(multi_server.target, timeout=30) as client:
        first = client.embed(texts)
        other = client.embed(texts, model="other")
        np.testing.assert_allclose(first, OnnxEncoder(tiny_model_dir, provider="cpu").encode(texts), atol=1e-5)
        np.testing.assert_allclose(other, OnnxEncoder(other_model_dir, provider="cpu").encode(texts), atol=1e-5)
        assert np.abs(first - other).max() > 0.1  # two different models
        scores = client.similarity("running shoes", ["一款空调"], model="other")
        np.testing.assert_allclose(scores, [float(other[0] @ other[1])], atol=1e-5)
        with pytest.raises(NotFound, match="'nope' is not served here as an embedding model"):
            client.embed(texts, model="nope")
        with pytest.raises(NotFound, match="'ranker' is not served here as an embedding model"):
            client.embed(texts, model="ranker")
        assert client.recommend(2, texts=["air conditioner"])  # Recommend: the first model's items


def test_openai_embeddings_pick_the_model_by_name(multi_server: ServerThread, other_model_dir: Path) -> None:
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{multi_server.app.http_port}/v1", api_key="none")
    response = api.embeddings.create(model="other", input=["coffee", "tea"])
    assert response.model == "other"
    vectors = np.asarray([row.embedding for row in response.data], dtype=np.float32)
    np.testing.assert_allclose(
        vectors, OnnxEncoder(other_model_dir, provider="cpu").encode(["coffee", "tea"]), atol=1e-5
    )
    with pytest.raises(openai.NotFoundError):
        api.embeddings.create(model="ranker", input="coffee")


def test_each_model_has_its_own_metrics(multi_server: ServerThread) -> None:
    with EmbedrecClient(multi_server.target, timeout=30) as client:
        client.rerank(QUERY, DOCUMENTS)
    with urllib.request.urlopen(f"http://127.0.0.1:{multi_server.app.metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    assert 'embedrec_model_info{model="ranker",task="rerank"} 1.0' in text
    assert 'embedrec_model_info{model="other",task="embed"} 1.0' in text
    pairs = [line for line in text.splitlines() if line.startswith('embedrec_model_inputs_total{model="ranker"}')]
    assert pairs and float(pairs[0].split()[-1]) >= len(DOCUMENTS)


# -- Rerank --------------------------------------------------------------------------------------


def test_rerank_scores_as_the_exported_model_best_first_ties_in_document_order(
    multi_server: ServerThread, tiny_reranker_dir: Path
) -> None:
    expected = OnnxEncoder(tiny_reranker_dir, provider="cpu").score([(QUERY, document) for document in DOCUMENTS])
    with EmbedrecClient(multi_server.target, timeout=30) as client:
        hits = client.rerank(QUERY, DOCUMENTS)
    assert [hit.index for hit in hits] == sorted(range(len(DOCUMENTS)), key=lambda i: (-expected[i], i))
    np.testing.assert_allclose([hit.score for hit in hits], expected[[hit.index for hit in hits]], atol=1e-6)
    positions = [hit.index for hit in hits]
    assert positions.index(1) < positions.index(4)  # the duplicate pair: equal scores, document order
    assert all(0 < hit.score < 1 for hit in hits) and all(hit.document is None for hit in hits)


def test_rerank_top_n_documents_and_model(multi_server: ServerThread) -> None:
    with EmbedrecClient(multi_server.target, timeout=30) as client:
        every = client.rerank(QUERY, DOCUMENTS)
        top = client.rerank(QUERY, DOCUMENTS, top_n=2, return_documents=True, model="ranker")
    assert [hit.index for hit in top] == [hit.index for hit in every[:2]]
    assert [hit.document for hit in top] == [DOCUMENTS[hit.index] for hit in top]


@pytest.mark.parametrize(
    ("query", "documents", "options", "error", "message"),
    [
        (QUERY, [], {}, InvalidArgument, r"documents is empty"),
        (" ", DOCUMENTS, {}, InvalidArgument, r"query\[0\] is empty or blank"),
        (QUERY, ["fine", ""], {}, InvalidArgument, r"documents\[1\] is empty or blank"),
        (QUERY, ["x"] * 64, {}, InvalidArgument, r"documents has more than 63 entries; the limit is max_texts"),
        (QUERY, DOCUMENTS, {"model": "other"}, NotFound, r"'other' is not served here as a reranker"),
    ],
)
def test_rerank_refuses_bad_input_naming_the_field(
    multi_server: ServerThread,
    query: str,
    documents: list[str],
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with EmbedrecClient(multi_server.target, timeout=30) as client, pytest.raises(error, match=message):
        client.rerank(query, documents, **options)


def test_a_server_without_a_reranker_says_how_to_serve_one(tiny_server: ServerThread) -> None:
    with EmbedrecClient(tiny_server.target, timeout=30) as client:
        with pytest.raises(FailedPrecondition, match=r"serves no reranker .*--task rerank"):
            client.rerank(QUERY, DOCUMENTS)
        assert [model.task for model in client.info().models] == ["embed"]


def test_cohere_jina_v1_rerank(multi_server: ServerThread) -> None:
    with EmbedrecClient(multi_server.target, timeout=30) as client:
        expected = client.rerank(QUERY, DOCUMENTS, top_n=3)
    status, body = http_post(
        multi_server,
        "/v1/rerank",
        {
            "model": "ranker",
            "query": QUERY,
            "documents": [{"text": d} for d in DOCUMENTS],
            "top_n": 3,
            "return_documents": True,
        },
    )
    assert status == 200 and body["model"] == "ranker" and body["usage"]["total_tokens"] > 0
    assert [(r["index"], r["document"]["text"]) for r in body["results"]] == [
        (hit.index, DOCUMENTS[hit.index]) for hit in expected
    ]
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], [h.score for h in expected], atol=1e-6)
    status, body = http_post(multi_server, "/v1/rerank", {"query": QUERY, "documents": "not a list"})
    assert status == 400 and "documents is required" in body["error"]["message"]
    status, body = http_post(multi_server, "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS, "top_n": 0})
    assert status == 400 and "top_n must be a positive integer" in body["error"]["message"]


def test_tei_rerank_with_raw_scores(multi_server: ServerThread, tiny_reranker_dir: Path) -> None:
    logits = OnnxEncoder(tiny_reranker_dir, provider="cpu").score(
        [(QUERY, document) for document in DOCUMENTS], activation="none"
    )
    status, body = http_post(
        multi_server, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "raw_scores": True, "return_text": True}
    )
    assert status == 200
    assert [entry["index"] for entry in body] == sorted(range(len(DOCUMENTS)), key=lambda i: (-logits[i], i))
    np.testing.assert_allclose([entry["score"] for entry in body], logits[[e["index"] for e in body]], atol=1e-5)
    assert all(entry["text"] == DOCUMENTS[entry["index"]] for entry in body)


def test_the_cli_ranks_documents(multi_server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert rerank_main(["--target", multi_server.target, QUERY, *DOCUMENTS[:3], "--top-n", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("#" in line for line in lines)


# -- configuration -------------------------------------------------------------------------------


def test_models_are_given_as_name_equals_directory() -> None:
    with pytest.raises(ValueError, match="--model takes NAME=DIR"):
        Settings(model=("just-a-path",))
    with pytest.raises(ValueError, match="'a' is given twice"):
        Settings(model=("a=x", "a=y"))
    with pytest.raises(ValueError, match="a name of letters"):
        Settings(model=("bad name=x",))
    assert Settings.from_args(["--model", "a=x", "--model", "b=y"], {}).extra_models == {"a": Path("x"), "b": Path("y")}
    assert Settings.from_args([], {"EMBEDREC_MODEL": "a=x,b=y"}).extra_models == {"a": Path("x"), "b": Path("y")}


def test_the_first_model_must_embed(tiny_reranker_dir: Path, tiny_model_dir: Path) -> None:
    from embedrec.server.loading import load_encoder, load_extra_encoders

    with pytest.raises(ConfigurationError, match="is a rerank model; the first model embeds"):
        load_encoder(server_settings(tiny_reranker_dir, None))
    settings = server_settings(tiny_model_dir, None)
    first = load_encoder(settings)
    clash = server_settings(tiny_model_dir, None, model=(f"{first.manifest.model_name}={tiny_reranker_dir}",))
    with pytest.raises(ConfigurationError, match="already called"):
        load_extra_encoders(clash, first)
