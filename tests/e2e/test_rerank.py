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
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server
from tests.e2e.tiny_models import build_tiny_bert

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


def test_the_first_model_must_embed(tiny_reranker_dir: Path, tiny_model_dir: Path) -> None:
    from embedrec.server.loading import load_encoder, load_extra_encoders

    with pytest.raises(ConfigurationError, match="is a rerank model; the first model embeds"):
        load_encoder(server_settings(tiny_reranker_dir, None))
    settings = server_settings(tiny_model_dir, None)
    first = load_encoder(settings)
    clash = server_settings(tiny_model_dir, None, model=(f"{first.manifest.model_name}={tiny_reranker_dir}",))
    with pytest.raises(ConfigurationError, match="already called"):
        load_extra_encoders(clash, first)


# -- Recommend with a rerank stage ----------------------------------------------------------------


def expected_rerank(
    client: EmbedrecClient, reranker_dir: Path, query: str, candidates: int, **profile: Any
) -> list[tuple[str, float, float]]:
    """(id, embedding score, cross-encoder score) of the best `candidates` by embedding, ordered
    by the exported cross-encoder in process (ties: embedding order)."""
    from tests.e2e.conftest import CATALOG_ROWS

    text_of = {row["id"]: row["text"] for row in CATALOG_ROWS}
    first = client.recommend(candidates, **profile)
    scores = OnnxEncoder(reranker_dir, provider="cpu").score([(query, text_of[one.id]) for one in first])
    order = sorted(range(len(first)), key=lambda i: (-scores[i], i))
    return [(first[i].id, first[i].score, float(scores[i])) for i in order]


