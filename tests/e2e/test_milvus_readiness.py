"""An approximate Milvus index right after a sync, on a real Milvus server (2.3.5): the sync
returns only once Milvus searches the index it built (before, it answered from an interim index
with recall ~0.3 whatever the effort), and a server whose collection is still in that window says
so in the items' health, Info, the metrics and every Recommend answer, and answers all the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedrec.client import EmbedrecClient
from embedrec.export.milvus_sync import sync_to_milvus
from embedrec.server.catalog.milvus.calls import connect
from embedrec.server.catalog.milvus.index import VectorIndex
from embedrec.server.catalog.milvus.readiness import index_readiness
from embedrec.server.catalog.milvus.store import MilvusItems
from embedrec.server.catalog.store import History, Query
from embedrec.server.manifest import read_model_manifest
from tests.e2e.conftest import server_settings
from tests.e2e.milvus_process import MilvusServerProcess
from tests.e2e.server_thread import start_server
from tests.e2e.test_milvus_recovery import metric, wait_for
from tests.support.vector_items import clustered_rows, exact_top, recall_at, unit_rows, vector_items

HNSW = VectorIndex.of("HNSW")
K = 10


def test_a_search_right_after_the_sync_has_the_built_index_recall(
    milvus_server: MilvusServerProcess, tmp_path: Path
) -> None:
    # Random 384-d rows, the interim index's worst case: Milvus 2.3.5 answered them with recall@10
    # 0.30 at any ef before the sync waited (clustered rows: 0.998, no test); the built HNSW index
    # gives 0.96 at the default ef.
    rng = np.random.default_rng(1)
    vectors, queries = unit_rows(rng.standard_normal((10_000, 384))), unit_rows(rng.standard_normal((50, 384)))
    items_dir = vector_items(tmp_path / "items", vectors)
    synced = sync_to_milvus(items_dir, milvus_server.uri, "ready_after_sync", progress=False, vector_index=HNSW)
    store = MilvusItems(milvus_server.uri, "ready_after_sync")
    selection = store.selection(History(np.zeros((0, 384), np.float32), [], None), [], [], field="filter_values")
    found = [[one.item_id for one in hits] for hits in store.search([Query(q, selection) for q in queries], K)]
    assert recall_at(found, exact_top(queries, vectors, K)) >= 0.85
    assert synced.index_serving
    assert store.describe().index_loading == ""


def test_a_served_collection_in_the_window_says_so_and_keeps_answering(
    milvus_server: MilvusServerProcess, tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = read_model_manifest(tiny_model_dir)
    vectors = clustered_rows(8_000, model.dim, seed=3)
    identity = {"model_name": model.model_name, "model_onnx_sha256": model.onnx_sha256}
    collection = "loading_window"
    first = vector_items(tmp_path / "first", vectors[:2_000], **identity)
    sync_to_milvus(first, milvus_server.uri, collection, progress=False, vector_index=HNSW)
    settings = server_settings(
        tiny_model_dir, None, items_store="milvus", milvus_uri=milvus_server.uri, milvus_collection=collection,
        milvus_probe_s=0.5,
    )  # fmt: skip
    served = start_server(settings)
    try:
        with EmbedrecClient(served.target, timeout=30) as client:
            assert client.health("embedrec.items") == "SERVING"
            assert not client.info().items_index_loading
            assert not client.recommend(3, vector=vectors[0]).index_loading
            # 6,000 new rows reach Milvus's query node through its insert stream: answered from a
            # growing segment's interim index until the sealed, indexed segment is loaded.
            grown = vector_items(tmp_path / "grown", vectors, **identity)
            sync_to_milvus(grown, milvus_server.uri, collection, progress=False, vector_index=HNSW, wait_serving=False)
            wait_for(lambda: client.info().items_index_loading, 20.0)
            info = client.info()
            assert "rows (1 segment) answered from Milvus's interim index" in info.items_index_loading_detail
            assert client.health("embedrec.items") == "NOT_SERVING"
            assert client.health() == "SERVING"
            assert metric(served, "embedrec_items_index_loading") == 1.0
            answer = client.recommend(3, vector=vectors[0])
            assert answer.index_loading and len(answer) == 3  # availability first, flagged

            wait_for(lambda: not client.info().items_index_loading, 120.0)
            wait_for(lambda: client.health("embedrec.items") == "SERVING", 5.0)
            assert client.info().items_index_loading_detail == ""
            assert metric(served, "embedrec_items_index_loading") == 0.0
            assert not client.recommend(3, vector=vectors[0]).index_loading
    finally:
        served.close()
    readiness = index_readiness(connect(milvus_server.uri, "", 10.0), collection, 10.0)
    assert readiness is not None and readiness.serving and readiness.total_rows == 8_000
