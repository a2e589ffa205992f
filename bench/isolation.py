"""Latency isolation: does one kind of call stall another? This code against the code before the
event-loop change (a git worktree of BASELINE_COMMIT), in one run, on the same catalog.

Server: `embedrec serve` defaults, bundled MiniLM-L6 fp32, a synthetic 64k-item matrix (random
unit rows written as the model's items, memory-mapped), in its own process. Load: the project's
load tester, each load in its own process (closed loop); a background load starts first and runs
through the measured step.

Rows: Info alone / under Recommend c=4 / under Embed c=32; 1-text Embed c=1 alone / under
Recommend c=4; Recommend by vector at c=1, 4, 16; Embed c=32 alone; Embed c=8 with Recommend c=4
(mixed load: both throughputs). Also the micro-measurements behind the event loop's cut-offs.

Usage: python -m bench.isolation [--quick] [--baseline REV]   (make bench-isolation)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, ensure_artifacts, run_header, server_process, synthetic_items, write_section
from embedrec.client.loadtest.runner import StepPlan, run_step
from embedrec.client.loadtest.workload import TextLengths, Workload

BASELINE_COMMIT = "adbf1b4"  # main before this change: searches <= 65,536 rows ran inline on the loop
ITEMS = 64_000
DIM = 384
INFO = Workload(rpc_weights={"info": 1.0})
EMBED = Workload(rpc_weights={"embed": 1.0}, lengths=TextLengths(16, 16))
RECOMMEND = Workload(rpc_weights={"recommend": 1.0}, k=10)


def _measure(target: str, workload: Workload, concurrency: int, seconds: float, warmup: float) -> dict[str, Any]:
    result = asyncio.run(run_step(target, workload, StepPlan("closed", concurrency, seconds, warmup), dim=DIM))
    return result.summary()


class Loads:
    """Load processes against one server: `measure` runs a step in a fresh process, optionally
    while `background` loads run in others (started first, outlasting the step)."""

    def __init__(self, target: str, seconds: float) -> None:
        self.target, self.seconds = target, seconds
        self._pool = ProcessPoolExecutor(max_workers=3, mp_context=multiprocessing.get_context("spawn"))

    def measure(
        self, workload: Workload, concurrency: int, *background: tuple[Workload, int]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(the measured step's summary, each background load's summary)."""
        lead = 1.5
        behind: list[Future[dict[str, Any]]] = [
            self._pool.submit(_measure, self.target, load, level, self.seconds + 2 * lead, 0.5)
            for load, level in background
        ]
        if behind:
            time.sleep(lead + 1.0)  # process start-up, then the background load's own warm-up
        measured = self._pool.submit(_measure, self.target, workload, concurrency, self.seconds, 0.5).result()
        return measured, [future.result() for future in behind]

    def close(self) -> None:
        self._pool.shutdown()


def run_version(root: Path, items_dir: Path, seconds: float, server_args: Sequence[str] = ()) -> dict[str, Any]:
    """Every row against a server started from the code at `root` with `server_args`."""
    rows: dict[str, Any] = {}
    with server_process(["--metrics-port", "-1", *server_args], items_dir=items_dir, cwd=root) as (target, _):
        loads = Loads(target, seconds)
        try:
            loads.measure(RECOMMEND, 4)  # warm the matrix into the page cache
            rows["info alone"] = loads.measure(INFO, 1)[0]
            rows["info + recommend c4"] = loads.measure(INFO, 1, (RECOMMEND, 4))[0]
            rows["info + embed c32"] = loads.measure(INFO, 1, (EMBED, 32))[0]
            rows["embed c1 alone"] = loads.measure(EMBED, 1)[0]
            rows["embed c1 + recommend c4"] = loads.measure(EMBED, 1, (RECOMMEND, 4))[0]
            for concurrency in (1, 4, 16):
                rows[f"recommend c{concurrency}"] = loads.measure(RECOMMEND, concurrency)[0]
            rows["embed c32"] = loads.measure(EMBED, 32)[0]
            embed, (recommend,) = loads.measure(EMBED, 8, (RECOMMEND, 4))
            rows["mixed embed c8"], rows["mixed recommend c4"] = embed, recommend
        finally:
            loads.close()
    return rows


def baseline_tree(revision: str, directory: Path) -> Path:
    """A detached worktree of `revision` in `directory`."""
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(directory), revision], cwd=REPO_ROOT, check=True, capture_output=True
    )
    return directory


