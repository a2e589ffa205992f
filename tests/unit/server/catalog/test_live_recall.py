"""The live recall estimate's arithmetic: the mean with a normal error bar, and samples dropped
when the checks fall behind. (On a real Milvus server: tests/e2e/test_live_recall.py.)"""

from __future__ import annotations

import time

import numpy as np

from embedrec.server.catalog.live_recall import LiveRecall, estimate_of

K = 10


def test_the_estimate_is_the_mean_with_a_normal_error_bar() -> None:
    assert estimate_of([], K) == (0.0, 0.0)
    assert estimate_of([0.8], K) == (0.8, 0.0)
    mean, error = estimate_of([1.0, 0.8, 0.9, 0.7], K)
    assert abs(mean - 0.85) < 1e-12
    assert abs(error - 1.96 * np.std([1.0, 0.8, 0.9, 0.7], ddof=1) / 2) < 1e-12


def test_a_sample_is_dropped_not_waited_for_when_the_checks_fall_behind() -> None:
    started = time.monotonic()

    def slow(profile: object, selection: object, k: int) -> list[str]:
        time.sleep(0.5)
        return ["a"]

    live = LiveRecall(1.0, 100, 1.0)
    for _ in range(20):
        live.offer(slow, None, None, 1, ["a"])
    assert time.monotonic() - started < 0.5  # the hot path never waited for a check
    assert live.estimate().dropped >= 20 - 9  # a queue of 8, one in the thread


def test_close_ends_the_thread_and_stops_sampling() -> None:
    live = LiveRecall(1.0, 10, 1.0, seed=0)
    live.offer(lambda profile, selection, k: ["a"], None, None, 1, ["a"])
    thread = live._thread
    assert thread is not None and thread.is_alive()
    while not live.idle():
        time.sleep(0.01)
    live.close()
    assert not thread.is_alive()
    live.offer(lambda profile, selection, k: ["a"], None, None, 1, ["a"])  # closed: not sampled
    assert live._thread is thread and live.estimate().checked == 1
