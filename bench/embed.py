"""Embed at the hardware's pace: the raw ONNX Runtime floor, a naive batching server, and both of
embedrec's edges under the same loads, all in one run on one machine.

- raw floor: in-process tokenise + infer + pool at batch 1 (latency), 8 and 32, texts in arrival
  order and length-sorted (what length grouping can reach at best);
- the naive server (`bench.naive_server`): an asyncio queue, one executor call per drained batch;
- the edges against each other with load tools of the same weight: gRPC from h2load (C, HTTP/2,
  the request bytes built from the proto) and HTTP `/v1/embeddings` from wrk (C), one text for
  both, against the raw floor on that same text;
- a real gRPC client beside it: grpc-js reading only the .proto (`bench/grpc_load/load.js`) on
  the real texts, driving the naive server and embedrec alike. It costs ~1 ms of CPU per call on
  the server's own two cores (wrk and h2load ~0.05 ms), so it is the tool for gRPC-vs-gRPC
  ratios, not for gRPC against HTTP;
- tracing on (spans dropped by the exporter) against off, both servers up, in A B B A order;
  batching off and FIFO batching on mixed lengths (what batching and length grouping buy);
  CPU-µs per call of the server process.

Usage: python -m bench.embed   (make bench-embed; needs node and wrk: the Makefile installs them)
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import random
import re
import statistics
import struct
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
from embedrec.v1 import embedrec_pb2 as pb

CONCURRENCY = (1, 8, 32, 128)
STEP_S, WARMUP_S = float(os.environ.get("BENCH_STEP_S", "8")), 2.0
RAW_SECONDS = float(os.environ.get("BENCH_RAW_S", "3"))
TRACING_ROUNDS = int(os.environ.get("BENCH_TRACING_ROUNDS", "1"))
# The one text both light load tools send: a real package summary of typical length.
ONE_TEXT = "A fast implementation of the Cassowary constraint solver"
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


# ONNX Runtime's intra-op spinning, as the server's flags name it: off, in runs only (the
# server's default), always (ONNX Runtime's own default: in runs and between them).
SPINNING = {"off": {"spinning": False}, "in runs": {"spinning": False, "spinning_in_runs": True}, "always": {}}
SERVER_SPINNING = "in runs"


def batch1_latency(encoder: OnnxEncoder, texts: list[str]) -> tuple[float, float, float]:
    """Batch-1 median latency on `texts` (ms), texts/s at batch 1, and ONE_TEXT's median (ms)."""
    for text in texts[:20]:
        encoder.encode([text])
    samples = []
    for text in texts * 2:
        started = time.perf_counter()
        encoder.encode([text])
        samples.append((time.perf_counter() - started) * 1000)
    one = []
    for _ in range(len(texts) * 2):
        started = time.perf_counter()
        encoder.encode([ONE_TEXT])
        one.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), 1000 / statistics.mean(samples), statistics.median(one)


def best_batch1(texts: list[str]) -> dict[str, float]:
    """Batch-1 p50 (ms) under each spinning mode, on the real texts and on ONE_TEXT: the honest
    floor is the best of them, whatever the server runs with."""
    figures: dict[str, float] = {}
    for mode, options in SPINNING.items():
        encoder = OnnxEncoder(MODEL_DIR, provider="cpu", **options)
        p50, _, one = batch1_latency(encoder, texts)
        figures[f"batch 1 p50 ms, spinning {mode}"] = p50
        figures[f"one text batch 1 p50 ms, spinning {mode}"] = one
        del encoder
    figures["one text batch 1 p50 ms, best"] = min(figures[f"one text batch 1 p50 ms, spinning {m}"] for m in SPINNING)
    return figures


def raw_floor(encoder: OnnxEncoder, texts: list[str]) -> dict[str, float]:
    """In-process figures: batch-1 median latency (ms) and texts/s at batch 8 and 32, in arrival
    order and length-sorted."""
    p50, rate, one = batch1_latency(encoder, texts)
    figures = {"batch 1 p50 ms": p50, "batch 1": rate, "one text batch 1 p50 ms": one}
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < RAW_SECONDS:
        encoder.encode([ONE_TEXT] * 32)
        done += 32
    figures["one text batch 32"] = done / (time.perf_counter() - started)
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