def micro_costs() -> list[str]:
    """The figures behind the event loop's cut-offs (embedrec.server.batching.offload), measured now."""
    # Kept whole: one table of micro-measurements, each row a few lines of the same shape.
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from bench.common import MODEL_DIR
    from embedrec.server.inference.tokenization import TextTokenizer
    from embedrec.server.manifest import read_model_manifest
    from embedrec.v1 import embedrec_pb2 as pb

    manifest = read_model_manifest(MODEL_DIR)
    tokenizer = TextTokenizer(MODEL_DIR / "tokenizer.json", max_length=manifest.max_length, pad_token_id=0)

    def median_us(function: Any, repeats: int = 500) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1e6

    words = [
        "energy",
        "saving",
        "quiet",
        "air",
        "conditioner",
        "for",
        "the",
        "family",
        "home",
        "with",
        "a",
        "remote",
        "control",
    ]
    lines = ["| work | median us |", "|---|---|"]
    for count in (3, 10, 20, 50):
        text = [" ".join(words[i % len(words)] for i in range(count))]
        cost = median_us(functools.partial(tokenizer.tokenize, text))
        lines.append(f"| tokenize one {count}-word text ({len(text[0])} chars) | {cost:.0f} |")

    executor = ThreadPoolExecutor(1)

    async def hops() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        round_trips = []
        cpu_started = time.thread_time()
        for _ in range(3000):
            started = time.perf_counter()
            await loop.run_in_executor(executor, int)
            round_trips.append(time.perf_counter() - started)
        loop_cpu = (time.thread_time() - cpu_started) / 3000
        return statistics.median(round_trips) * 1e6, loop_cpu * 1e6

    round_trip, loop_cpu = asyncio.run(hops())
    lines.append(f"| hop to a thread and back: round trip | {round_trip:.0f} |")
    lines.append(f"| hop to a thread and back: event-loop thread CPU | {loop_cpu:.0f} |")
    for k in (10, 100):
        cost = median_us(functools.partial(_recommend_response, k))
        lines.append(f"| RecommendResponse of {k} items | {cost:.0f} |")
    for count in (1, 64):
        values = np.random.default_rng(0).random((count, DIM), dtype=np.float32).ravel()
        cost = median_us(functools.partial(pb.EmbedResponse, values=values, dim=DIM), 50)
        lines.append(f"| EmbedResponse of {count} vectors, values=array (before) | {cost:.0f} |")
    return lines


def _recommend_response(k: int) -> Any:
    from embedrec.v1 import embedrec_pb2 as pb

    return pb.RecommendResponse(items=[pb.ScoredItem(id=f"item-{i}", score=0.5) for i in range(k)])


ROWS = [
    ("Info p50 / p99 ms, alone", "info alone", "latency"),
    ("Info p50 / p99 ms, while Recommend c=4", "info + recommend c4", "latency"),
    ("Info p50 / p99 ms, while Embed c=32", "info + embed c32", "latency"),
    ("Embed 1 text c=1 p50 / p99 ms, alone", "embed c1 alone", "latency"),
    ("Embed 1 text c=1 p50 / p99 ms, while Recommend c=4", "embed c1 + recommend c4", "latency"),
    ("Recommend c=1 req/s", "recommend c1", "rate"),
    ("Recommend c=4 req/s", "recommend c4", "rate"),
    ("Recommend c=16 req/s", "recommend c16", "rate"),
    ("Embed c=32 req/s", "embed c32", "rate"),
    ("Mixed: Embed c=8 req/s", "mixed embed c8", "rate"),
    ("Mixed: Recommend c=4 req/s (same time)", "mixed recommend c4", "rate"),
]


def _cell(row: dict[str, Any], kind: str) -> str:
    if kind == "rate":
        return f"{row['requests_per_s']:.1f}"
    return f"{row['latency_ms']['p50']:.2f} / {row['latency_ms']['p99']:.2f}"


def report(before: dict[str, Any], after: dict[str, Any], seconds: float, baseline: str) -> list[str]:
    """The table of both versions, with after/before ratios."""
    lines = [
        f"| measure | before ({baseline}) | after | after / before |",
        "|---|---|---|---|",
    ]
    for label, key, kind in ROWS:
        old, new = before[key], after[key]
        if kind == "rate":
            ratio = new["requests_per_s"] / old["requests_per_s"]
        else:
            ratio = new["latency_ms"]["p50"] / old["latency_ms"]["p50"]
        lines.append(f"| {label} | {_cell(old, kind)} | {_cell(new, kind)} | {ratio:.2f} |")
    return lines


