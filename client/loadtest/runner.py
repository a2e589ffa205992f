"""Running one load step in this process: closed loop (fixed concurrency) or open loop (Poisson
arrivals at a fixed rate, latency from the scheduled send time)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from embedrec.client.channel import ChannelConfig, open_channel
from embedrec.client.loadtest.http import HttpSender
from embedrec.client.loadtest.stats import StepResult
from embedrec.client.loadtest.workload import RequestPool, Workload
from embedrec.v1 import embedrec_pb2_grpc as pb_grpc

MAX_STEP_SECONDS = 600.0
MAX_IN_FLIGHT = 20_000

ProgressCallback = Callable[[float, int], None]
# (rpc name, request, timeout seconds) -> the call's status name ("OK", "RESOURCE_EXHAUSTED", ...).
Send = Callable[[str, object, float], Awaitable[str]]


@dataclass(frozen=True)
class StepPlan:
    """One step: `mode` "closed" (level = concurrency) or "open" (level = requests/s)."""

    mode: str
    level: float
    duration_s: float
    warmup_s: float
    timeout_s: float = 30.0
    seed: int = 0

    @property
    def label(self) -> str:
        return f"concurrency {int(self.level)}" if self.mode == "closed" else f"rate {self.level:g}/s"


async def run_step(
    target: str,
    workload: Workload,
    plan: StepPlan,
    *,
    dim: int,
    channel: ChannelConfig | None = None,
    start_at: float | None = None,
    progress: ProgressCallback | None = None,
    channels: int = 1,
) -> StepResult:
    """Run `plan` against `target` from this process and return its samples.

    `start_at` (time.time()) lines several processes up. `channels` > 1 spreads calls over that
    many connections (the kernel balances connections, not calls, over workers sharing a port).
    With workload.protocol "http", `target` is the HTTP/JSON edge's host:port (see
    embedrec.client.loadtest.http). Warm-up calls are sent but not kept.
    Bounded: at most MAX_STEP_SECONDS, and each call has a `timeout_s` deadline.
    """
    if not 0 < plan.duration_s <= MAX_STEP_SECONDS or plan.warmup_s < 0:
        raise ValueError(f"duration must be in (0, {MAX_STEP_SECONDS}] s and warm-up >= 0")
    config = ChannelConfig(target=target, retry=None) if channel is None else channel
    pool = RequestPool(workload, dim=dim, seed=plan.seed)
    if workload.protocol == "http":
        sender = HttpSender(target, pool, model=workload.model, token=config.bearer_token)
        try:
            return await _run(sender.send, pool, plan, start_at, progress)
        finally:
            await sender.close()
    if channels > 1:
        config = dataclasses.replace(config, separate_connection=True)
    grpc_channels = [open_channel(config, asyncio=True) for _ in range(max(1, channels))]
    try:
        stubs = [pb_grpc.EmbedRecStub(grpc_channel) for grpc_channel in grpc_channels]
        methods = [
            {"embed": stub.Embed, "recommend": stub.Recommend, "similarity": stub.Similarity, "info": stub.Info}
            for stub in stubs
        ]
        metadata = config.metadata()
        sent = itertools.count()

        async def send(name: str, request: object, timeout: float) -> str:
            try:
                await methods[next(sent) % len(methods)][name](request, timeout=timeout, metadata=metadata)
            except grpc.aio.AioRpcError as error:
                return str(error.code().name)
            return "OK"

        return await _run(send, pool, plan, start_at, progress)
    finally:
        for grpc_channel in grpc_channels:
            await grpc_channel.close()


async def _run(
    send: Send, pool: RequestPool, plan: StepPlan, start_at: float | None, progress: ProgressCallback | None
) -> StepResult:
    """Wait for `start_at`, warm up (unrecorded), then run and return the recorded step."""
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
    if plan.warmup_s:
        warm = StepResult("warm-up", plan.mode, plan.level, plan.warmup_s)
        await _drive(send, pool, plan, plan.warmup_s, warm, None)
    result = StepResult(plan.label, plan.mode, plan.level, plan.duration_s)
    await _drive(send, pool, plan, plan.duration_s, result, progress)
    return result


async def _drive(
    send: Send,
    pool: RequestPool,
    plan: StepPlan,
    duration_s: float,
    result: StepResult,
    progress: ProgressCallback | None,
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    end = started + duration_s

    async def one_call(scheduled: float) -> None:
        name, request, texts = pool.draw()
        result.sent += 1
        code = await send(name, request, plan.timeout_s)
        result.record(code, loop.time() - scheduled, texts)

    reporter = asyncio.ensure_future(_report(loop, started, duration_s, result, progress)) if progress else None
    if plan.mode == "closed":

        async def worker() -> None:
            while loop.time() < end:
                await one_call(loop.time())

        await asyncio.gather(*(worker() for _ in range(int(plan.level))))
    else:
        await _open_loop(loop, one_call, plan, started, end)
    # Throughput over the time until the last answer, not the nominal duration: honest when the
    # tail of a step (or a stalled server) outlasts it.
    result.duration_s = loop.time() - started
    if reporter is not None:
        reporter.cancel()


async def _open_loop(
    loop: asyncio.AbstractEventLoop, one_call: Callable[[float], Any], plan: StepPlan, started: float, end: float
) -> None:
    """Poisson arrivals; each call's latency counts from its scheduled time, even if sent late."""
    rng = random.Random(plan.seed)
    in_flight: set[asyncio.Task[None]] = set()
    scheduled = started
    while True:
        scheduled += rng.expovariate(plan.level)
        if scheduled >= end:
            break
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= MAX_IN_FLIGHT:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.ensure_future(one_call(scheduled))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight)


async def _report(
    loop: asyncio.AbstractEventLoop, started: float, duration_s: float, result: StepResult, progress: ProgressCallback
) -> None:
    while True:
        progress(min(loop.time() - started, duration_s), result.sent)
        await asyncio.sleep(0.25)
