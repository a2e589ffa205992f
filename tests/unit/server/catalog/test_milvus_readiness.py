"""Readiness of an approximate Milvus index, without Milvus: how the rows still waiting are
described. (On a real Milvus server: tests/e2e/test_milvus_readiness.py.)"""

from __future__ import annotations

from embedrec.server.catalog.milvus.readiness import IndexReadiness


def test_readiness_describes_the_rows_still_waiting() -> None:
    assert IndexReadiness(0, 10_000, 0).serving
    assert IndexReadiness(0, 10_000, 0).describe() == ""
    waiting = IndexReadiness(3_000, 10_000, 1)
    assert not waiting.serving
    assert waiting.describe().startswith("3,000 of 10,000 rows (1 segment) answered from Milvus's interim index")
