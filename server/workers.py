"""`embedrec serve --workers N`: N server processes sharing one port, and their supervisor.

The kernel spreads incoming connections over the workers (SO_REUSEPORT); each worker has its own
ONNX Runtime session (intra-op threads split across workers unless set) and maps the same item
matrix read-only, so the page cache holds it once. The supervisor (this parent process) restarts
a worker that dies, forwards SIGHUP (items reload) to every worker, forwards SIGTERM so every
worker drains, and exits 0 once all exited cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from embedrec.server.settings import Settings

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
POLL_S = 0.2

logger = logging.getLogger(__name__)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)


def worker_threads(settings: Settings) -> int:
    """Threads each worker computes with: --intra-op-threads, else the cores split evenly."""
    return settings.intra_op_threads or max(1, (os.cpu_count() or 1) // settings.workers)


def worker_environment(settings: Settings) -> dict[str, str]:
    """The workers' environment: numpy's BLAS (the one-query item scan) gets the same share of
    the cores as ONNX Runtime, unless the caller set it."""
    environment = dict(os.environ)
    environment.setdefault("OPENBLAS_NUM_THREADS", str(worker_threads(settings)))
    return environment


def worker_command(settings: Settings, argv: Sequence[str], index: int, port: int) -> list[str]:
    """The command line of worker `index`: the parent's flags, then the per-worker overrides."""
    threads = worker_threads(settings)
    metrics_port = settings.metrics_port + index if settings.metrics_port > 0 else settings.metrics_port
    return [
        sys.executable,
        "-m",
        "embedrec.cli",
        "serve",
        *argv,
        "--workers",
        "1",
        "--reuse-port",
        "true",
        "--port",
        str(port),
        "--intra-op-threads",
        str(threads),
        "--metrics-port",
        str(metrics_port),
    ]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def supervise(settings: Settings, argv: Sequence[str]) -> int:
    """Run `settings.workers` workers until SIGTERM/SIGINT; return 0 when all drained cleanly.

    `argv` are the flags the parent was given (forwarded to every worker).
    """
    port = settings.port or _free_port(settings.host)
    stopping = False

    def request_stop(signal_number: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    commands = [worker_command(settings, argv, index, port) for index in range(settings.workers)]
    environment = worker_environment(settings)
    workers = [_Worker(index, subprocess.Popen(command, env=environment)) for index, command in enumerate(commands)]

    def forward_reload(signal_number: int, _frame: object) -> None:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGHUP, forward_reload)
    logger.info(
        "supervising %d workers on %s:%d (pids %s)",
        len(workers),
        settings.host,
        port,
        ", ".join(str(worker.process.pid) for worker in workers),
    )
    while not stopping:
        time.sleep(POLL_S)
        for worker in workers:
            code = worker.process.poll()
            if code is None or stopping:
                continue
            if code == 2:  # a configuration error: restarting cannot help
                logger.error("worker %d cannot start (exit 2); stopping", worker.index)
                stopping = True
                break
            delay = RESTART_BACKOFF_S[min(worker.restarts, len(RESTART_BACKOFF_S) - 1)]
            logger.error(
                "worker %d (pid %d) exited with %d; restarting in %.1f s", worker.index, worker.process.pid, code, delay
            )
            time.sleep(delay)
            worker.process = subprocess.Popen(commands[worker.index], env=environment)
            worker.restarts += 1
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + settings.drain_seconds + 15
    codes = []
    for worker in workers:
        try:
            codes.append(worker.process.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            codes.append(worker.process.wait())
    logger.info("all workers stopped (exit codes %s)", codes)
    return 0 if all(code == 0 for code in codes) else 1
