"""The load-test tool: consistent counts, exact percentiles, merged processes, and no
coordinated omission in open-loop mode."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from embedrec.client.loadtest.processes import run_step_in_processes
from embedrec.client.loadtest.runner import StepPlan, run_step
from embedrec.client.loadtest.stats import PERCENTILES
from embedrec.client.loadtest.workload import TextLengths, Workload
from embedrec.v1 import embedrec_pb2 as pb
from embedrec.v1 import embedrec_pb2_grpc as pb_grpc
from tests.e2e.server_thread import ServerThread
from tests.support.paths import REPO_ROOT

EMBED = Workload(rpc_weights={"embed": 1.0}, lengths=TextLengths(3, 12))
INFO = Workload(rpc_weights={"info": 1.0})


def test_a_closed_loop_step_answers_every_call_and_reports_numpys_percentiles(tiny_server: ServerThread) -> None:
    plan = StepPlan("closed", 4, duration_s=1.0, warmup_s=0.2)
    result = asyncio.run(run_step(tiny_server.target, EMBED, plan, dim=32))
    summary = result.summary()
    assert result.sent > 10
    assert sum(summary["answered"].values()) == result.sent == summary["answered"]["OK"]
    assert summary["unanswered"] == 0
    assert result.texts == result.sent
    samples = np.asarray(result.latencies["OK"])
    for name, q in PERCENTILES.items():
        assert summary["latency_ms"][name] == pytest.approx(np.percentile(samples, q) * 1000)
    assert summary["latency_ms"]["max"] == pytest.approx(samples.max() * 1000)


def test_errors_are_counted_by_status_code(tiny_server: ServerThread) -> None:
    workload = Workload(rpc_weights={"recommend": 1.0, "embed": 1.0}, k=5000)  # k over max_k: INVALID_ARGUMENT
    result = asyncio.run(run_step(tiny_server.target, workload, StepPlan("closed", 2, 0.5, 0.0), dim=32))
    assert set(result.answered) == {"OK", "INVALID_ARGUMENT"}
    assert sum(result.answered.values()) == result.sent


def test_several_processes_merge_their_raw_samples(tiny_server: ServerThread) -> None:
    plan = StepPlan("closed", 3, duration_s=1.0, warmup_s=0.0)
    result = run_step_in_processes(tiny_server.target, INFO, plan, dim=32, processes=2)
    assert result.level == 3 and result.label == "concurrency 3"
    assert result.sent == sum(result.answered.values()) == result.answered["OK"] > 10


class StallingServicer(pb_grpc.EmbedRecServicer):  # type: ignore[misc]
    """Answers Info at once, except that every call in [stall_from, stall_until) waits until
    stall_until: a server that freezes for a while."""

    def __init__(self) -> None:
        self.stall_from = self.stall_until = 0.0

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        now = time.monotonic()
        if self.stall_from <= now < self.stall_until:
            await asyncio.sleep(self.stall_until - now)
        return pb.InfoResponse(dim=8)


@pytest.fixture()
def stalling_server() -> Iterator[tuple[str, StallingServicer]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servicer = StallingServicer()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        pb_grpc.add_EmbedRecServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield f"127.0.0.1:{port}", servicer
    asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_open_loop_shows_a_server_stall_in_the_tail(stalling_server: tuple[str, StallingServicer]) -> None:
    target, servicer = stalling_server
    servicer.stall_from = time.monotonic() + 0.6
    servicer.stall_until = servicer.stall_from + 1.0
    open_loop = asyncio.run(run_step(target, INFO, StepPlan("open", 100, duration_s=2.5, warmup_s=0.0), dim=8))
    latencies = np.asarray(open_loop.latencies["OK"])
    assert open_loop.sent == len(latencies)
    # About 100 calls were scheduled during the 1 s stall and each waited up to its end: the tail
    # holds the stall, the median does not. (Relative, not an absolute median: on a machine busy
    # with other work every call is slower, the stall still stands out.)
    assert np.percentile(latencies, 99) > 0.7
    assert np.percentile(latencies, 50) < np.percentile(latencies, 99) / 2.5
    assert (latencies > 0.3).sum() >= 40


def test_the_command_prints_a_table_and_writes_json_and_a_plot(tiny_server: ServerThread, tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedrec.cli",
            "loadtest",
            "--target",
            tiny_server.target,
            "--concurrency",
            "1,2",
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--rpc",
            "embed=2,recommend=1,similarity=1",
            "--json",
            str(tmp_path / "out.json"),
            "--plot",
            str(tmp_path / "out.png"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    header, _, first, second = completed.stdout.splitlines()[:4]
    assert header.split()[:3] == ["step", "req/s", "texts/s"]
    assert first.startswith("concurrency 1") and second.startswith("concurrency 2")
    report = json.loads((tmp_path / "out.json").read_text())
    assert [step["level"] for step in report["steps"]] == [1, 2]
    assert all(step["unanswered"] == 0 for step in report["steps"])
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_http_mode_drives_the_openai_route_and_the_json_routes(tiny_server: ServerThread, tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedrec.cli",
            "loadtest",
            "--protocol",
            "http",
            "--target",
            f"127.0.0.1:{tiny_server.app.http_port}",
            "--concurrency",
            "3",
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--rpc",
            "embed=2,recommend=1,similarity=1,info=1",
            "--recommend-by",
            "text",
            "--json",
            str(tmp_path / "out.json"),
            "--quiet",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    (step,) = json.loads((tmp_path / "out.json").read_text())["steps"]
    assert step["sent"] > 10 and step["answered"] == {"OK": step["sent"]}


def test_the_http_mode_reports_refusals_by_their_status(tiny_server: ServerThread) -> None:
    workload = Workload(rpc_weights={"recommend": 1.0, "embed": 1.0}, k=5000, protocol="http", model="nope")
    target = f"127.0.0.1:{tiny_server.app.http_port}"
    result = asyncio.run(run_step(target, workload, StepPlan("closed", 2, 0.5, 0.0), dim=32))
    assert set(result.answered) == {"NOT_FOUND", "INVALID_ARGUMENT"}  # unknown model; k over max_k
    assert sum(result.answered.values()) == result.sent
