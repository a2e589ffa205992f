"""Running a step from several client processes and merging their raw samples exactly."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from embedrec.client.channel import ChannelConfig
from embedrec.client.loadtest.runner import ProgressCallback, StepPlan, run_step
from embedrec.client.loadtest.stats import StepResult, merge
from embedrec.client.loadtest.workload import Workload

START_DELAY_S = 1.0


def split_level(plan: StepPlan, processes: int) -> list[StepPlan]:
    """`plan` divided over `processes`: concurrency split as evenly as whole numbers allow (no
    process idle), or the rate divided equally (the sum of Poisson processes is Poisson)."""
    shares: list[float]
    if plan.mode == "closed":
        count = min(processes, int(plan.level))
        shares = [int(plan.level) // count + (index < int(plan.level) % count) for index in range(count)]
    else:
        count = processes
        shares = [plan.level / processes] * processes
    return [
        StepPlan(plan.mode, share, plan.duration_s, plan.warmup_s, plan.timeout_s, plan.seed + index)
        for index, share in enumerate(shares)
    ]


def run_step_in_processes(
    target: str,
    workload: Workload,
    plan: StepPlan,
    *,
    dim: int,
    processes: int,
    channel: ChannelConfig | None = None,
    progress: ProgressCallback | None = None,
    channels: int = 1,
) -> StepResult:
    """Run `plan` from `processes` processes (1: this one) and merge their samples."""
    if processes <= 1:
        return asyncio.run(
            run_step(target, workload, plan, dim=dim, channel=channel, progress=progress, channels=channels)
        )
    parts = split_level(plan, processes)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(parts), mp_context=context) as executor:
        start_at = time.time() + START_DELAY_S + 0.5 * len(parts)
        futures = [executor.submit(_child, target, workload, part, dim, channel, start_at, channels) for part in parts]
        if progress is not None:
            while not all(future.done() for future in futures):
                elapsed = time.time() - start_at - plan.warmup_s
                progress(max(0.0, min(elapsed, plan.duration_s)), -1)
                time.sleep(0.25)
        results = [future.result() for future in futures]
    merged = merge(results)
    merged.label, merged.level = plan.label, plan.level
    return merged


def _child(
    target: str, workload: Workload, plan: StepPlan, dim: int, channel: Any, start_at: float, channels: int
) -> StepResult:
    return asyncio.run(run_step(target, workload, plan, dim=dim, channel=channel, start_at=start_at, channels=channels))