def test_recommend_reranks_the_best_candidates_and_keeps_both_scores(
    multi_server: ServerThread, tiny_reranker_dir: Path
) -> None:
    profile = {"texts": ["quiet air conditioner", "coffee"]}
    with EmbedrecClient(multi_server.target, timeout=30) as client:
        expected = expected_rerank(client, tiny_reranker_dir, "quiet air conditioner\ncoffee", 8, **profile)
        found = client.recommend(3, rerank=True, rerank_candidates=8, explain=True, **profile)
        page = client.recommend(2, offset=2, rerank_candidates=8, **profile)
        other_query = client.recommend(3, rerank_candidates=8, rerank_query="running shoes", **profile)
        shoes = expected_rerank(client, tiny_reranker_dir, "running shoes", 8, **profile)
    assert [(one.id, round(one.score, 5)) for one in found] == [(i, round(s, 5)) for i, s, _ in expected[:3]]
    np.testing.assert_allclose([one.rerank_score for one in found], [r for _, _, r in expected[:3]], atol=1e-5)
    assert all(one.contribution is not None for one in found)  # explain still names the embedding part
    assert [one.id for one in page] == [i for i, _, _ in expected[2:4]]
    assert [(one.id, round(float(one.rerank_score or 0), 5)) for one in other_query] == [
        (i, round(r, 5)) for i, _, r in shoes[:3]
    ]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"texts": ["tea"], "rerank_candidates": 2}, InvalidArgument, r"rerank\.candidates must be offset \+ k \(3\)"),
        ({"texts": ["tea"], "rerank_candidates": 5000}, InvalidArgument, r"to 1000, got 5000"),
        ({"item_ids": ["ac-1"], "rerank": True}, InvalidArgument, r"rerank\.query is empty and the profile"),
        ({"texts": ["tea"], "rerank_model": "other"}, NotFound, r"'other' is not served here as a reranker"),
    ],
)
def test_a_rerank_stage_refuses_bad_options_naming_the_field(
    multi_server: ServerThread, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with EmbedrecClient(multi_server.target, timeout=30) as client, pytest.raises(error, match=message):
        client.recommend(3, **options)


def test_recommend_batch_names_the_user_of_a_bad_rerank_stage(multi_server: ServerThread) -> None:
    with EmbedrecClient(multi_server.target, timeout=30) as client:
        with pytest.raises(InvalidArgument, match=r"users\[1\]\.rerank\.candidates"):
            client.recommend_batch([{"k": 2, "texts": ["tea"]}, {"k": 3, "texts": ["tea"], "rerank_candidates": 1}])
        batch = client.recommend_batch([{"k": 2, "texts": ["tea"], "rerank": True}, {"k": 2, "texts": ["tea"]}])
    assert all(one.rerank_score is not None for one in batch[0])
    assert all(one.rerank_score is None for one in batch[1])


def test_a_rerank_stage_needs_a_reranker_and_the_items_texts(
    tiny_server: ServerThread,
    tiny_model_dir: Path,
    tiny_items_dir: Path,
    tiny_reranker_dir: Path,
    tmp_path: Path,
) -> None:
    import shutil

    from embedrec.server.catalog.mmap.item_texts import ITEM_TEXT_OFFSETS, ITEM_TEXTS

    with EmbedrecClient(tiny_server.target, timeout=30) as client:
        with pytest.raises(FailedPrecondition, match="serves no reranker"):
            client.recommend(2, texts=["tea"], rerank=True)
    older = tmp_path / "items-without-texts"
    shutil.copytree(tiny_items_dir, older)
    (older / ITEM_TEXTS).unlink()
    (older / ITEM_TEXT_OFFSETS).unlink()
    server = start_server(server_settings(tiny_model_dir, older, model=(f"ranker={tiny_reranker_dir}",)))
    try:
        with EmbedrecClient(server.target, timeout=30) as client:
            assert client.recommend(2, texts=["tea"])  # without the stage it serves as before
            with pytest.raises(FailedPrecondition, match="needs the items' texts: these items were built without"):
                client.recommend(2, texts=["tea"], rerank=True)
    finally:
        server.close()


def test_the_milvus_store_reranks_like_the_matrix(
    multi_server: ServerThread, tiny_model_dir: Path, tiny_items_dir: Path, tiny_reranker_dir: Path, tmp_path: Path
) -> None:
    from tests.e2e.conftest import milvus_settings

    settings = milvus_settings(
        tiny_model_dir, tiny_items_dir, tmp_path, "reranked", model=(f"ranker={tiny_reranker_dir}",)
    )
    server = start_server(settings)
    profile: dict[str, Any] = {"texts": ["red shoes", "novel"], "rerank_candidates": 10}
    try:
        with EmbedrecClient(server.target, timeout=30) as milvus, EmbedrecClient(multi_server.target) as matrix:
            on_milvus = milvus.recommend(4, **profile)
            on_matrix = matrix.recommend(4, **profile)
    finally:
        server.close()
    assert [one.id for one in on_milvus] == [one.id for one in on_matrix]
    np.testing.assert_allclose(
        [one.rerank_score for one in on_milvus], [one.rerank_score for one in on_matrix], atol=1e-6
    )


def test_a_rerank_stage_over_a_thousand_candidates_fits_the_rerankers_queue(
    tiny_model_dir: Path, tiny_reranker_dir: Path, tmp_path: Path
) -> None:
    from embedrec.export.items import build_items

    words = ["air", "conditioner", "quiet", "coffee", "tea", "novel", "running", "shoes", "red", "home"]
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(
        "".join(
            json.dumps({"id": f"i{n}", "text": f"{words[n % 10]} {words[n // 10 % 10]} {n}"}) + "\n"
            for n in range(1200)
        )
    )
    build_items(catalog, tiny_model_dir, tmp_path / "items", progress=False)
    # The embedding queue holds 8 texts here; the reranker's holds two of the largest stages.
    settings = server_settings(
        tiny_model_dir, tmp_path / "items", model=(f"ranker={tiny_reranker_dir}",), max_queued_texts=8
    )
    server = start_server(settings)
    try:
        with EmbedrecClient(server.target, timeout=60) as client:
            found = client.recommend(3, texts=["quiet tea"], rerank_candidates=1000)
        assert len(found) == 3 and all(one.rerank_score is not None for one in found)
    finally:
        server.close()
