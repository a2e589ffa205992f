"""Soak under attack: well-behaved Embed traffic at 3x the sustainable rate, once alone and once
while hostile clients hammer the same server, on loopback, bounded in time and count.

The attack (from threads of this process, each loop bounded by the run's duration):
- up to 2,000 slow HTTP connections that send half a request head and stall (re-dialled 1 s after
  the server closes them, as a slowloris does);
- requests with a 1 MB string field: gRPC Embed (prompt_name), gRPC Recommend (where[].field),
  HTTP /v1/embeddings (model);
- oversized batches: gRPC RecommendBatch of 2 million empty users, HTTP /v1/recommend-batch of
  1.4 million, both just under the 4 MiB message limit.

Reports the good traffic's admitted throughput and p50/p99 with and without the attack (ratios),
the server's RSS before and after, the bytes it logged during each run, its open descriptors
(peak) and the attack's answers by status.

Usage: python -m bench.soak_attack [SECONDS]   (make soak-attack; default 30 s per run)
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import multiprocessing
import os
import resource
import selectors
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from bench.common import ensure_artifacts, run_header, server_process, write_section
from bench.soak import OVERLOAD, WORKLOAD, memory_kib
from embedrec.client.loadtest.runner import StepPlan, run_step
from embedrec.ports import free_port
from embedrec.v1 import embedrec_pb2 as pb

SLOW_CONNECTIONS = 2000
# Hostile requests per second (all kinds together, in turn): a steady stream, not a bandwidth
# flood (back to back, 1 MB fields arrive at ~100 MB/s, which measures loopback, not limits).
HOSTILE_PER_SECOND = 20
MEGABYTE = "x" * 1_000_000
BUDGET = 4 * 1024 * 1024 - 64


def attack_requests() -> list[tuple[str, str, bytes]]:
    """(transport, method or route, body) of the hostile requests, built once."""
    return [
        ("grpc", "Embed", pb.EmbedRequest(texts=["hi"], prompt_name=MEGABYTE).SerializeToString()),
        (
            "grpc",
            "Recommend",
            pb.RecommendRequest(
                k=3, texts=[pb.WeightedText(text="hi")], where=[pb.Condition(field=MEGABYTE)]
            ).SerializeToString(),
        ),
        ("grpc", "RecommendBatch", b"\x0a\x00" * (BUDGET // 2)),
        ("http", "/v1/embeddings", b'{"model":"' + MEGABYTE.encode() + b'","input":"hi"}'),
        ("http", "/v1/recommend-batch", b'{"users":[' + b",".join([b"{}"] * (BUDGET // 3)) + b"]}"),
    ]


class EventLike(Protocol):
    def is_set(self) -> bool: ...


def attack_process(grpc_target: str, http_port: int, stop: EventLike, results: multiprocessing.Queue[Any]) -> None:
    """Run every attacker until `stop`, in a process of its own (its threads must not take the
    GIL from the good traffic's load generator); put (answers by outcome, slow connections
    opened) on `results`."""
    attack = Attack(grpc_target, http_port, stop)
    requests = attack_requests()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        jobs = [pool.submit(attack.slow_clients)]
        jobs += [pool.submit(attack.hostile_requests, requests[i::2], HOSTILE_PER_SECOND / 2) for i in range(2)]
        for job in jobs:
            job.result()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results.put((dict(attack.answers), attack.slow_opened, usage.ru_utime + usage.ru_stime))


class Attack:
    """The hostile clients, run until `stop`; `answers` counts their outcomes by status."""

    def __init__(self, grpc_target: str, http_port: int, stop: EventLike) -> None:
        self.grpc_target = grpc_target
        self.http_port = http_port
        self.stop = stop
        self.answers: collections.Counter[str] = collections.Counter()
        self.slow_opened = 0
        self._lock = threading.Lock()

    def count(self, outcome: str) -> None:
        with self._lock:
            self.answers[outcome] += 1

    def slow_clients(self) -> None:
        """Keep up to SLOW_CONNECTIONS connections open, each stalled mid-head; a connection the
        server closes is re-dialled 1 s later. Waits on a selector: the attacker's own CPU stays
        small, so what is measured is the server's."""
        selector = selectors.DefaultSelector()
        redial_at: collections.deque[float] = collections.deque([0.0] * SLOW_CONNECTIONS)
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                while redial_at and redial_at[0] <= now and len(selector.get_map()) < SLOW_CONNECTIONS:
                    redial_at.popleft()
                    try:
                        connection = socket.create_connection(("127.0.0.1", self.http_port), timeout=2)
                        connection.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                        connection.setblocking(False)
                        selector.register(connection, selectors.EVENT_READ)
                        self.slow_opened += 1
                    except OSError:
                        self.count("slow: connect failed")
                        redial_at.append(now + 1.0)
                for key, _ in selector.select(timeout=0.1):
                    stalled = key.fileobj
                    if not isinstance(stalled, socket.socket):
                        continue
                    try:
                        reply = stalled.recv(4096)
                    except OSError:
                        reply = b""
                    status = reply[9:12].decode("ascii", "replace") if reply else "closed"
                    self.count(f"slow: {status}")
                    selector.unregister(stalled)
                    stalled.close()
                    redial_at.append(time.monotonic() + 1.0)
        finally:
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            selector.close()

    def hostile_requests(self, requests: list[tuple[str, str, bytes]], per_second: float) -> None:
        """Send `requests` round and round, `per_second` of them a second (each a fresh HTTP
        connection; gRPC on one channel), until stopped."""
        options = [("grpc.max_send_message_length", 64 << 20)]
        next_at = time.monotonic()
        with grpc.insecure_channel(self.grpc_target, options=options) as channel:
            while not self.stop.is_set():
                for transport, route, body in requests:
                    next_at += 1.0 / per_second
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    if self.stop.is_set():
                        return
                    outcome = self._grpc(channel, route, body) if transport == "grpc" else self._http(route, body)
                    self.count(f"{route}: {outcome}")

    def _grpc(self, channel: grpc.Channel, method: str, body: bytes) -> str:
        stub = channel.unary_unary(f"/embedrec.v1.EmbedRec/{method}", request_serializer=None)
        try:
            stub(body, timeout=10)
            return "OK"
        except grpc.RpcError as error:
            return error.code().name  # type: ignore[no-any-return]

    def _http(self, route: str, body: bytes) -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{route}", data=body, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return str(response.status)
        except urllib.error.HTTPError as error:
            with error:
                return str(error.code)
        except OSError as error:
            return type(error).__name__


