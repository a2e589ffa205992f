"""Embed throughput and latency: the raw ONNX Runtime limit against the server under load, with
batching on, off, and FIFO (no length grouping), all in one run on one machine.

Usage: python -m bench.embed   (make bench-embed)
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from typing import Any

import numpy as np

from bench.common import MODEL_DIR, ensure_artifacts, run_header, server_process, write_section
from embedrec.client.loadtest.processes import run_step_in_processes
from embedrec.client.loadtest.runner import StepPlan
from embedrec.client.loadtest.workload import WORDS, TextLengths, Workload
from embedrec.server.inference.encoder import OnnxEncoder

CONCURRENCY = (1, 8, 32, 128)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
STEP_S, WARMUP_S = 8.0, 2.0
RAW_SECONDS_PER_SIZE = 2.5
# ~20 tokens: 16 common words; mixed: 4-100 words, about 5-120 tokens.
SHORT, MIXED = TextLengths(16, 16), TextLengths(4, 100)
SERVERS = {
    "batching": [],
    "batching off": ["--max-batch-size", "1"],
    # Plain FIFO: no length grouping and no padding-efficiency guard (both are length-aware).
    "FIFO batching": ["--length-grouping", "false", "--min-batch-efficiency", "0"],
}


def texts_of(lengths: TextLengths, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(lengths.low, lengths.high))) for _ in range(count)]


def raw_limit(encoder: OnnxEncoder, texts: list[str]) -> dict[int, float]:
    """Texts/s in-process (tokenise + infer + pool) at each batch size, texts in arrival order."""
    throughput = {}
    for size in BATCH_SIZES:
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < RAW_SECONDS_PER_SIZE:
            for offset in range(0, len(texts) - size + 1, size):
                encoder.encode(texts[offset : offset + size])
                done += size
        throughput[size] = done / (time.perf_counter() - start)
    return throughput


def raw_single_latency_ms(encoder: OnnxEncoder, texts: list[str]) -> float:
    """Median time of one single-text encode (tokenise + infer + pool), ms."""
    samples = []
    for text in texts[:200]:
        start = time.perf_counter()
        encoder.encode([text])
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def server_runs() -> tuple[dict[tuple[str, str], list[dict[str, Any]]], float]:
    """Every server variant under every load; also the p50 of a trivial call (Info) at c1, ms."""
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    info_p50 = float("nan")
    for server_name, extra in SERVERS.items():
        with server_process(extra) as (target, _):
            if server_name == "batching":
                plan = StepPlan("closed", 1, STEP_S / 2, WARMUP_S / 2)
                info = run_step_in_processes(target, Workload(rpc_weights={"info": 1.0}), plan, dim=384, processes=1)
                info_p50 = info.summary()["latency_ms"]["p50"]
            for workload_name, lengths in (("~20 tokens", SHORT), ("mixed 5-120 tokens", MIXED)):
                workload = Workload(rpc_weights={"embed": 1.0}, lengths=lengths)
                summaries = []
                for level in CONCURRENCY:
                    plan = StepPlan("closed", level, STEP_S, WARMUP_S, timeout_s=60.0, seed=level)
                    summaries.append(run_step_in_processes(target, workload, plan, dim=384, processes=1).summary())
                    print(
                        f"{server_name:14} {workload_name:18} c={level:<4} "
                        f"{summaries[-1]['requests_per_s']:7.1f}/s p50 {summaries[-1]['latency_ms']['p50']:.1f} ms",
                        flush=True,
                    )
                results[(server_name, workload_name)] = summaries
    return results, info_p50


def main() -> int:
    """Run everything and write the BENCHMARKS.md section."""
    # Kept whole: a benchmark script (measure, then write its section); one experiment in one place.
    ensure_artifacts()
    encoder = OnnxEncoder(MODEL_DIR, provider="cpu")
    short_texts, mixed_texts = texts_of(SHORT, 512, 1), texts_of(MIXED, 512, 2)
    tokens_short = np.mean([t.length for t in encoder.tokenize(short_texts)])
    tokens_mixed = [t.length for t in encoder.tokenize(mixed_texts)]
    raw_short, raw_mixed = raw_limit(encoder, short_texts), raw_limit(encoder, mixed_texts)
    single_ms = raw_single_latency_ms(encoder, short_texts)
    del encoder
    print(f"raw ~20 tokens: {raw_short}\nraw mixed: {raw_mixed}\nsingle {single_ms:.2f} ms", flush=True)
    runs, info_p50 = server_runs()
    best_raw = max(raw_short.values())

    def step(server: str, workload: str, level: int) -> dict[str, Any]:
        return runs[(server, workload)][CONCURRENCY.index(level)]

    short, mixed = "~20 tokens", "mixed 5-120 tokens"
    c32 = step("batching", short, 32)["requests_per_s"]
    c32_off = step("batching off", short, 32)["requests_per_s"]
    c1_p50 = step("batching", short, 1)["latency_ms"]["p50"]
    grouped = step("batching", mixed, 128)["requests_per_s"]
    fifo = step("FIFO batching", mixed, 128)["requests_per_s"]
    c128 = step("batching", short, 128)["latency_ms"]
    c128_mixed = step("batching", mixed, 128)["latency_ms"]
    ratios = [
        ("c32, ~20 tokens: server / raw best", c32 / best_raw, ">= 0.80", c32 / best_raw >= 0.80),
        ("c32, ~20 tokens: batching / batching off", c32 / c32_off, ">= 1.6", c32 / c32_off >= 1.6),
        ("c1 p50 minus raw batch-1 latency (ms)", c1_p50 - single_ms, "<= 2 ms", c1_p50 - single_ms <= 2.0),
        ("mixed, c128: length grouping / FIFO", grouped / fifo, ">= 1.3", grouped / fifo >= 1.3),
        ("c128, ~20 tokens: p99 / p50", c128["p99"] / c128["p50"], "<= 2", c128["p99"] / c128["p50"] <= 2.0),
        (
            "c128, mixed: p99 / p50",
            c128_mixed["p99"] / c128_mixed["p50"],
            "<= 2",
            c128_mixed["p99"] / c128_mixed["p50"] <= 2.0,
        ),
    ]
    lines = [
        "## Embed: raw limit vs server under load",
        "",
        run_header("make bench-embed  (python -m bench.embed)"),
        f"- model: bundled all-MiniLM-L6-v2, fp32, CPU, ONNX Runtime default threads; texts of "
        f"{tokens_short:.1f} tokens (~20) and mixed {min(tokens_mixed)}-{max(tokens_mixed)} tokens "
        f"(mean {np.mean(tokens_mixed):.0f})",
        f"- server: `embedrec serve` in its own process; load: `embedrec loadtest` closed loop, one client "
        f"process on the same 2 cores, single-text Embed calls, {STEP_S:g} s per step after {WARMUP_S:g} s warm-up",
        "",
        "### Ratios (same run)",
        "",
        "| ratio | value | target | met |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {value:.2f} | {target} | {'yes' if met else 'no'} |" for name, value, target, met in ratios]
    lines += [
        "",
        "### Raw limit (in-process: tokenise + infer + pool, texts/s)",
        "",
        "| batch | " + " | ".join(str(size) for size in BATCH_SIZES) + " |",
        "|---|" + "---|" * len(BATCH_SIZES),
        "| ~20 tokens | " + " | ".join(f"{raw_short[size]:.0f}" for size in BATCH_SIZES) + " |",
        "| mixed, arrival order | " + " | ".join(f"{raw_mixed[size]:.0f}" for size in BATCH_SIZES) + " |",
        "",
        f"Raw single-text latency (median): {single_ms:.2f} ms. A trivial call (Info) through the same client "
        f"and server at concurrency 1: p50 {info_p50:.2f} ms, so of the {c1_p50 - single_ms:.2f} ms the server "
        f"adds to an idle Embed, {info_p50:.2f} ms is the gRPC round trip itself and "
        f"{c1_p50 - single_ms - info_p50:.2f} ms is tokenising, queueing, thread hand-offs and pooling.",
        "",
        "### Server under load",
        "",
        "| server | texts | concurrency | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for (server, workload), summaries in runs.items():
        for level, summary in zip(CONCURRENCY, summaries, strict=True):
            latency = summary["latency_ms"]
            lines.append(
                f"| {server} | {workload} | {level} | {summary['requests_per_s']:.1f} | "
                f"{latency['p50']:.1f} | {latency['p99']:.1f} |"
            )
    body = "\n".join(lines) + "\n"
    write_section("embed", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
