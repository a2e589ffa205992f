"""HTTP `/v1/embeddings` against gRPC Embed on one server, and what tracing costs, in one run.

Server: `embedrec serve` defaults (HTTP on), bundled MiniLM-L6 fp32, in its own process. Load:
the project's load tester in its own process for every step (closed loop, single-text calls of
12-22 generated words): gRPC Embed, and `--protocol http` for the OpenAI route (pre-encoded
keep-alive HTTP/1.1). Steps alternate A B B A per concurrency so drift on the shared machine
hits both sides alike; each figure is the mean of its two steps.

Tracing: the same gRPC load at c=32 against a server with tracing on (every span created and
handed to OpenTelemetry's batch processor, then dropped by the exporter: bench/traced_serve.py)
and against one with tracing off; and "off" against the code before tracing existed (a git
worktree of BASELINE_COMMIT), which shows what the off switch costs.

Usage: python -m bench.http [--seconds S] [--baseline REV]   (make bench-http)
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, ensure_artifacts, run_header, server_process, write_section
from embedrec.ports import free_port

BASELINE_COMMIT = "a509dd0"  # the last commit before the HTTP edge and tracing
CONCURRENCIES = (1, 8, 32, 128)
WARMUP_S = 1.5


def load_step(target: str, protocol: str, model: str, concurrency: int, seconds: float) -> dict[str, Any]:
    """One closed-loop step of single-text Embed calls from this (fresh) process."""
    import asyncio

    from embedrec.client.loadtest.runner import StepPlan, run_step
    from embedrec.client.loadtest.workload import TextLengths, Workload

    workload = Workload(rpc_weights={"embed": 1.0}, lengths=TextLengths(12, 22), protocol=protocol, model=model)
    plan = StepPlan("closed", concurrency, seconds, WARMUP_S)
    summary: dict[str, Any] = asyncio.run(run_step(target, workload, plan, dim=1)).summary()
    return summary


def alternate(
    pool: ProcessPoolExecutor,
    first: tuple[str, str],
    second: tuple[str, str],
    model: str,
    level: int,
    seconds: float,
    rounds: int = 1,
) -> tuple[dict[str, float], dict[str, float]]:
    """`rounds` x A B B A steps of (target, protocol) `first` and `second`; each side's mean
    req/s and p50/p99."""
    runs: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for side in (0, 1, 1, 0) * rounds:
        target, protocol = (first, second)[side]
        runs[side].append(pool.submit(load_step, target, protocol, model, level, seconds).result())
    return _mean(runs[0]), _mean(runs[1])


def _mean(steps: list[dict[str, Any]]) -> dict[str, float]:
    def average(values: list[float]) -> float:
        return sum(values) / len(values)

    errors = sum(sum(count for code, count in step["answered"].items() if code != "OK") for step in steps)
    return {
        "rps": average([step["requests_per_s"] for step in steps]),
        "p50": average([step["latency_ms"]["p50"] for step in steps]),
        "p99": average([step["latency_ms"]["p99"] for step in steps]),
        "errors": float(errors),
    }


def main() -> int:
    """Run every comparison and write the BENCHMARKS.md section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per step")
    parser.add_argument("--baseline", default=BASELINE_COMMIT, help="revision for the tracing-off comparison")
    parser.add_argument("--tracing-rounds", type=int, default=3, help="A B B A rounds of the tracing comparisons")
    arguments = parser.parse_args()
    ensure_artifacts()
    seconds = arguments.seconds
    context = multiprocessing.get_context("spawn")
    http_port = free_port()
    rows: dict[int, tuple[dict[str, float], dict[str, float]]] = {}
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        with server_process(["--http-port", str(http_port), "--metrics-port", "-1"]) as (target, _):
            from embedrec.client.loadtest.http import server_info

            http_target = f"127.0.0.1:{http_port}"
            model = str(server_info(http_target)["modelName"])
            for level in CONCURRENCIES:
                rows[level] = alternate(pool, (target, "grpc"), (http_target, "http"), model, level, seconds)
                grpc_row, http_row = rows[level]
                print(f"c={level}: grpc {grpc_row['rps']:.1f} req/s, http {http_row['rps']:.1f} req/s", flush=True)
        off_flags = ["--http-port", "-1", "--metrics-port", "-1"]
        with (
            server_process(off_flags) as (off_target, _),
            server_process(off_flags, module="bench.traced_serve") as (on_target, _),
        ):
            tracing_off, tracing_on = alternate(
                pool, (off_target, "grpc"), (on_target, "grpc"), model, 32, seconds, arguments.tracing_rounds
            )
        with tempfile.TemporaryDirectory() as scratch:
            old_root = Path(scratch) / "baseline"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(old_root), arguments.baseline],
                cwd=REPO_ROOT,
                check=True,
                capture_output=True,
            )
            try:
                with (
                    server_process(["--metrics-port", "-1"], cwd=old_root) as (before_target, _),
                    server_process(off_flags) as (off_target, _),
                ):
                    before, off = alternate(
                        pool,
                        (before_target, "grpc"),
                        (off_target, "grpc"),
                        model,
                        32,
                        seconds,
                        arguments.tracing_rounds,
                    )
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(old_root)], cwd=REPO_ROOT, check=False)
    body = _section(rows, tracing_off, tracing_on, before, off, arguments.baseline, seconds, arguments.tracing_rounds)
    write_section("http", body)
    print(body)
    return 0