def run_good_traffic(target: str, rate: float, duration_s: float) -> dict[str, object]:
    plan = StepPlan("open", rate, duration_s, 0.0, timeout_s=10.0)
    return asyncio.run(run_step(target, WORKLOAD, plan, dim=384)).summary()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def main() -> int:
    """Baseline run, attacked run, BENCHMARKS.md section."""
    duration_s = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    ensure_artifacts()
    http_port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        log_path = Path(scratch) / "server.log"
        extra = ["--http-port", str(http_port), "--log-level", "INFO", "--metrics-port", "-1"]
        with server_process(extra, log_path=log_path) as (target, process):
            pid = process.pid
            sustainable = asyncio.run(run_step(target, WORKLOAD, StepPlan("closed", 32, 8.0, 2.0), dim=384))
            rate = OVERLOAD * sustainable.summary()["requests_per_s"]
            memory = [memory_kib(pid)]
            log_start, cpu_start = log_path.stat().st_size, cpu_seconds(pid)
            quiet = run_good_traffic(target, rate, duration_s)
            log_quiet, cpu_quiet = log_path.stat().st_size - log_start, cpu_seconds(pid) - cpu_start
            memory.append(memory_kib(pid))
            peak_fds = descriptors(pid)
            context = multiprocessing.get_context("spawn")
            stop, results = context.Event(), context.Queue()
            attacker = context.Process(target=attack_process, args=(target, http_port, stop, results))
            attacker.start()
            time.sleep(3.0)  # the slow connections are in place before the good traffic starts
            log_before_attack, cpu_before_attack = log_path.stat().st_size, cpu_seconds(pid)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                attacked_future = pool.submit(run_good_traffic, target, rate, duration_s)
                while not attacked_future.done():
                    peak_fds = max(peak_fds, descriptors(pid))
                    time.sleep(0.5)
                attacked = attacked_future.result()
            log_attacked = log_path.stat().st_size - log_before_attack
            cpu_attacked = cpu_seconds(pid) - cpu_before_attack
            stop.set()
            answers, slow_opened, attacker_cpu = results.get(timeout=60)
            attacker.join(30)
            measured = Measured(
                duration_s,
                rate,
                quiet,
                attacked,
                [*memory, memory_kib(pid)],
                log_quiet,
                log_attacked,
                peak_fds,
                log_path.read_text(errors="replace").count("cannot accept connections"),
                (cpu_quiet, cpu_attacked, attacker_cpu),
            )
    body = report(measured, collections.Counter(answers), slow_opened)
    write_section("soak-attack", body)
    print(body)
    return 0