def h2load_step(target: str, concurrency: int, pid: int) -> Step:
    """Closed-loop gRPC Embed load of ONE_TEXT from h2load at `concurrency` (streams spread over
    one connection per 8). A reply counts only if it carries a vector's bytes."""
    body = pb.EmbedRequest(texts=[ONE_TEXT]).SerializeToString()
    connections = max(1, (concurrency + 7) // 8)
    with tempfile.TemporaryDirectory() as directory:
        data, log = Path(directory) / "request.bin", Path(directory) / "requests.log"
        data.write_bytes(b"\0" + struct.pack(">I", len(body)) + body)
        command = ["h2load", "-c", str(connections), "-m", str(concurrency // connections), "-D", f"{STEP_S:g}"]
        command += ["--warm-up-time", f"{WARMUP_S:g}", "-d", str(data), "--log-file", str(log)]
        command += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
        before = cpu_seconds(pid)
        output = subprocess.run(
            [*command, f"http://{target}/embedrec.v1.EmbedRec/Embed"], check=True, capture_output=True, text=True
        ).stdout
        cpu = cpu_seconds(pid) - before
        rows = [line.split("\t") for line in log.read_text().splitlines()]
    done = int(output.split("requests:")[1].split("total")[0])
    data_bytes = int(re.search(r"\((\d+)\) data", output).group(1))  # type: ignore[union-attr]
    latencies = sorted(int(row[2]) / 1000 for row in rows if row[1] == "200")
    short_replies = done - min(done, data_bytes // (4 * 384 + 8))
    return Step(
        done / STEP_S,
        latencies[len(latencies) // 2],
        latencies[int(len(latencies) * 0.99)],
        len(rows) - len(latencies) + short_replies,
        cpu / max(len(rows), 1) * 1e6,
    )


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
        record("embedrec gRPC (h2load, one text)", (h2load_step(target, c, pid) for c in CONCURRENCY))
        record(
            "embedrec HTTP (wrk, one text)",
            (http_step(base_url, files["one line"], model, c, pid) for c in CONCURRENCY),
        )
        record("embedrec gRPC", (grpc_step(target, files["real"], c, pid) for c in CONCURRENCY))
        record("embedrec HTTP", (http_step(base_url, files["real lines"], model, c, pid) for c in CONCURRENCY))
        record("embedrec gRPC, mixed", (grpc_step(target, files["mixed"], c, pid) for c in (128,)))
    runs.update(tracing_rounds(files))
    with embedrec_server(["--max-batch-size", "1"]) as (target, _, pid):
        record("batching off gRPC", (grpc_step(target, files["real"], c, pid) for c in (32,)))
    with embedrec_server(["--length-grouping", "false", "--min-batch-efficiency", "0"]) as (target, _, pid):
        record("FIFO batching gRPC, mixed", (grpc_step(target, files["mixed"], c, pid) for c in (128,)))
    return runs


def tracing_rounds(files: dict[str, Path]) -> dict[str, list[Step]]:
    """Tracing off and on at c=32 (grpc-js), both servers up at once, in A B B A order
    (TRACING_ROUNDS times): each figure the mean of its steps, so drift on this shared machine
    falls on both alike."""
    steps: dict[str, list[Step]] = {"embedrec gRPC, tracing off": [], "embedrec gRPC, tracing on": []}
    with embedrec_server() as (off, _, off_pid), embedrec_server(traced=True) as (on, _, on_pid):
        servers = {"embedrec gRPC, tracing off": (off, off_pid), "embedrec gRPC, tracing on": (on, on_pid)}
        for _ in range(TRACING_ROUNDS):
            for name in (*servers, *reversed(servers)):
                target, pid = servers[name]
                steps[name].append(grpc_step(target, files["real"], 32, pid))
                print(f"{name:28} c=32   {steps[name][-1].requests_per_s:7.1f}/s", flush=True)
    return {name: [_mean(taken)] for name, taken in steps.items()}


def _mean(steps: list[Step]) -> Step:
    return Step(*(statistics.mean(getattr(step, name) for step in steps) for name in Step.__dataclass_fields__))


def text_files(directory: Path, real: list[str], mixed: list[str]) -> dict[str, Path]:
    """The load tools' inputs: JSON arrays for grpc-js, JSON string literals per line for wrk."""
    files = {"real": directory / "real.json", "mixed": directory / "mixed.json", "real lines": directory / "real.txt"}
    files["real"].write_text(json.dumps(real), encoding="utf-8")
    files["mixed"].write_text(json.dumps(mixed), encoding="utf-8")
    files["real lines"].write_text("".join(json.dumps(text) + "\n" for text in real), encoding="utf-8")
    files["one line"] = directory / "one.txt"
    files["one line"].write_text(json.dumps(ONE_TEXT) + "\n", encoding="utf-8")
    return files


def ratios(raw: dict[str, float], runs: dict[str, list[Step]]) -> list[tuple[str, float, str, bool]]:
    """(name, value, target, met) of the targets, from one run."""
    grpc, naive = runs["embedrec gRPC"], runs["naive server gRPC"]
    light_grpc, light_http = runs["embedrec gRPC (h2load, one text)"], runs["embedrec HTTP (wrk, one text)"]
    http = runs["embedrec HTTP"]
    one_floor, sorted_floor = raw["one text batch 32"], raw["batch 32 sorted"]
    one_p50, best_p50 = raw["one text batch 1 p50 ms"], raw["one text batch 1 p50 ms, best"]
    rows = [
        ("gRPC c=1 p50 - raw batch-1 p50, one text (ms)", light_grpc[0].p50_ms - one_p50, "<= 1.0"),
        ("HTTP c=1 p50 - raw batch-1 p50, one text (ms)", light_http[0].p50_ms - one_p50, "<= 0.8"),
        ("gRPC c=1 p50 - best raw batch-1 p50 (any spinning), one text", light_grpc[0].p50_ms - best_p50, "<= 1.0"),
        ("HTTP c=1 p50 - best raw batch-1 p50 (any spinning), one text", light_http[0].p50_ms - best_p50, "<= 0.8"),
        ("gRPC (grpc-js) c=1 p50 / naive c=1 p50", grpc[0].p50_ms / naive[0].p50_ms, "< 1"),
        ("HTTP (wrk, real texts) c=1 p50 / naive c=1 p50", http[0].p50_ms / naive[0].p50_ms, "< 1"),
    ]
    for index, level in enumerate(CONCURRENCY):
        value = light_grpc[index].requests_per_s / light_http[index].requests_per_s
        rows.append((f"gRPC / HTTP throughput (h2load / wrk, one text), c={level}", value, ">= 1"))
    for index, level in enumerate(CONCURRENCY):
        if level >= 8:
            value = grpc[index].requests_per_s / naive[index].requests_per_s
            rows.append((f"gRPC / naive server (grpc-js), c={level}", value, ">= 1.2"))
    for index, level in enumerate(CONCURRENCY):
        if level >= 32:
            value = light_grpc[index].requests_per_s / one_floor
            rows.append((f"gRPC (h2load) / raw batch 32 on its text, c={level}", value, ">= 0.9"))
            value = light_http[index].requests_per_s / one_floor
            rows.append((f"HTTP (wrk) / raw batch 32 on its text, c={level}", value, ">= 0.9"))
            value = http[index].requests_per_s / sorted_floor
            rows.append((f"HTTP (wrk, real texts) / length-sorted raw batch 32, c={level}", value, ">= 0.9"))
    traced = runs["embedrec gRPC, tracing on"][0].requests_per_s / runs["embedrec gRPC, tracing off"][0].requests_per_s
    rows.append(("tracing on / off, gRPC c=32", traced, ">= 0.97"))
    batching = grpc[CONCURRENCY.index(32)].requests_per_s / runs["batching off gRPC"][0].requests_per_s
    rows.append(("batching / batching off, gRPC c=32", batching, ">= 1.6"))
    grouping = runs["embedrec gRPC, mixed"][0].requests_per_s / runs["FIFO batching gRPC, mixed"][0].requests_per_s
    rows.append(("mixed lengths c=128: length grouping / FIFO", grouping, ">= 1.3"))
    return [(name, value, target, _met(value, target)) for name, value, target in rows]


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
        "<= 32, nothing else); raw floor: the same encoder in process, intra-op spinning as the server runs an idle "
        "call "
        f"({SERVER_SPINNING}); batch 1 also under every spinning mode, the best of them the honest floor",
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
        "| batch 1 p50 ms | batch 1 | batch 8 | batch 8 sorted | batch 32 | batch 32 sorted | one text: batch 1 p50 ms "
        "| one text: batch 32 |",
        "|---|---|---|---|---|---|---|---|",
        f"| {raw['batch 1 p50 ms']:.2f} | {raw['batch 1']:.0f} | {raw['batch 8']:.0f} | {raw['batch 8 sorted']:.0f} "
        f"| {raw['batch 32']:.0f} | {raw['batch 32 sorted']:.0f} | {raw['one text batch 1 p50 ms']:.2f} "
        f"| {raw['one text batch 32']:.0f} |",
        "",
        f"texts/s; one text: {ONE_TEXT!r}",
        "",
        "| spinning | batch 1 p50 ms | one text: batch 1 p50 ms |",
        "|---|---|---|",
        *(
            f"| {mode} | {raw[f'batch 1 p50 ms, spinning {mode}']:.2f} "
            f"| {raw[f'one text batch 1 p50 ms, spinning {mode}']:.2f} |"
            for mode in SPINNING
        ),
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
    encoder = OnnxEncoder(MODEL_DIR, provider="cpu", **SPINNING[SERVER_SPINNING])
    tokens = statistics.mean(len(t.input_ids) for t in encoder.tokenize(real))
    raw = raw_floor(encoder, real)
    raw.update(best_batch1(real))
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