def _section(
    rows: dict[int, tuple[dict[str, float], dict[str, float]]],
    tracing_off: dict[str, float],
    tracing_on: dict[str, float],
    before: dict[str, float],
    off: dict[str, float],
    baseline: str,
    seconds: float,
    rounds: int,
) -> str:
    lines = [
        "## HTTP `/v1/embeddings` vs gRPC Embed, and the cost of tracing",
        "",
        run_header("make bench-http  (python -m bench.http)"),
        f"- bundled MiniLM-L6 fp32, `embedrec serve` defaults; single-text calls of 12-22 generated words; "
        f"closed-loop steps of {seconds:g} s (+{WARMUP_S:g} s warm-up) from the project's load tester in its own "
        "process (gRPC, or `--protocol http`: pre-encoded keep-alive HTTP/1.1 to the OpenAI route); "
        "A B B A order per row, each figure the mean of its two steps",
        "",
        "| concurrency | gRPC req/s | HTTP req/s | HTTP / gRPC | gRPC p50 ms | HTTP p50 ms | gRPC p99 ms "
        "| HTTP p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for level, (grpc_row, http_row) in rows.items():
        lines.append(
            f"| {level} | {grpc_row['rps']:.1f} | {http_row['rps']:.1f} | {http_row['rps'] / grpc_row['rps']:.2f} "
            f"| {grpc_row['p50']:.2f} | {http_row['p50']:.2f} | {grpc_row['p99']:.2f} | {http_row['p99']:.2f} "
            f"| {int(grpc_row['errors'] + http_row['errors'])} |"
        )
    c1_grpc, c1_http = rows[CONCURRENCIES[0]]
    worst = min(http_row["rps"] / grpc_row["rps"] for level, (grpc_row, http_row) in rows.items() if level >= 8)
    lines += [
        "",
        f"Targets: HTTP / gRPC throughput >= 0.9 at c >= 8: worst {worst:.2f}; HTTP p50 at c=1 <= gRPC + 1 ms: "
        f"{c1_http['p50']:.2f} vs {c1_grpc['p50']:.2f} ms ({c1_http['p50'] - c1_grpc['p50']:+.2f} ms).",
        "",
        f"Tracing, gRPC Embed c=32, {rounds} x A B B A rounds per pair (tracing on: every span created, batched by "
        "OpenTelemetry's BatchSpanProcessor and dropped by the exporter; a real OTLP exporter also serialises them "
        "in its thread):",
        "",
        "| server | req/s | p50 ms | p99 ms | ratio |",
        "|---|---|---|---|---|",
        f"| tracing off | {tracing_off['rps']:.1f} | {tracing_off['p50']:.2f} | {tracing_off['p99']:.2f} | 1.00 |",
        f"| tracing on | {tracing_on['rps']:.1f} | {tracing_on['p50']:.2f} | {tracing_on['p99']:.2f} | "
        f"{tracing_on['rps'] / tracing_off['rps']:.2f} |",
        f"| before tracing existed ({baseline}) | {before['rps']:.1f} | {before['p50']:.2f} | {before['p99']:.2f} | "
        f"1.00 |",
        f"| tracing off (same run as the line above) | {off['rps']:.1f} | {off['p50']:.2f} | {off['p99']:.2f} | "
        f"{off['rps'] / before['rps']:.2f} |",
        "",
        f"Target: tracing on / off >= 0.97: {tracing_on['rps'] / tracing_off['rps']:.2f}. Off costs: "
        f"{off['rps'] / before['rps']:.2f} of the code before it (one None check per batch, a shared no-op "
        "context per call).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
