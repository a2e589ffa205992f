"""The live recall estimate: sampled real searches re-checked exactly in the background. The
estimator's arithmetic, and on a real Milvus server an HNSW collection searched at a low effort
whose recall the test measures itself: the estimate converges to it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from embedrec.export.milvus_sync import sync_to_milvus
from embedrec.server.catalog.live_recall import LiveRecall
from embedrec.server.catalog.milvus.index import VectorIndex
from embedrec.server.catalog.milvus.store import MilvusItems
from embedrec.server.catalog.store import History, Query, SearchEffort
from tests.e2e.milvus_process import MilvusServerProcess
from tests.support.vector_items import exact_top, recall_at, unit_rows, vector_items

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
