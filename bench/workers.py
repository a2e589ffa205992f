"""Scaling up on one host: 1 vs 2 worker processes sharing the port, same run, plus the memory
they use together (the item matrix is mapped read-only and held once by the page cache).

Usage: python -m bench.workers   (make bench-workers)
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ensure_artifacts, run_header, server_process, synthetic_items, write_section
from embedrec.client.loadtest.processes import run_step_in_processes
from embedrec.client.loadtest.runner import StepPlan
from embedrec.client.loadtest.workload import TextLengths, Workload
from embedrec.server.manifest import ITEMS_MATRIX

ITEMS = 200_000
STEP_S, WARMUP_S = 5.0, 1.0
LOADS = [
    ("Info", Workload(rpc_weights={"info": 1.0}), 64, 2),
    ("Recommend by vector, k=10", Workload(rpc_weights={"recommend": 1.0}, k=10), 16, 1),
    ("Embed, ~20 tokens", Workload(rpc_weights={"embed": 1.0}, lengths=TextLengths(16, 16)), 32, 1),
]


def memory_of(pids: list[int]) -> dict[str, float]:
    """Summed Rss, Pss, Pss_File and Pss_Anon of `pids`, MiB (from /proc/PID/smaps_rollup)."""
    totals = {"Rss": 0.0, "Pss": 0.0, "Pss_File": 0.0, "Pss_Anon": 0.0}
    for pid in pids:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        for key in totals:
            match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
            totals[key] += int(match.group(1)) / 1024 if match else 0.0
    return totals


def run_config(workers: int, items_dir: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Every load against `workers` workers; the summaries and the workers' summed memory."""
    arguments = ["--workers", str(workers), "--metrics-port", "-1"]
    with server_process(arguments, items_dir=items_dir) as (target, process):
        time.sleep(2.0)  # every worker warm
        summaries = []
        for name, workload, concurrency, processes in LOADS:
            plan = StepPlan("closed", concurrency, STEP_S, WARMUP_S)
            result = run_step_in_processes(target, workload, plan, dim=384, processes=processes, channels=4)
            summary = result.summary()
            summary["label"] = f"{workers} worker{'s' * (workers > 1)}: {name}, c{concurrency}"
            summaries.append(summary)
            print(summary["label"], f"{summary['requests_per_s']:.1f}/s", flush=True)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        pids = [int(pid) for pid in children.read_text().split()] if workers > 1 else [process.pid]
        return summaries, memory_of(pids)


def main() -> int:
    """Run both configurations and write the BENCHMARKS.md section."""
    ensure_artifacts()
    with tempfile.TemporaryDirectory(prefix="embedrec-items-") as temporary:
        items_dir = synthetic_items(Path(temporary), ITEMS)
        matrix_mib = (items_dir / ITEMS_MATRIX).stat().st_size / 2**20
        one, one_memory = run_config(1, items_dir)
        two, two_memory = run_config(2, items_dir)
    lines = [
        "## Workers: 1 vs 2 processes on one host",
        "",
        run_header("make bench-workers  (python -m bench.workers)"),
        f"- server: `embedrec serve --workers N` (intra-op threads split: 2 for 1 worker, 1 each for 2), bundled "
        f"MiniLM-L6 fp32, a synthetic {ITEMS:,}-item matrix ({matrix_mib:.0f} MiB, memory-mapped); load: "
        f"`embedrec loadtest` closed loop over 4 connections per client process, {STEP_S:g} s per step, on the "
        "same 2 cores",
        "",
        "| load | 1 worker req/s | 2 workers req/s | ratio | p50 ms (1 / 2) | p99 ms (1 / 2) |",
        "|---|---|---|---|---|---|",
    ]
    for (name, _, concurrency, _), single, double in zip(LOADS, one, two, strict=True):
        lines.append(
            f"| {name}, concurrency {concurrency} | {single['requests_per_s']:.1f} | {double['requests_per_s']:.1f} | "
            f"{double['requests_per_s'] / single['requests_per_s']:.2f} | "
            f"{single['latency_ms']['p50']:.1f} / {double['latency_ms']['p50']:.1f} | "
            f"{single['latency_ms']['p99']:.1f} / {double['latency_ms']['p99']:.1f} |"
        )
    lines += [
        "",
        "Memory after the runs (every worker has scanned the whole matrix), summed over the worker processes:",
        "",
        "| workers | Rss MiB | Pss MiB | Pss of file pages MiB | Pss anonymous MiB |",
        "|---|---|---|---|---|",
        *(
            f"| {count} | {memory['Rss']:.0f} | {memory['Pss']:.0f} | {memory['Pss_File']:.0f} | "
            f"{memory['Pss_Anon']:.0f} |"
            for count, memory in ((1, one_memory), (2, two_memory))
        ),
        "",
        f"The matrix ({matrix_mib:.0f} MiB) is counted once across workers (Pss of file pages stays about one copy), "
        "while each worker adds its own anonymous memory: the ONNX Runtime session (the model's weights) and the "
        "Python process.",
    ]
    body = "\n".join(lines) + "\n"
    write_section("workers", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
