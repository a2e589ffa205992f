"""The filtered-search plan follows the admitted share (milvus_filtered), without Milvus.
(Recall under filters on a real Milvus server: tests/e2e/test_milvus_filtered.py.)"""

from __future__ import annotations

from embedrec.server.catalog.milvus.filtered import MAX_PARTS, FilterPlan, plan_for


def test_the_plan_follows_the_admitted_share() -> None:
    assert plan_for(300, 10_000) == FilterPlan()  # 3%: Milvus scans exactly by itself
    assert plan_for(1_000, 10_000) == FilterPlan(parts=2)
    assert plan_for(3_000, 10_000) == FilterPlan(parts=5)
    assert plan_for(5_000, 10_000).parts == MAX_PARTS
    assert plan_for(6_000, 10_000) == FilterPlan(ef_scale=1 / 0.6)
    assert plan_for(10_000, 10_000) == FilterPlan(ef_scale=1.0)
    assert plan_for(0, 10_000) == FilterPlan() and plan_for(5, 0) == FilterPlan()
