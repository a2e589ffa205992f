"""Embed at the hardware's pace: the raw ONNX Runtime floor, a naive batching server, and both of
embedrec's edges under the same loads, all in one run on one machine.

- raw floor: in-process tokenise + infer + pool at batch 1 (latency), 8 and 32, texts in arrival
  order and length-sorted (what length grouping can reach at best);
- the naive server (`bench.naive_server`): an asyncio queue, one executor call per drained batch;
- embedrec gRPC (a grpc-js client that reads only the .proto: `bench/grpc_load/load.js`), embedrec
  HTTP `/v1/embeddings` (wrk), the same server process; tracing on (spans dropped by the exporter)
  against off; batching off and FIFO batching on mixed lengths (what batching and length grouping
  buy);
- CPU-µs per call of the server process at each step.

Usage: python -m bench.embed   (make bench-embed; needs node and wrk: the Makefile installs them)
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import MODEL_DIR, REPO_ROOT, ensure_artifacts, run_header, server_process, write_section
from embedrec.client.loadtest.workload import WORDS
from embedrec.ports import free_port
from embedrec.server.inference.encoder import OnnxEncoder

CONCURRENCY = (1, 8, 32, 128)
STEP_S, WARMUP_S = float(os.environ.get("BENCH_STEP_S", "8")), 2.0
RAW_SECONDS = float(os.environ.get("BENCH_RAW_S", "3"))
LOAD_JS = REPO_ROOT / "bench/grpc_load/load.js"
WRK_SCRIPT = REPO_ROOT / "bench/wrk_embed.lua"
PROTO = REPO_ROOT / "protos/embedrec/v1/embedrec.proto"


def real_texts() -> list[str]:
    """Real short texts: the one-line summaries of the Python packages installed here (package
    descriptions of ~7 words), deduplicated, in a fixed shuffled order."""
    summaries = {(dist.metadata["Summary"] or "").strip() for dist in importlib.metadata.distributions()}
    texts = sorted(text for text in summaries if text and len(text) <= 300 and text.upper() != "UNKNOWN")
    random.Random(0).shuffle(texts)
    return texts


def mixed_texts(count: int = 512, seed: int = 2) -> list[str]:
    """Texts of 4-100 common words (about 5-120 tokens), for the batching and grouping ratios."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(4, 100))) for _ in range(count)]


