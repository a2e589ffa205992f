"""Milvus vector indexes: FLAT (the default, exact) and the approximate HNSW and IVF_FLAT, chosen
at build (`export-items --milvus-index`), replaced in place by a later sync, reported by Info,
and searched with the server's effort or a request's own (`RecommendRequest.approximate`) — on
Milvus Lite and on a real Milvus server. Their recall on large catalogs is measured in
`make bench-milvus`, not here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedrec.client import EmbedrecClient, InvalidArgument
from embedrec.export.milvus_sync import sync_to_milvus
from embedrec.server.catalog.milvus.index import (
    DEFAULT_EF,
    MAX_EF,
    VectorIndex,
)
from tests.e2e.conftest import MilvusBackend, server_settings
from tests.e2e.server_thread import ServerThread, start_server

HNSW = VectorIndex.of("HNSW", M=8, efConstruction=64)
IVF = VectorIndex.of("IVF_FLAT", nlist=4)


# -- the index and effort rules -----------------------------------------------------------------


# -- end to end, on each backend ----------------------------------------------------------------


@pytest.fixture(scope="module")
def indexed(
    tiny_model_dir: Path,
    tiny_items_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    milvus_backend: MilvusBackend,
) -> Iterator[tuple[ServerThread, str, str]]:
    """A server on the test catalog in a FLAT collection; (server, uri, collection) so a test can
    re-sync it with another index and reload."""
    directory = tmp_path_factory.mktemp("indexed")
    collection = milvus_backend.collection("indexed")
    uri = milvus_backend.uri(directory)
    sync_to_milvus(tiny_items_dir, uri, collection, progress=False)
    settings = server_settings(tiny_model_dir, None, items_store="milvus", milvus_uri=uri, milvus_collection=collection)
    server = start_server(settings)
    yield server, uri, collection
    server.close()


def queries(dim: int, count: int = 8) -> np.ndarray:
    vectors = np.random.default_rng(5).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ids_of(client: EmbedrecClient, vector: np.ndarray, k: int, **options: int) -> list[str]:
    return [one.id for one in client.recommend(k, vector=vector, **options)]  # type: ignore[arg-type]


def test_flat_is_the_default_exact_and_takes_no_effort(indexed: tuple[ServerThread, str, str]) -> None:
    server, _, _ = indexed
    with EmbedrecClient(server.target, timeout=30) as client:
        info = client.info()
        assert (info.items_index, info.items_approximate) == ("FLAT (exact)", False)
        with pytest.raises(InvalidArgument, match=r"approximate\.ef given, but the served items are searched exactly"):
            client.recommend(3, vector=queries(info.dim)[0], ef=64)


def test_a_sync_replaces_the_index_in_place_and_the_server_reports_it(
    indexed: tuple[ServerThread, str, str],
    tiny_items_dir: Path,
    tiny_server: ServerThread,
    milvus_backend: MilvusBackend,
) -> None:
    server, uri, collection = indexed
    with EmbedrecClient(server.target, timeout=30) as client, EmbedrecClient(tiny_server.target) as exact:
        count = client.info().item_count
        vectors = queries(client.info().dim)

        synced = sync_to_milvus(tiny_items_dir, uri, collection, progress=False, vector_index=HNSW)
        assert (synced.upserted, synced.deleted, synced.recreated) == (0, 0, False)
        assert synced.index == "HNSW M=8 efConstruction=64"
        client.reload_items()
        info = client.info()
        assert info.items_index == f"HNSW M=8 efConstruction=64, ef {DEFAULT_EF} (approximate)"
        assert info.items_approximate and info.item_count == count
        # ef >= the catalog's size: the walk keeps every item it reaches, so it is exact here.
        for vector in vectors:
            assert ids_of(client, vector, 5, ef=count) == ids_of(exact, vector, 5)
        with pytest.raises(InvalidArgument, match=r"approximate\.nprobe: .* HNSW, which takes ef"):
            client.recommend(3, vector=vectors[0], nprobe=2)
        with pytest.raises(InvalidArgument, match=rf"approximate\.ef is {MAX_EF + 1}; the limit is {MAX_EF}"):
            client.recommend(3, vector=vectors[0], ef=MAX_EF + 1)

        sync_to_milvus(tiny_items_dir, uri, collection, progress=False, vector_index=IVF)
        client.reload_items()
        # The default nprobe (32) is capped at the index's nlist, and Info says what is searched.
        assert client.info().items_index == "IVF_FLAT nlist=4, nprobe 4 (approximate)"
        for vector in vectors:
            found = ids_of(client, vector, 5, nprobe=4)
            if milvus_backend.kind == "server":  # nprobe = nlist visits every cluster: exact
                assert found == ids_of(exact, vector, 5)
            else:  # Milvus Lite picks its own nlist (12 clusters for these 12 rows): approximate
                assert found and set(found) <= set(ids_of(exact, vector, count))
        with pytest.raises(InvalidArgument, match=r"approximate\.nprobe is 5; the limit is 4"):
            client.recommend(3, vector=vectors[0], nprobe=5)

        sync_to_milvus(tiny_items_dir, uri, collection, progress=False)
        client.reload_items()
        assert client.info().items_index == "FLAT (exact)"
        for vector in vectors:
            assert ids_of(client, vector, 5) == ids_of(exact, vector, 5)


def test_the_memory_mapped_store_refuses_a_search_effort(tiny_server: ServerThread) -> None:
    with EmbedrecClient(tiny_server.target, timeout=30) as client:
        info = client.info()
        assert (info.items_index, info.items_approximate) == ("", False)
        with pytest.raises(InvalidArgument, match=r"approximate\.nprobe given, .* \(the memory-mapped matrix\)"):
            client.recommend(3, vector=queries(info.dim)[0], nprobe=8)