@dataclass(frozen=True)
class Measured:
    """What the two runs measured (summaries as `StepResult.summary`, memory as `memory_kib`)."""

    duration_s: float
    rate: float
    quiet: dict[str, object]
    attacked: dict[str, object]
    memory: list[dict[str, int]]  # at the start, after the quiet run, after the attacked run
    log_quiet: int
    log_attacked: int
    peak_fds: int
    accept_failures: int
    cpu_s: tuple[float, float, float]  # the server's in the quiet run, in the attacked run; the attacker's


def report(measured: Measured, answers_by_outcome: collections.Counter[str], slow_opened: int) -> str:
    """The BENCHMARKS.md section."""
    duration_s, rate, quiet, attacked = measured.duration_s, measured.rate, measured.quiet, measured.attacked
    rss = " -> ".join(f"{one['VmRSS'] / 1024:.0f}" for one in measured.memory)
    quiet_ms, attacked_ms = quiet["latency_ms"], attacked["latency_ms"]
    assert isinstance(quiet_ms, dict) and isinstance(attacked_ms, dict)
    throughput_ratio = float(attacked["requests_per_s"]) / float(quiet["requests_per_s"])  # type: ignore[arg-type]
    p99_ratio = attacked_ms["p99"] / quiet_ms["p99"]
    answers = ", ".join(f"{name} {count}" for name, count in sorted(answers_by_outcome.items()))
    rows = [
        "## Soak under attack: good Embed traffic with and without hostile clients",
        "",
        run_header(f"make soak-attack  (python -m bench.soak_attack {duration_s:g})"),
        f"- good traffic: open loop (Poisson) at 3x the sustainable Embed rate ({rate:.1f} requests/s), single "
        f"~20-token texts over gRPC, 10 s deadline, {duration_s:g} s per run; `embedrec serve` defaults with HTTP "
        "on, bundled MiniLM-L6 fp32 on CPU, same 2 cores as the attackers",
        f"- attack, from a process of its own: up to {SLOW_CONNECTIONS} slow HTTP connections stalled "
        "mid-head (re-dialled 1 s after being "
        "closed), 1 MB string fields (gRPC Embed prompt_name, gRPC Recommend where[].field, HTTP model), "
        "oversized batches (gRPC RecommendBatch of 2M empty users, HTTP recommend-batch of 1.4M): "
        f"{HOSTILE_PER_SECOND} hostile requests/s in turn",
        "",
        "| measure | without attack | under attack | ratio |",
        "|---|---|---|---|",
        f"| good traffic admitted (OK) throughput, requests/s | {quiet['requests_per_s']:.1f} | "
        f"{attacked['requests_per_s']:.1f} | {throughput_ratio:.2f} (target >= 0.8) |",
        f"| good traffic p50, ms | {quiet_ms['p50']:.0f} | {attacked_ms['p50']:.0f} | "
        f"{attacked_ms['p50'] / quiet_ms['p50']:.2f} |",
        f"| good traffic p99, ms | {quiet_ms['p99']:.0f} | {attacked_ms['p99']:.0f} | {p99_ratio:.2f} (target <= 2) |",
        f"| good traffic answers | {_answers(quiet)} | {_answers(attacked)} | |",
        f"| server CPU, s (of {2 * duration_s:g} on 2 cores) | {measured.cpu_s[0]:.1f} | {measured.cpu_s[1]:.1f} | "
        f"{measured.cpu_s[1] / measured.cpu_s[0]:.2f} |",
        f"| attacker process CPU, s (taken from the same 2 cores) | | {measured.cpu_s[2]:.1f} | |",
        f"| server log written, bytes | {measured.log_quiet} | {measured.log_attacked} | (target <= 1 MB) |",
        "",
        "| attack measure | value |",
        "|---|---|",
        f"| slow connections opened | {slow_opened} |",
        f"| attack answers | {answers} |",
        f"| server open descriptors, peak | {measured.peak_fds} |",
        f"| accept-failure log lines (descriptor exhaustion) | {measured.accept_failures} |",
        f"| server RSS at start -> after the quiet run -> after the attacked run | {rss} MiB |",
    ]
    return "\n".join(rows) + "\n"


def _answers(summary: dict[str, object]) -> str:
    answered = summary["answered"]
    assert isinstance(answered, dict)
    return ", ".join(f"{code} {count}" for code, count in answered.items())


if __name__ == "__main__":
    sys.exit(main())
