"""Asking a running server, through the real asyncio client: the items it knows, and each
user's recommendations by RecommendBatch, with bounded concurrency and a deadline per call.

A call that misses its deadline or is shed (DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAVAILABLE)
is retried twice, in halves; a call that still fails fails only its users (they score 0, counted
by error, the first message kept); the run raises only when every call failed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from embedrec.client.aio import AsyncEmbedrecClient
from embedrec.client.channel import ChannelConfig
from embedrec.client.errors import DeadlineExceeded, EmbedrecClientError, Overloaded, Unavailable
from embedrec.client.models import ServerInfo, UserProfile


class EvaluationError(Exception):
    """The evaluation cannot go on: no call succeeded, or the log and the server disagree."""


@dataclass(frozen=True)
class ServerTarget:
    """A server to evaluate: its label, address, channel settings, and the Recommend options
    every user's request carries (a UserProfile whose k, texts and items are ignored)."""

    label: str
    address: str | Sequence[str]
    options: UserProfile = field(default_factory=UserProfile)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    timeout_s: float = 30.0
    batch_users: int = 32
    concurrency: int = 4


@dataclass
class ServedRun:
    """What a server answered: ranked ids per user position, call latencies, failures."""

    recommended: list[list[str]]
    latencies_s: list[float]
    wall_s: float
    failed_users: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str = ""
    unknown_ids: set[str] = field(default_factory=set)

    def summary(self) -> dict[str, float | int | str]:
        """Latency percentiles (ms), users per second, calls and failures, for the report."""
        latencies = np.asarray(self.latencies_s) * 1000
        served = len(self.recommended) - self.failed_users
        percentiles = np.percentile(latencies, [50, 95, 99]).tolist() if len(latencies) else [0.0] * 3
        return {
            "calls": len(self.latencies_s),
            "p50_ms": round(percentiles[0], 2),
            "p95_ms": round(percentiles[1], 2),
            "p99_ms": round(percentiles[2], 2),
            "users_per_s": round(served / self.wall_s, 1) if self.wall_s > 0 else 0.0,
            "wall_s": round(self.wall_s, 2),
            "failed_users": self.failed_users,
            "first_error": self.first_error,
        }


Progress = Callable[[int], None]
TRANSIENT = (DeadlineExceeded, Overloaded, Unavailable)
RETRIES = 2
RETRY_PAUSE_S = 0.5


async def server_info(target: ServerTarget) -> ServerInfo:
    """The target's Info (limits, item count, dim). Raises EmbedrecClientError when unreachable."""
    async with _client(target) as client:
        return await client.info()


async def unknown_items(target: ServerTarget, items: Sequence[str], info: ServerInfo) -> set[str]:
    """The ids of `items` the server does not know: asked as history of probe users (a unit
    vector keeps each profile non-empty), `max_history_items` ids per user, k=1."""
    per_user = max(1, min(info.limits.get("max_history_items", 1000), 1000))
    per_call = max(1, min(info.limits.get("max_batch_users", 64), target.batch_users))
    probe = np.zeros(info.dim, dtype=np.float32)
    probe[0] = 1.0
    chunks = [list(items[start : start + per_user]) for start in range(0, len(items), per_user)]
    unknown: set[str] = set()
    async with _client(target) as client:
        for start in range(0, len(chunks), per_call):
            users = [
                UserProfile(k=1, vector=probe, item_ids=chunk, ignore_unknown_items=True)
                for chunk in chunks[start : start + per_call]
            ]
            for found in await client.recommend_batch(users):
                unknown.update(found.unknown_item_ids)
    return unknown


async def recommend_all(
    target: ServerTarget, profiles: Sequence[UserProfile], info: ServerInfo, progress: Progress | None = None
) -> ServedRun:
    """Each profile's ranked ids (in profile order) from RecommendBatch calls of at most
    `target.batch_users` (and the server's max_batch_users) users, `target.concurrency` at a time."""
    size = max(1, min(target.batch_users, info.limits.get("max_batch_users", 64) or 64))
    batches = [list(range(start, min(start + size, len(profiles)))) for start in range(0, len(profiles), size)]
    run = ServedRun([[] for _ in profiles], [], 0.0)
    queue: asyncio.Queue[list[int]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    started = time.perf_counter()
    async with _client(target) as client:

        async def worker() -> None:
            while not queue.empty():
                batch = queue.get_nowait()
                await _one_call(client, target, [profiles[index] for index in batch], batch, run)
                if progress is not None:
                    progress(len(batch))

        await asyncio.gather(*(worker() for _ in range(max(1, min(target.concurrency, len(batches) or 1)))))
    run.wall_s = time.perf_counter() - started
    if batches and run.failed_users == len(profiles):
        raise EvaluationError(f"{target.label}: every RecommendBatch call failed; the first: {run.first_error}")
    return run


async def _one_call(
    client: AsyncEmbedrecClient,
    target: ServerTarget,
    users: list[UserProfile],
    positions: list[int],
    run: ServedRun,
    retries: int = RETRIES,
) -> None:
    started = time.perf_counter()
    try:
        answers = await client.recommend_batch(users, timeout=target.timeout_s)
    except TRANSIENT as error:
        if retries > 0:
            # A loaded server missed the deadline or shed load: try again in halves (less work
            # per call) after a pause, so a busy moment does not count as misses.
            await asyncio.sleep(RETRY_PAUSE_S)
            half = max(1, len(users) // 2)
            for start in range(0, len(users), half):
                chunk = slice(start, start + half)
                await _one_call(client, target, users[chunk], positions[chunk], run, retries - 1)
            return
        _failed(run, error, len(users))
        return
    except EmbedrecClientError as error:
        _failed(run, error, len(users))
        return
    run.latencies_s.append(time.perf_counter() - started)
    for position, found in zip(positions, answers, strict=True):
        run.recommended[position] = [item.id for item in found]
        run.unknown_ids.update(found.unknown_item_ids)


def _failed(run: ServedRun, error: EmbedrecClientError, users: int) -> None:
    run.failed_users += users
    run.errors[type(error).__name__] += 1
    run.first_error = run.first_error or f"{type(error).__name__}: {str(error)[:200]}"


def _client(target: ServerTarget) -> AsyncEmbedrecClient:
    return AsyncEmbedrecClient(target.address, timeout=target.timeout_s, channel=target.channel)