@dataclass
class Step:
    """One load step: throughput, latency and the server's CPU time per call."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_call: float


def raw_floor(encoder: OnnxEncoder, texts: list[str]) -> dict[str, float]:
    """In-process figures: batch-1 median latency (ms) and texts/s at batch 8 and 32, in arrival
    order and length-sorted."""
    for text in texts[:20]:
        encoder.encode([text])
    samples = []
    for text in texts * 2:
        started = time.perf_counter()
        encoder.encode([text])
        samples.append((time.perf_counter() - started) * 1000)
    figures = {"batch 1 p50 ms": statistics.median(samples), "batch 1": 1000 / statistics.mean(samples)}
    lengths = {text: len(encoder.tokenize([text])[0].input_ids) for text in texts}
    for size in (8, 32):
        for name, order in (("", texts), (" sorted", sorted(texts, key=lengths.__getitem__))):
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < RAW_SECONDS:
                for offset in range(0, len(order) - size + 1, size):
                    encoder.encode(order[offset : offset + size])
                    done += size
            figures[f"batch {size}{name}"] = done / (time.perf_counter() - started)
    return figures


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def grpc_step(target: str, texts_file: Path, concurrency: int, pid: int) -> Step:
    """Closed-loop gRPC Embed load from the grpc-js client at `concurrency`."""
    before = cpu_seconds(pid)
    command = ["node", str(LOAD_JS), "--target", target, "--proto", str(PROTO), "--texts", str(texts_file)]
    command += ["--concurrency", str(concurrency), "--seconds", str(STEP_S), "--warmup", str(WARMUP_S)]
    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return _step(result, (cpu_seconds(pid) - before) / max(result["calls_total"], 1))


def http_step(base_url: str, lines_file: Path, model: str, concurrency: int, pid: int) -> Step:
    """Closed-loop HTTP `/v1/embeddings` load from wrk at `concurrency` (after a warm-up run)."""
    environment = {**os.environ, "WRK_TEXTS": str(lines_file), "WRK_MODEL": model}

    def wrk(seconds: float) -> dict[str, Any]:
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "-s", str(WRK_SCRIPT), base_url]
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout
        parsed: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
        return parsed

    wrk(WARMUP_S)
    before = cpu_seconds(pid)
    result = wrk(STEP_S)
    return _step(result, (cpu_seconds(pid) - before) / max(result["calls_total"], 1))


def _step(result: dict[str, Any], cpu_per_call_s: float) -> Step:
    return Step(result["requests_per_s"], result["p50_ms"], result["p99_ms"], result["errors"], cpu_per_call_s * 1e6)


@contextlib.contextmanager
def naive_server() -> Iterator[tuple[str, int]]:
    """The naive batching server in a subprocess: (target, pid)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.naive_server", str(MODEL_DIR), str(port)], cwd=REPO_ROOT)
    try:
        from bench.common import wait_for_embed

        wait_for_embed(f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(30)


@contextlib.contextmanager
def embedrec_server(extra: Sequence[str] = (), *, traced: bool = False) -> Iterator[tuple[str, str, int]]:
    """`embedrec serve` on the bundled model and demo items: (gRPC target, HTTP base URL, pid)."""
    http_port = free_port()
    flags = ["--http-port", str(http_port), "--metrics-port", "0", *extra]
    module = "bench.traced_serve" if traced else "embedrec.cli"
    with server_process(flags, module=module) as (target, process):
        yield target, f"http://127.0.0.1:{http_port}", process.pid


def measure(files: dict[str, Path], model: str) -> dict[str, list[Step]]:
    """Every server and edge under every load, one after another."""
    runs: dict[str, list[Step]] = {}

    def record(name: str, steps: Iterator[Step]) -> None:
        runs[name] = []
        for level, step in zip(CONCURRENCY, steps, strict=False):
            runs[name].append(step)
            print(f"{name:28} c={level:<4} {step.requests_per_s:7.1f}/s p50 {step.p50_ms:6.2f} ms", flush=True)

    with naive_server() as (target, pid):
        record("naive server gRPC", (grpc_step(target, files["real"], c, pid) for c in CONCURRENCY))
    with embedrec_server() as (target, base_url, pid):
        record("embedrec gRPC", (grpc_step(target, files["real"], c, pid) for c in CONCURRENCY))
        record("embedrec HTTP", (http_step(base_url, files["real lines"], model, c, pid) for c in CONCURRENCY))
        record("embedrec gRPC, mixed", (grpc_step(target, files["mixed"], c, pid) for c in (128,)))
    with embedrec_server(traced=True) as (target, _, pid):
        record("embedrec gRPC, tracing on", (grpc_step(target, files["real"], c, pid) for c in (32,)))
    with embedrec_server(["--max-batch-size", "1"]) as (target, _, pid):
        record("batching off gRPC", (grpc_step(target, files["real"], c, pid) for c in (32,)))
    with embedrec_server(["--length-grouping", "false", "--min-batch-efficiency", "0"]) as (target, _, pid):
        record("FIFO batching gRPC, mixed", (grpc_step(target, files["mixed"], c, pid) for c in (128,)))
    return runs


def text_files(directory: Path, real: list[str], mixed: list[str]) -> dict[str, Path]:
    """The load tools' inputs: JSON arrays for grpc-js, JSON string literals per line for wrk."""
    files = {"real": directory / "real.json", "mixed": directory / "mixed.json", "real lines": directory / "real.txt"}
    files["real"].write_text(json.dumps(real), encoding="utf-8")
    files["mixed"].write_text(json.dumps(mixed), encoding="utf-8")
    files["real lines"].write_text("".join(json.dumps(text) + "\n" for text in real), encoding="utf-8")
    return files


def ratios(raw: dict[str, float], runs: dict[str, list[Step]]) -> list[tuple[str, float, str, bool]]:
    """(name, value, target, met) of the targets, from one run."""
    grpc, http, naive = runs["embedrec gRPC"], runs["embedrec HTTP"], runs["naive server gRPC"]
    floor = raw["batch 32 sorted"]
    rows = [
        ("gRPC c=1 p50 - raw batch-1 p50 (ms)", grpc[0].p50_ms - raw["batch 1 p50 ms"], "<= 1.0", None),
        ("HTTP c=1 p50 - raw batch-1 p50 (ms)", http[0].p50_ms - raw["batch 1 p50 ms"], "<= 0.8", None),
        ("gRPC c=1 p50 / naive c=1 p50", grpc[0].p50_ms / naive[0].p50_ms, "< 1", None),
        ("HTTP c=1 p50 / naive c=1 p50", http[0].p50_ms / naive[0].p50_ms, "< 1", None),
    ]
    for index, level in enumerate(CONCURRENCY):
        rows.append(
            (
                f"gRPC / HTTP throughput, c={level}",
                grpc[index].requests_per_s / http[index].requests_per_s,
                ">= 1",
                None,
            )
        )
    for index, level in enumerate(CONCURRENCY):
        if level >= 8:
            value = grpc[index].requests_per_s / naive[index].requests_per_s
            rows.append((f"gRPC / naive server, c={level}", value, ">= 1.2", None))
    for index, level in enumerate(CONCURRENCY):
        if level >= 32:
            rows.append(
                (f"gRPC / length-sorted raw batch 32, c={level}", grpc[index].requests_per_s / floor, ">= 0.9", None)
            )
            rows.append(
                (f"HTTP / length-sorted raw batch 32, c={level}", http[index].requests_per_s / floor, ">= 0.9", None)
            )
    traced = runs["embedrec gRPC, tracing on"][0].requests_per_s / grpc[CONCURRENCY.index(32)].requests_per_s
    rows.append(("tracing on / off, gRPC c=32", traced, ">= 0.97", None))
    batching = grpc[CONCURRENCY.index(32)].requests_per_s / runs["batching off gRPC"][0].requests_per_s
    rows.append(("batching / batching off, gRPC c=32", batching, ">= 1.6", None))
    grouping = runs["embedrec gRPC, mixed"][0].requests_per_s / runs["FIFO batching gRPC, mixed"][0].requests_per_s
    rows.append(("mixed lengths c=128: length grouping / FIFO", grouping, ">= 1.3", None))
    return [(name, value, target, _met(value, target)) for name, value, target, _ in rows]


def _met(value: float, target: str) -> bool:
    operator, bound = target.split()
    return {"<=": value <= float(bound), ">=": value >= float(bound), "<": value < float(bound)}[operator]


def report(raw: dict[str, float], runs: dict[str, list[Step]], texts: int, tokens: float) -> str:
    """The BENCHMARKS.md section."""
    lines = [
        "## Embed: the hot path against the raw floor and a naive server",
        "",
        run_header("make bench-embed  (python -m bench.embed)"),
        f"- model: bundled all-MiniLM-L6-v2, fp32, CPU; {texts} real package descriptions (the summaries of the "
        f"installed Python packages, {tokens:.1f} tokens on average), one text per request; mixed: 4-100 words",
        "- loads on the same 2 cores as the server: gRPC from a grpc-js client that reads only the .proto "
        "(bench/grpc_load/load.js, one channel per 8 callers), HTTP `/v1/embeddings` from wrk "
        f"(bench/wrk_embed.lua); closed loop, {STEP_S:g} s per step after {WARMUP_S:g} s warm-up",
        "- naive server: bench/naive_server.py (asyncio queue, one executor call of encode per drained batch of "
        "<= 32, nothing else); raw floor: the same encoder in process (spinning off, as the server runs it)",
        "",
        "### Ratios (same run)",
        "",
        "| ratio | value | target | met |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {value:.2f} | {target} | {'yes' if met else 'no'} |"
        for name, value, target, met in ratios(raw, runs)
    ]
    lines += [
        "",
        "### Raw floor (in process)",
        "",
        "| batch 1 p50 ms | batch 1 | batch 8 | batch 8 sorted | batch 32 | batch 32 sorted |",
        "|---|---|---|---|---|---|",
        f"| {raw['batch 1 p50 ms']:.2f} | {raw['batch 1']:.0f} | {raw['batch 8']:.0f} | {raw['batch 8 sorted']:.0f} "
        f"| {raw['batch 32']:.0f} | {raw['batch 32 sorted']:.0f} |",
        "",
        "texts/s",
        "",
        "### Servers under load",
        "",
        "| server / edge | concurrency | req/s | p50 ms | p99 ms | errors | server CPU-µs per call |",
        "|---|---|---|---|---|---|---|",
    ]
    single = {"embedrec gRPC, mixed": (128,), "FIFO batching gRPC, mixed": (128,)}
    for name, steps in runs.items():
        levels = single.get(name, (32,) if len(steps) == 1 else CONCURRENCY)
        for level, step in zip(levels, steps, strict=True):
            lines.append(
                f"| {name} | {level} | {step.requests_per_s:.1f} | {step.p50_ms:.2f} | {step.p99_ms:.2f} | "
                f"{step.errors} | {step.cpu_us_per_call:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run everything and write the BENCHMARKS.md section."""
    ensure_artifacts()
    real, mixed = real_texts(), mixed_texts()
    encoder = OnnxEncoder(MODEL_DIR, provider="cpu", spinning=False)
    tokens = statistics.mean(len(t.input_ids) for t in encoder.tokenize(real))
    raw = raw_floor(encoder, real)
    model = encoder.manifest.model_name.rsplit("/", 1)[-1]
    del encoder
    print("raw floor:", {name: round(value, 2) for name, value in raw.items()}, flush=True)
    with tempfile.TemporaryDirectory() as directory:
        runs = measure(text_files(Path(directory), real, mixed), model)
    body = report(raw, runs, len(real), tokens)
    write_section("embed", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
