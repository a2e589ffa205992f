"""The live recall estimate: sampled real searches re-checked exactly in the background. The
estimator's arithmetic, and on a real Milvus server an HNSW collection searched at a low effort
whose recall the test measures itself: the estimate converges to it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from embedrec.client import EmbedrecClient
from embedrec.export.milvus_sync import sync_to_milvus
from embedrec.server.catalog.live_recall import LiveRecall
from embedrec.server.catalog.milvus.index import VectorIndex
from embedrec.server.catalog.milvus.store import MilvusItems
from embedrec.server.catalog.store import History, Query, SearchEffort
from embedrec.server.manifest import read_model_manifest
from tests.e2e.conftest import server_settings
from tests.e2e.milvus_process import MilvusServerProcess
from tests.e2e.server_thread import start_server
from tests.e2e.test_milvus_recovery import wait_for
from tests.support.vector_items import clustered_rows, exact_top, recall_at, unit_rows, vector_items

K = 10


def test_the_live_estimate_converges_to_the_measured_recall(milvus_server: MilvusServerProcess, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    vectors, queries = unit_rows(rng.standard_normal((2_000, 384))), unit_rows(rng.standard_normal((80, 384)))
    index = VectorIndex.of("HNSW", M=8, efConstruction=32)  # a weak graph: ef 16 misses a known share
    sync_to_milvus(vector_items(tmp_path / "items", vectors), milvus_server.uri, "live_recall", progress=False,
                   vector_index=index)  # fmt: skip
    live = LiveRecall(0.5, 1_000, 1.0, seed=7)
    store = MilvusItems(milvus_server.uri, "live_recall", effort=SearchEffort(ef=16), live_recall=live)
    selection = store.selection(History(np.zeros((0, 384), np.float32), [], None), [], [], field="filter_values")
    found = []
    give_up = time.monotonic() + 240
    for query in queries:
        found.append([one.item_id for one in store.search([Query(query, selection)], K)[0]])
        while not live.idle():  # traffic slower than the checks: none dropped, every sample counts
            assert time.monotonic() < give_up
            time.sleep(0.05)
    measured = recall_at(found, exact_top(queries, vectors, K))
    estimate = store.describe().live_recall
    assert estimate is not None and estimate.k == K and estimate.samples >= 25 and estimate.dropped == 0
    assert measured < 0.95  # the effort gives a recall short of 1: something to measure
    assert abs(estimate.recall - measured) <= max(estimate.error, 0.03)


def test_a_reload_ends_the_replaced_stores_live_recall_thread(
    milvus_server: MilvusServerProcess, tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Each store samples with a LiveRecall of its own; a replaced store's thread lived on, idle.
    model = read_model_manifest(tiny_model_dir)
    identity = {"model_name": model.model_name, "model_onnx_sha256": model.onnx_sha256}
    vectors = clustered_rows(1_500, model.dim, seed=5)
    items_dir = vector_items(tmp_path / "items", vectors, **identity)
    sync_to_milvus(items_dir, milvus_server.uri, "live_recall_reload", progress=False,
                   vector_index=VectorIndex.of("HNSW"))  # fmt: skip
    settings = server_settings(
        tiny_model_dir, None, items_store="milvus", milvus_uri=milvus_server.uri,
        milvus_collection="live_recall_reload", milvus_live_recall=1.0,
    )  # fmt: skip
    served = start_server(settings)
    try:
        with EmbedrecClient(served.target, timeout=30) as client:
            first = served.app.state.service.items
            client.recommend(3, vector=vectors[0])  # sampled: the check thread starts
            wait_for(lambda: client.info().items_live_recall_samples >= 1, 20.0)
            thread = first.live_recall._thread
            assert thread is not None and thread.is_alive()
            client.reload_items()
            assert served.app.state.service.items is not first
            wait_for(lambda: not thread.is_alive(), 10.0)
            client.recommend(3, vector=vectors[1])  # the new store samples with its own
            wait_for(lambda: client.info().items_live_recall_samples >= 1, 20.0)
    finally:
        served.close()
