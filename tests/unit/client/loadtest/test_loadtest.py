"""The load-test tool's arithmetic without a server: merged samples, levels split over processes,
the request pool's mix. (Against real servers: tests/e2e/test_loadtest.py.)"""

from __future__ import annotations

from embedrec.client.loadtest.processes import split_level
from embedrec.client.loadtest.runner import StepPlan
from embedrec.client.loadtest.stats import StepResult, merge
from embedrec.client.loadtest.workload import RequestPool, TextLengths, Workload


def test_merging_keeps_every_sample() -> None:
    first, second = StepResult("s", "closed", 1, 1.0), StepResult("s", "closed", 2, 1.2)
    for latency in (0.1, 0.2):
        first.sent += 1
        first.record("OK", latency, 1)
    second.sent += 2
    second.record("OK", 0.3, 1)
    second.record("UNAVAILABLE", 0.01, 1)
    merged = merge([first, second])
    assert (merged.sent, merged.level, merged.duration_s, merged.texts) == (4, 3, 1.2, 3)
    assert sorted(merged.latencies["OK"]) == [0.1, 0.2, 0.3]
    assert merged.answered == {"OK": 3, "UNAVAILABLE": 1}


def test_levels_are_split_over_processes_without_losing_any() -> None:
    assert [p.level for p in split_level(StepPlan("closed", 7, 1, 0), 3)] == [3, 2, 2]
    assert [p.level for p in split_level(StepPlan("closed", 1, 1, 0), 4)] == [1]
    assert sum(p.level for p in split_level(StepPlan("open", 90, 1, 0), 2)) == 90


def test_request_pool_follows_the_mix_and_the_length_range() -> None:
    workload = Workload(rpc_weights={"embed": 3.0, "info": 1.0}, texts_per_request=2, lengths=TextLengths(5, 9))
    pool = RequestPool(workload, dim=8, seed=1)
    drawn = [pool.draw() for _ in range(4000)]
    share = sum(name == "embed" for name, _, _ in drawn) / len(drawn)
    assert 0.7 < share < 0.8
    embeds = [request for name, request, _ in drawn if name == "embed"]
    assert all(len(r.texts) == 2 and all(5 <= len(t.split()) <= 9 for t in r.texts) for r in embeds)  # type: ignore[attr-defined]
