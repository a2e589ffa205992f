"""The filtered-search plan follows the admitted share (milvus_filtered), without Milvus.
(Recall under filters on a real Milvus server: tests/e2e/test_milvus_filtered.py.)"""

from __future__ import annotations

from embedrec.server.catalog.milvus.filtered import (
    EXACT_ROWS,
    MAX_PARTS,
    FilterPlan,
    SegmentLayout,
    SegmentSizes,
    plan_for,
)

INDEXED = SegmentLayout(0, unindexed=False)


def test_the_plan_follows_the_admitted_share() -> None:
    assert plan_for(300, 10_000, INDEXED) == FilterPlan()  # 3%: Milvus scans exactly by itself
    assert plan_for(10_000, 100_000) == FilterPlan(parts=2)
    assert plan_for(30_000, 100_000) == FilterPlan(parts=5)
    assert plan_for(50_000, 100_000) == FilterPlan(parts=8)
    assert plan_for(60_000, 100_000) == FilterPlan(ef_scale=1 / 0.6)
    assert plan_for(100_000, 100_000) == FilterPlan(ef_scale=1.0)
    assert plan_for(0, 10_000) == FilterPlan() and plan_for(5, 0) == FilterPlan()


def test_few_admitted_rows_are_scored_by_embedrec_while_a_segment_is_unindexed() -> None:
    # Whatever their share: rows in a segment Milvus left unindexed are searched approximately.
    assert plan_for(1, 10_000) == FilterPlan(exact=True)  # unknown layout: as if unindexed
    assert plan_for(EXACT_ROWS, 1_000_000, SegmentLayout(4_000, unindexed=True)) == FilterPlan(exact=True)
    assert plan_for(EXACT_ROWS + 1, 1_000_000) == FilterPlan()
    assert plan_for(1, 10_000, INDEXED) == FilterPlan()  # every segment indexed: Milvus is exact


def test_the_slices_are_sized_for_the_smallest_indexed_segment() -> None:
    # 3% of the rows, but a segment of 20,000 rows may hold all 3,000 (15%): 3 slices.
    assert plan_for(3_000, 100_000, SegmentLayout(20_000, unindexed=False)) == FilterPlan(parts=3)
    assert plan_for(3_000, 100_000, SegmentLayout(100_000, unindexed=False)) == FilterPlan()
    assert plan_for(40_000, 100_000, SegmentLayout(20_000, unindexed=False)) == FilterPlan(parts=MAX_PARTS)


def test_segment_sizes_tell_unindexed_segments_flushed_or_loaded() -> None:
    indexed = [(4_000, True), (20_000, True)]
    assert SegmentSizes(lambda: ([500, 4_000, 20_000], indexed)).layout() == SegmentLayout(4_000, unindexed=True)
    assert SegmentSizes(lambda: ([4_000, 20_000], indexed)).layout() == SegmentLayout(4_000, unindexed=False)
    # A compaction merged a small segment into a 4,500-row one the query node has not loaded yet.
    merging = [(4_000, True), (500, False)]
    assert SegmentSizes(lambda: ([4_500], merging)).layout() == SegmentLayout(4_500, unindexed=True)
    assert SegmentSizes(lambda: ([500], [])).layout() == SegmentLayout(0, unindexed=True)
    assert SegmentSizes(lambda: None).layout() == SegmentLayout(0, unindexed=True)