def targets(rows: dict[str, Any]) -> list[str]:
    """The issue's targets, checked on one version's rows."""
    info_alone, info_loaded = rows["info alone"]["latency_ms"], rows["info + recommend c4"]["latency_ms"]
    embed_alone, embed_loaded = rows["embed c1 alone"]["latency_ms"], rows["embed c1 + recommend c4"]["latency_ms"]
    scaling = rows["recommend c16"]["requests_per_s"] / rows["recommend c1"]["requests_per_s"]
    return [
        f"Info p50 under Recommend c=4: {info_loaded['p50']:.2f} ms (target <= 2)",
        f"Info p99 under Recommend c=4 / alone: {info_loaded['p99'] / info_alone['p99']:.2f} (target <= 3)",
        f"Embed c=1 p50 under Recommend c=4 / alone: {embed_loaded['p50'] / embed_alone['p50']:.2f} (target <= 2.5)",
        f"Recommend c=16 / c=1 throughput: {scaling:.2f} (target >= 3)",
    ]


THREAD_CONFIGS = [
    (
        "before the tuning: spinning inference threads, searches at normal priority",
        ("--intra-op-spinning", "true", "--search-niceness", "0"),
    ),
    ("spinning off, searches at normal priority", ("--search-niceness", "0")),
    ("spinning off, searches at nice +2", ("--search-niceness", "2")),
    ("spinning off, searches at nice +5", ("--search-niceness", "5")),
    ("spinning off, nice +5, --search-threads 1", ("--search-niceness", "5", "--search-threads", "1")),
]


def thread_budget(items_dir: Path, seconds: float) -> list[str]:
    """The same rows for each thread configuration of the current code (mixed load included)."""
    header = "| configuration | " + " | ".join(label for label, _, _ in ROWS) + " |"
    lines = [header, "|---|" + "---|" * len(ROWS)]
    for label, arguments in THREAD_CONFIGS:
        rows = run_version(REPO_ROOT, items_dir, seconds, arguments)
        lines.append(f"| {label} | " + " | ".join(_cell(rows[key], kind) for _, key, kind in ROWS) + " |")
        print(lines[-1], flush=True)
    return lines


def main() -> int:
    """Run both versions and write the BENCHMARKS.md section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s steps instead of 6 (a smoke run)")
    parser.add_argument("--baseline", default=BASELINE_COMMIT, help="the revision to compare with")
    parser.add_argument(
        "--threads", action="store_true", help="instead: the current code under each thread configuration"
    )
    arguments = parser.parse_args()
    seconds = 2.0 if arguments.quick else 6.0
    ensure_artifacts()
    if arguments.threads:
        with tempfile.TemporaryDirectory(prefix="embedrec-isolation-") as temporary:
            table = thread_budget(synthetic_items(Path(temporary) / "items", ITEMS), seconds)
        body = "\n".join(
            [
                "## Event-loop isolation: thread budget under mixed load",
                "",
                run_header("python -m bench.isolation --threads"),
                "- the rows of the isolation table for the current code, one server per configuration "
                f"(synthetic {ITEMS:,}-item matrix, {seconds:g} s steps)",
                "",
                *table,
            ]
        )
        write_section("isolation-threads", body + "\n")
        print(body)
        return 0
    micro = micro_costs()
    with tempfile.TemporaryDirectory(prefix="embedrec-isolation-") as temporary:
        items_dir = synthetic_items(Path(temporary) / "items", ITEMS)
        old_root = baseline_tree(arguments.baseline, Path(temporary) / "baseline")
        try:
            after = run_version(REPO_ROOT, items_dir, seconds)
            before = run_version(old_root, items_dir, seconds)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_root)], cwd=REPO_ROOT, check=False)
    lines = [
        "## Event-loop isolation: one kind of call never stalls another",
        "",
        run_header("make bench-isolation  (python -m bench.isolation)"),
        f"- server: `embedrec serve` defaults, bundled MiniLM-L6 fp32 on CPU, a synthetic {ITEMS:,}-item matrix "
        f"(dim {DIM}, memory-mapped); before = a worktree of `{arguments.baseline}` run with the same venv; load: "
        f"`embedrec loadtest`'s runner, closed loop, each load in its own process, {seconds:g} s per step, "
        "Embed texts ~20 tokens, Recommend by vector k=10, all on the same 2 cores as the server",
        "",
        *report(before, after, seconds, arguments.baseline),
        "",
        "Targets (after): " + "; ".join(targets(after)) + ".",
        "",
        "Before, for the record: " + "; ".join(targets(before)) + ".",
        "",
        "What the event loop's cut-offs rest on (`embedrec/server/batching/offload.py`), measured in this run:",
        "",
        *micro,
    ]
    body = "\n".join(lines) + "\n"
    write_section("isolation", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
