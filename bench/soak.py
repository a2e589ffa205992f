"""Soak: minutes of open-loop Embed load at 3x the sustainable rate, on loopback, bounded.

Reports calls sent, answered by status code, unanswered (must be 0), the server's memory at start
and end, latency of the admitted calls, and how fast Info answers during the overload.

Usage: python -m bench.soak [SECONDS]   (make soak; default 150 s)
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.common import ensure_artifacts, run_header, server_process, write_section
from embedrec.client import EmbedrecClient
from embedrec.client.loadtest.runner import StepPlan, run_step
from embedrec.client.loadtest.workload import TextLengths, Workload
from embedrec.ports import free_port

OVERLOAD = 3.0
WORKLOAD = Workload(rpc_weights={"embed": 1.0}, lengths=TextLengths(16, 16))


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon of `pid`, KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {key: int(re.search(rf"^{key}:\s+(\d+)", status, re.M).group(1)) for key in ("VmRSS", "RssAnon")}  # type: ignore[union-attr]


def probe_info(target: str, stop: threading.Event, samples: list[float]) -> None:
    with EmbedrecClient(target, timeout=10) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.info()
            samples.append(time.perf_counter() - started)
            stop.wait(0.2)


def main() -> int:
    """Measure the sustainable rate, then overload for the soak duration; write BENCHMARKS.md."""
    # Kept whole: a benchmark script (measure, then write its section); one experiment in one place.
    duration_s = float(sys.argv[1]) if len(sys.argv) > 1 else 150.0
    ensure_artifacts()
    metrics_port = free_port()
    with server_process(["--metrics-port", str(metrics_port)]) as (target, process):
        pid = process.pid
        sustainable = asyncio.run(run_step(target, WORKLOAD, StepPlan("closed", 32, 8.0, 2.0), dim=384))
        rate = sustainable.summary()["requests_per_s"]
        memory_start = memory_kib(pid)
        stop, info_samples = threading.Event(), list[float]()
        prober = threading.Thread(target=probe_info, args=(target, stop, info_samples), daemon=True)
        prober.start()
        plan = StepPlan("open", OVERLOAD * rate, duration_s, 0.0, timeout_s=10.0)
        soak = asyncio.run(run_step(target, WORKLOAD, plan, dim=384))
        stop.set()
        prober.join(15)
        memory_end = memory_kib(pid)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    summary = soak.summary()
    server_answered = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("embedrec_requests_total{") and 'rpc="Embed"' in line
    )
    info_ms = np.asarray(info_samples) * 1000
    ok = summary["latency_ms"]
    answered = ", ".join(f"{code} {count}" for code, count in summary["answered"].items())
    body = (
        "\n".join(
            [
                "## Soak: 3x the sustainable Embed rate",
                "",
                run_header(f"make soak  (python -m bench.soak {duration_s:g})"),
                "- server: `embedrec serve` defaults (queue bound max_queued_texts=256), bundled MiniLM-L6 fp32 "
                "on CPU; "
                "load: open loop (Poisson), single ~20-token texts, 10 s deadline per call, same 2 cores",
                "",
                "| measure | value |",
                "|---|---|",
                f"| sustainable rate (closed loop, concurrency 32) | {rate:.1f} requests/s |",
                f"| offered rate | {plan.level:.1f} requests/s for {duration_s:g} s |",
                f"| sent | {summary['sent']} |",
                f"| answered, by status | {answered} |",
                f"| unanswered | {summary['unanswered']} |",
                f"| Embed calls the server counted (metrics, warm-up included) | {server_answered:.0f} |",
                f"| admitted (OK) throughput | {summary['requests_per_s']:.1f} requests/s |",
                f"| admitted latency p50 / p99 / max | {ok['p50']:.0f} / {ok['p99']:.0f} / {ok['max']:.0f} ms |",
                f"| Info latency during the overload p50 / p99 ({len(info_ms)} probes) | "
                f"{np.percentile(info_ms, 50):.1f} / {np.percentile(info_ms, 99):.1f} ms |",
                f"| server RSS start -> end | {memory_start['VmRSS'] / 1024:.0f} -> "
                + f"{memory_end['VmRSS'] / 1024:.0f} MiB |",
                f"| server RssAnon start -> end | {memory_start['RssAnon'] / 1024:.0f} -> "
                f"{memory_end['RssAnon'] / 1024:.0f} MiB |",
            ]
        )
        + "\n"
    )
    write_section("soak", body)
    print(body)
    return 0 if summary["unanswered"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
