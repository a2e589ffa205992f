"""Recall under filters on an HNSW collection of a real Milvus server (2.3.5): a filter admitting
10-30% of the rows cut Milvus's filtered walk off from part of them (recall@10 0.75-0.90 at any
ef); the store searches such filters in slices Milvus scans exactly (milvus.filtered)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedrec.export.milvus_sync import sync_to_milvus
from embedrec.server.catalog.fields import ConditionSpec
from embedrec.server.catalog.milvus.index import VectorIndex
from embedrec.server.catalog.milvus.store import MilvusItems
from embedrec.server.catalog.store import History, Query
from tests.e2e.milvus_process import MilvusServerProcess
from tests.support.vector_items import recall_at, unit_rows, vector_items

K = 10


def test_filtered_searches_keep_their_recall(milvus_server: MilvusServerProcess, tmp_path: Path) -> None:
    # Rows near 1,500 "sources" (like a real catalog's near-duplicates), the shape whose filtered
    # HNSW walk lost recall in the measurement.
    rng = np.random.default_rng(5)
    sources = unit_rows(rng.standard_normal((1_600, 384)))
    vectors = unit_rows(sources[rng.integers(0, 1_500, 20_000)] + rng.standard_normal((20_000, 384)) * 0.2 / 384**0.5)
    queries = sources[1_500:1_540]
    bucket = rng.integers(0, 100, 20_000)
    items_dir = vector_items(tmp_path / "items", vectors, numeric={"bucket": bucket})
    sync_to_milvus(items_dir, milvus_server.uri, "filtered", progress=False, vector_index=VectorIndex.of("HNSW"))
    store = MilvusItems(milvus_server.uri, "filtered")
    empty = History(np.zeros((0, 384), np.float32), [], None)
    for percent in (1, 10, 20, 50):
        condition = ConditionSpec("bucket", lt=float(percent))
        selection = store.selection(empty, [], [], field="f", conditions=[condition])
        found = [[one.item_id for one in hits] for hits in store.search([Query(q, selection) for q in queries], K)]
        scores = queries @ vectors.T
        scores[:, bucket >= percent] = -np.inf
        truth = [[f"item-{row}" for row in np.argsort(-one, kind="stable")[:K]] for one in scores]
        assert recall_at(found, truth) >= 0.98, percent
