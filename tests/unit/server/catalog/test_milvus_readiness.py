"""An approximate Milvus index right after a sync, on a real Milvus server (2.3.5): the sync
returns only once Milvus searches the index it built (before, it answered from an interim index
with recall ~0.3 whatever the effort), and a server whose collection is still in that window says
so in the items' health, Info, the metrics and every Recommend answer, and answers all the same."""

from __future__ import annotations

from embedrec.server.catalog.milvus_readiness import IndexReadiness


def test_readiness_describes_the_rows_still_waiting() -> None:
    assert IndexReadiness(0, 10_000, 0).serving
    assert IndexReadiness(0, 10_000, 0).describe() == ""
    waiting = IndexReadiness(3_000, 10_000, 1)
    assert not waiting.serving
    assert waiting.describe().startswith("3,000 of 10,000 rows (1 segment) answered from Milvus's interim index")
