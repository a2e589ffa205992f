"""Scale-out: worker processes sharing a port under a supervisor, and replicas behind client-side
round_robin that lose one replica mid-run without a failed call."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedrec.client import ChannelConfig, EmbedrecClient, EmbedrecClientError
from embedrec.ports import free_port
from tests.support.paths import REPO_ROOT


def serve(model_dir: Path, items_dir: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embedrec.cli",
            "serve",
            "--model-dir",
            str(model_dir),
            "--items-dir",
            str(items_dir),
            "--port",
            str(port),
            "--provider",
            "cpu",
            "--metrics-port",
            "-1",
            "--http-port",
            "-1",
            "--drain-seconds",
            "3",
            "--log-level",
            "WARNING",
            *extra,
        ],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(target: str) -> None:
    with EmbedrecClient(target, channel=ChannelConfig(wait_for_ready=True)) as client:
        client.info(timeout=120)


def instances(target: str, connections: int = 16) -> set[str]:
    """server_instance of Info over `connections` separate TCP connections."""
    seen = set()
    for _ in range(connections):
        with EmbedrecClient(target, channel=ChannelConfig(separate_connection=True)) as client:
            seen.add(client.info(timeout=10).server_instance)
    return seen


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return process.returncode, stderr


@pytest.fixture()
def workers(tiny_model_dir: Path, tiny_items_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    process = serve(tiny_model_dir, tiny_items_dir, port, "--workers", "2")
    target = f"127.0.0.1:{port}"
    try:
        wait_ready(target)
        deadline = time.monotonic() + 60
        while len(instances(target, 4)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        yield process, target
    finally:
        stop(process)


def test_two_workers_share_one_port_and_both_answer(workers: tuple[subprocess.Popen[str], str]) -> None:
    process, target = workers
    assert len(children(process.pid)) == 2
    answered_by = instances(target)
    assert len(answered_by) == 2, answered_by
    assert {int(instance.rsplit(":", 1)[1]) for instance in answered_by} == children(process.pid)


def test_the_supervisor_restarts_a_dead_worker_and_drains_all_on_sigterm(
    workers: tuple[subprocess.Popen[str], str],
) -> None:
    process, target = workers
    victim = min(children(process.pid))
    survivor = max(children(process.pid))
    subprocess.run(["kill", "-9", str(victim)], check=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        current = children(process.pid)
        if len(current) == 2 and victim not in current:
            break
        time.sleep(0.1)
    replacement = children(process.pid) - {survivor}
    assert len(replacement) == 1 and victim not in replacement
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(instances(target, 8)) < 2:
        time.sleep(0.2)
    assert {int(i.rsplit(":", 1)[1]) for i in instances(target)} == {survivor, *replacement}
    code, stderr = stop(process)
    assert code == 0, stderr[-2000:]
    assert "exited with -9; restarting" in stderr


def test_losing_a_replica_mid_run_fails_no_call(tiny_model_dir: Path, tiny_items_dir: Path) -> None:
    ports = [free_port(), free_port()]
    replicas = [serve(tiny_model_dir, tiny_items_dir, port) for port in ports]
    targets = [f"127.0.0.1:{port}" for port in ports]
    try:
        for target in targets:
            wait_ready(target)
        answered_by: dict[str, int] = {}
        failures: list[str] = []
        calls = 0
        with EmbedrecClient(targets, timeout=20) as client:

            def stream(count: int) -> None:
                nonlocal calls
                for index in range(count):
                    try:
                        # Three calls an iteration: round_robin alternates replicas call by call,
                        # so the Info call of successive iterations lands on each in turn.
                        client.embed([f"call {index}"])
                        client.similarity(f"call {index}", ["a candidate"])
                        instance = client.info().server_instance
                        answered_by[instance] = answered_by.get(instance, 0) + 1
                    except EmbedrecClientError as error:
                        failures.append(str(error))
                    calls += 3

            first = threading.Thread(target=stream, args=(150,))
            first.start()
            time.sleep(0.5)
            replicas[0].send_signal(signal.SIGTERM)
            first.join(120)
            stream(50)
        code, stderr = stop(replicas[0])
        assert code == 0, stderr[-2000:]
    finally:
        for replica in replicas:
            stop(replica)
    assert failures == []
    assert calls == 600
    assert len(answered_by) == 2, answered_by  # both replicas served before one left
