"""The real server on a tiny exported BERT, called through the real client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest

from embedrec.client import (
    AsyncEmbedrecClient,
    ChannelConfig,
    EmbedrecClient,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from embedrec.server.errors import ConfigurationError
from embedrec.server.inference.encoder import OnnxEncoder
from tests.e2e.conftest import CATALOG_ROWS, server_settings
from tests.e2e.server_thread import ServerThread, start_server

TEXT_OF = {row["id"]: row["text"] for row in CATALOG_ROWS}


class TestLifecycle:
    def test_health_is_not_serving_and_calls_unavailable_until_loaded(
        self, tiny_model_dir: Path, tiny_items_dir: Path
    ) -> None:
        server = ServerThread(server_settings(tiny_model_dir, tiny_items_dir)).start()
        try:
            # Without client-side health checking, to see the server's own answer while starting.
            with EmbedrecClient(server.target, timeout=10, channel=ChannelConfig(health_check=False)) as client:
                assert client.health() == "NOT_SERVING"
                with pytest.raises(Unavailable, match="starting"):
                    client.embed(["hello"])
                server.load()
                assert client.health() == "SERVING"
                assert client.health("embedrec.v1.EmbedRec") == "SERVING"
                assert client.embed(["hello"]).shape == (1, 32)
        finally:
            server.close()

    def test_refuses_an_item_matrix_built_by_another_model(self, tiny_items_dir: Path, tmp_path: Path) -> None:
        from embedrec.export.onnx_model import export_model
        from tests.e2e.tiny_models import build_tiny_bert

        other_model = export_model(str(build_tiny_bert(tmp_path / "other-bert", seed=1)), tmp_path / "other")
        assert other_model.dim == 32
        with pytest.raises(ConfigurationError, match="built with model"):
            start_server(server_settings(tmp_path / "other", tiny_items_dir))


class TestEmbed:
    def test_one_unit_vector_per_text_in_order(self, client: EmbedrecClient, tiny_model_dir: Path) -> None:
        texts = ["hello world", "这是一款高效节能的空调", "running shoes 🏃", "a"]
        vectors = client.embed(texts)
        assert vectors.shape == (4, client.info().dim)
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        reference = OnnxEncoder(tiny_model_dir, provider="cpu").encode(texts, normalize=True)
        np.testing.assert_allclose(vectors, reference, atol=1e-5)

    def test_normalize_false_returns_the_raw_pooled_vector(self, client: EmbedrecClient) -> None:
        raw = client.embed(["hello world"], normalize=False)[0]
        unit = client.embed(["hello world"])[0]
        assert abs(float(np.linalg.norm(raw)) - 1.0) > 1e-3
        np.testing.assert_allclose(raw / np.linalg.norm(raw), unit, atol=1e-5)

    def test_a_text_embeds_the_same_alone_and_batched_with_longer_texts(self, client: EmbedrecClient) -> None:
        alone = client.embed(["hello"])[0]
        batched = client.embed(["hello", "the quick air conditioner " * 10])[0]
        np.testing.assert_allclose(alone, batched, atol=1e-5)

    def test_pooling_override_changes_the_vector(self, client: EmbedrecClient) -> None:
        cls_vector = client.embed(["hello world"], pooling="cls")[0]
        mean_vector = client.embed(["hello world"], pooling="mean")[0]
        assert float(cls_vector @ mean_vector) < 0.999

    def test_long_text_is_truncated_by_default_and_refused_without_truncation(self, client: EmbedrecClient) -> None:
        long_text = "air conditioner " * 100
        assert client.embed([long_text]).shape[0] == 1
        with pytest.raises(InvalidArgument, match=r"texts\[0\].*max length of 48 tokens"):
            client.embed([long_text], truncate=False)

    def test_concurrent_calls_each_get_their_own_vectors(self, tiny_server: ServerThread) -> None:
        texts = [row["text"] for row in CATALOG_ROWS]

        async def many() -> list[np.ndarray]:
            async with AsyncEmbedrecClient(tiny_server.target, timeout=30) as client:
                return await asyncio.gather(*(client.embed([text]) for text in texts))

        results = asyncio.run(many())
        with EmbedrecClient(tiny_server.target) as client:
            expected = client.embed(texts)
        np.testing.assert_allclose(np.vstack(results), expected, atol=1e-5)


class TestSimilarity:
    def test_query_against_candidates_is_the_cosine_of_the_embeddings(self, client: EmbedrecClient) -> None:
        query, candidates = "air conditioner", ["quiet air conditioner", "coffee and tea", "我喜欢喝咖啡"]
        scores = client.similarity(query, candidates)
        vectors = client.embed([query, *candidates], normalize=True)
        np.testing.assert_allclose(scores, vectors[1:] @ vectors[0], atol=1e-5)

    def test_pairs_are_compared_pairwise(self, client: EmbedrecClient) -> None:
        pairs = [("hello", "hello"), ("air conditioner", "running shoes")]
        scores = client.similarity_pairs(pairs)
        assert scores.shape == (2,)
        assert scores[0] == pytest.approx(1.0, abs=1e-5)
        vectors = client.embed(["air conditioner", "running shoes"], normalize=True)
        assert scores[1] == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5)

    def test_a_request_without_texts_is_invalid(self, client: EmbedrecClient) -> None:
        with pytest.raises(InvalidArgument, match="pairs"):
            client.similarity_pairs([])
        with pytest.raises(InvalidArgument, match="candidates"):
            client.similarity("hello", [])


def brute_force(matrix: np.ndarray, profile: np.ndarray, k: int, excluded: set[int]) -> list[int]:
    scores = matrix.astype(np.float64) @ profile.astype(np.float64)
    order = sorted((row for row in range(len(matrix)) if row not in excluded), key=lambda row: (-scores[row], row))
    return order[:k]


class TestRecommend:
    def test_by_vector_matches_brute_force(self, client: EmbedrecClient, tiny_items_dir: Path) -> None:
        matrix = np.load(tiny_items_dir / "items.npy")
        ids = (tiny_items_dir / "ids.txt").read_text().split("\n")[:-1]
        profile = np.random.default_rng(3).standard_normal(matrix.shape[1]).astype(np.float32)
        profile /= np.linalg.norm(profile)
        for k in (1, 5, len(ids)):
            found = client.recommend(k, vector=profile)
            assert [item.id for item in found] == [ids[row] for row in brute_force(matrix, profile, k, set())]
            np.testing.assert_allclose(
                [item.score for item in found],
                [float(matrix[ids.index(item.id)] @ profile) for item in found],
                atol=1e-5,
            )

    def test_an_item_text_finds_that_item_first(self, client: EmbedrecClient) -> None:
        found = client.recommend(3, texts=[TEXT_OF["ac-zh"]])
        assert found[0].id == "ac-zh"
        assert found[0].score == pytest.approx(1.0, abs=1e-4)
        assert [item.score for item in found] == sorted((item.score for item in found), reverse=True)

    def test_by_history_items_excludes_them_by_default(self, client: EmbedrecClient, tiny_items_dir: Path) -> None:
        matrix = np.load(tiny_items_dir / "items.npy")
        ids = (tiny_items_dir / "ids.txt").read_text().split("\n")[:-1]
        history = ["shoes-1", "laptop-1"]
        profile = matrix[[ids.index(i) for i in history]].sum(axis=0)
        profile /= np.linalg.norm(profile)
        found = client.recommend(4, item_ids=history, exclude_ids=["book-1", "not-in-catalog"])
        excluded = {ids.index(i) for i in [*history, "book-1"]}
        assert [item.id for item in found] == [ids[row] for row in brute_force(matrix, profile, 4, excluded)]

    def test_history_may_be_included_and_weighted(self, client: EmbedrecClient) -> None:
        found = client.recommend(2, item_ids={"shoes-1": 1.0, "coffee-1": 0.0}, exclude_history=False)
        assert found[0].id == "shoes-1"
        assert found[0].score == pytest.approx(1.0, abs=1e-5)

    def test_vector_texts_and_items_combine(self, client: EmbedrecClient) -> None:
        vector = client.embed([TEXT_OF["fridge-1"]])[0]
        found = client.recommend(len(CATALOG_ROWS), vector=vector, texts=["coffee"], item_ids=["music-1"])
        assert "music-1" not in {item.id for item in found}
        assert len(found) == len(CATALOG_ROWS) - 1

    def test_fewer_than_k_when_everything_else_is_excluded(self, client: EmbedrecClient) -> None:
        everything_but_two = [row["id"] for row in CATALOG_ROWS][2:]
        found = client.recommend(10, texts=["coffee"], exclude_ids=everything_but_two)
        assert sorted(item.id for item in found) == sorted(row["id"] for row in CATALOG_ROWS[:2])


class TestInfo:
    def test_reports_model_provider_items_and_limits(
        self, client: EmbedrecClient, tiny_model_dir: Path, tiny_items_dir: Path
    ) -> None:
        from embedrec.server.manifest import read_items_manifest, read_model_manifest

        info = client.info()
        model = read_model_manifest(tiny_model_dir)
        assert (info.dim, info.max_length, info.pooling, info.normalize) == (32, 48, "cls", True)
        assert info.provider == "CPUExecutionProvider"
        assert info.model_sha256 == model.onnx_sha256
        assert info.item_count == len(CATALOG_ROWS)
        assert info.items_sha256 == read_items_manifest(tiny_items_dir).items_sha256
        assert info.limits["max_k"] == 1000


class TestBadInput:
    @pytest.mark.parametrize(
        ("call", "error", "field"),
        [
            (lambda c: c.embed([]), InvalidArgument, "texts is empty"),
            (lambda c: c.embed(["ok", "   "]), InvalidArgument, r"texts\[1\] is empty or blank"),
            (lambda c: c.embed(["x"] * 65), InvalidArgument, "the limit is max_texts_per_request=64"),
            (lambda c: c.embed(["x" * 10_001]), InvalidArgument, "max_chars_per_text=10000"),
            (
                lambda c: c.recommend(0, texts=["coffee"]),
                InvalidArgument,
                r"k must be an integer from 1 to 1000 \(max_k\)",
            ),
            (lambda c: c.recommend(-3, texts=["coffee"]), InvalidArgument, "k must be an integer from 1 to 1000"),
            (lambda c: c.recommend(1001, texts=["coffee"]), InvalidArgument, r"1000 \(max_k\), got 1001"),
            (lambda c: c.recommend(3, vector=[0.1] * 7), InvalidArgument, "user_vector has 7 values.*dim is 32"),
            (lambda c: c.recommend(3, vector=[float("nan")] * 32), InvalidArgument, "user_vector contains NaN"),
            (lambda c: c.recommend(3, vector=[0.0] * 32), InvalidArgument, "user_vector is all zeros"),
            (lambda c: c.recommend(3), InvalidArgument, "profile is empty"),
            (lambda c: c.recommend(3, item_ids=["no-such-item"]), NotFound, "items: unknown item id.*no-such-item"),
            (lambda c: c.recommend(3, texts={"coffee": -1.0}), InvalidArgument, "no part with a positive weight"),
        ],
    )
    def test_gets_a_clear_status_naming_the_field(self, client: EmbedrecClient, call, error, field) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(error, match=field):
            call(client)

    def test_unknown_pooling_value_is_invalid(self, tiny_server: ServerThread) -> None:
        from embedrec.v1 import embedrec_pb2 as pb
        from embedrec.v1 import embedrec_pb2_grpc as pb_grpc

        with grpc.insecure_channel(tiny_server.target) as channel, pytest.raises(grpc.RpcError) as caught:
            pb_grpc.EmbedRecStub(channel).Embed(pb.EmbedRequest(texts=["hi"], pooling=7), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "pooling" in caught.value.details()

    def test_recommend_without_items_is_a_failed_precondition(self, tiny_model_dir: Path) -> None:
        server = start_server(server_settings(tiny_model_dir, None))
        try:
            with EmbedrecClient(server.target) as client:
                assert client.info().item_count == 0
                with pytest.raises(FailedPrecondition, match="items-dir"):
                    client.recommend(3, texts=["coffee"])
        finally:
            server.close()
