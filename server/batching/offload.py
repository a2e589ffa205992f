"""Keeping CPU work off the event loop: a small thread pool, and the measured cut-offs below which
a piece of work is cheaper to do inline than to hand to a thread.

The event loop only parses, admits, awaits and answers; anything that costs more than handing it
to a thread runs in `CpuPool` (tokenising, id look-ups in the memory-mapped catalog, building
large responses) or in a batcher's worker thread (inference, item searches). The tokenizers
library, numpy and ONNX Runtime release the GIL, so that work really runs beside the loop.

Measured on the development machine (2 cores; `make bench-isolation` re-measures these figures
and writes them to BENCHMARKS.md, "Event-loop isolation"): a hop to a thread and back costs the loop thread ~85 us of
CPU (p50 round trip ~115 us); tokenising one text costs ~30 us + ~0.7 us per character (3 words
38 us, 10 words 68 us, 20 words 115 us). So a request whose texts hold at most
INLINE_TOKENIZE_MAX_CHARS characters is tokenised inline (at most about one hop's worth of loop
time), longer ones in the pool. A Recommend response of k items costs ~2.3 us per item to build
(k=10: 23 us, k=100: 240 us), so responses with more than INLINE_RESPONSE_MAX_ITEMS items are
built in the pool.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

INLINE_TOKENIZE_MAX_CHARS = 80
INLINE_RESPONSE_MAX_ITEMS = 32
# JSON of up to this many floats is written inline: orjson takes ~20 us per 384-d vector, so
# 4 vectors (~70 us) cost about one hop to the pool.
INLINE_JSON_MAX_FLOATS = 1536
# Request bodies (JSON or protobuf) up to this size are checked and parsed on the event loop
# (cheaper than the hop to the pool); larger ones in the pool.
INLINE_PARSE_MAX_BYTES = 4096


class CpuPool:
    """A bounded thread pool for request-sized CPU work, awaited from the event loop."""

    def __init__(self, threads: int = 0, *, name: str = "embedrec-cpu") -> None:
        """`threads` workers (0: one per core); their threads are named `name`-N."""
        self.threads = threads or os.cpu_count() or 1
        self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=name)

    async def run(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`function(*args, **kwargs)` in a pool thread; its result or its exception."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))

    async def run_unless_small(self, small: bool, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`function(*args, **kwargs)` inline when `small` (cheaper than the hop), else in the pool."""
        if small:
            return function(*args, **kwargs)
        return await self.run(function, *args, **kwargs)

    def close(self) -> None:
        """Finish queued work and stop the threads."""
        self._executor.shutdown(wait=True)
