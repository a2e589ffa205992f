"""`embedrec serve` with a timestamp at each stage of an Embed call, for bench/embed_stages.py.

Run as a script with PYTHONPATH naming the source tree to measure (so the same probe times an
older checkout too); EMBEDREC_STAGES_OUT names the JSON file the stage medians go to at exit.
Meant for sequential calls (concurrency 1): each call's stages are read in arrival order.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import itertools
import json
import os
import statistics
import sys
import time
from typing import Any

from embedrec.server.batching import batcher
from embedrec.server.edge import messages
from embedrec.server.inference import encoder

EVENTS: list[tuple[str, int]] = []
# (stage, method owner, method name candidates: the first one this tree has is timed)
PROBES: list[tuple[str, Any, tuple[str, ...]]] = [
    ("decode", messages, ("decode",)),
    ("embed", messages, ("embed",)),
    ("submit", batcher.MicroBatcher, ("submit",)),
    ("form batch", batcher.MicroBatcher, ("_form_batch",)),
    ("lane", batcher.MicroBatcher, ("_infer_in_lane", "_infer_and_maybe_finish")),
    ("model", encoder.OnnxEncoder, ("_run_session",)),
    ("deliver", batcher.MicroBatcher, ("_deliver",)),
]
ORDER = [
    "decode>", "decode<", "embed>", "submit>", "form batch>", "form batch<", "lane>", "model>", "model<",
    "lane<", "deliver>", "deliver<", "submit<", "embed<",
]  # fmt: skip
STAGE_NAMES = {
    ("decode>", "decode<"): "decode the request bytes",
    ("decode<", "embed>"): "into the Embed operation",
    ("embed>", "submit>"): "validate, tokenise, admit",
    ("submit>", "form batch>"): "queue until the batch forms",
    ("form batch>", "form batch<"): "form the batch",
    ("form batch<", "lane>"): "hand to the inference thread",
    ("lane>", "model>"): "pad the batch",
    ("model>", "model<"): "ONNX Runtime session.run",
    ("model<", "lane<"): "pool, normalise, hand back (inference thread)",
    ("lane<", "deliver>"): "back on the event loop",
    ("deliver>", "deliver<"): "complete the futures",
    ("deliver<", "submit<"): "wake the caller",
    ("submit<", "embed<"): "stack vectors, build the reply",
}


def _timed(original: Any, stage: str) -> Any:
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            EVENTS.append((stage + ">", time.perf_counter_ns()))
            try:
                return await original(*args, **kwargs)
            finally:
                EVENTS.append((stage + "<", time.perf_counter_ns()))

        return timed_async

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        EVENTS.append((stage + ">", time.perf_counter_ns()))
        try:
            return original(*args, **kwargs)
        finally:
            EVENTS.append((stage + "<", time.perf_counter_ns()))

    return timed


def install() -> None:
    """Wrap every probed method this tree has."""
    for stage, owner, names in PROBES:
        name = next(name for name in names if hasattr(owner, name))
        setattr(owner, name, _timed(getattr(owner, name), stage))


def report() -> None:
    """Median µs of each stage over the complete calls (the first 50 skipped as warm-up)."""
    calls: list[dict[str, int]] = []
    for name, at in EVENTS:
        if name == "decode>":
            calls.append({})
        if calls and name not in calls[-1]:
            calls[-1][name] = at
    complete = [call for call in calls if all(stage in call for stage in ORDER)][50:]
    stages = {
        STAGE_NAMES[(first, second)]: statistics.median((call[second] - call[first]) / 1000 for call in complete)
        for first, second in itertools.pairwise(ORDER)
    }
    stages["total, request decoded to reply built"] = statistics.median(
        (call["embed<"] - call["decode>"]) / 1000 for call in complete
    )
    with open(os.environ["EMBEDREC_STAGES_OUT"], "w", encoding="utf-8") as out:
        json.dump({"calls": len(complete), "median_us": stages}, out)


if __name__ == "__main__":
    install()
    atexit.register(report)
    from embedrec.cli import main

    sys.exit(main())
