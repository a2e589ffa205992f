"""The built-in tuner's choices on given measurements: throughput only within the idle latency
tolerance, and the default kept unless the candidate really wins. (Tuning a real model:
tests/e2e/test_tuning.py.)"""

from __future__ import annotations


def run(c1_p50: float, c8: float, c32: float, open_loop: float, name: str = "x") -> dict[str, object]:
    return {"candidate": name, "c1_p50_ms": c1_p50, "c8_per_s": c8, "c32_per_s": c32, "open_per_s": open_loop}


def test_the_sweep_prefers_throughput_only_within_the_idle_latency_tolerance() -> None:
    from embedrec.tune import choose

    default = run(12.0, 140, 160, 135, "default")
    faster_but_slower_alone = run(15.0, 150, 200, 175, "2x1")
    slightly_faster = run(12.5, 145, 170, 150, "2x2")
    assert choose([default, faster_but_slower_alone, slightly_faster]) is slightly_faster
    assert choose([default, faster_but_slower_alone, slightly_faster], 1.3) is faster_but_slower_alone
    assert choose([default, run(20.0, 500, 500, 500)]) is default


def test_the_confirmation_keeps_the_default_unless_the_candidate_really_wins() -> None:
    from embedrec.tune import confirms

    default_runs = [run(0, 140, 160, 0), run(0, 150, 150, 0)]
    assert not confirms([run(0, 142, 162, 0), run(0, 149, 152, 0)], default_runs)  # within the noise margin
    assert confirms([run(0, 160, 190, 0), run(0, 165, 185, 0)], default_runs)
