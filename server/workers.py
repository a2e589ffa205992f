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
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from embedrec.ports import free_port
from embedrec.server.settings import Settings

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
# A worker that stayed up this long counts as healthy again: its next crash restarts it after the
# shortest backoff, not after the one its earlier crashes had reached.
STABLE_AFTER_S = 60.0
POLL_S = 0.2

logger = logging.getLogger(__name__)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)
    restart_at: float | None = None  # when a dead worker is due to start again

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def next_backoff_s(self, now: float) -> float:
        """The delay before restarting this worker, which just died."""
        if now - self.started_at >= STABLE_AFTER_S:
            self.restarts = 0
        return RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)]


def worker_threads(settings: Settings) -> int:
    """Threads of each model instance of each worker: --intra-op-threads, else the cores split
    evenly over workers x sessions."""
    return settings.model.intra_op_threads or max(
        1, (os.cpu_count() or 1) // (settings.server.workers * settings.model.session_count)
    )


def worker_environment(settings: Settings) -> dict[str, str]:
    """The workers' environment: numpy's BLAS (the one-query item scan) gets the same share of
    the cores as ONNX Runtime, unless the caller set it."""
    environment = dict(os.environ)
    environment.setdefault("OPENBLAS_NUM_THREADS", str(worker_threads(settings)))
    return environment


def worker_command(
    settings: Settings, argv: Sequence[str], index: int, port: int, http_port: int | None = None
) -> list[str]:
    """The command line of worker `index`: the parent's flags, then the per-worker overrides
    (the gRPC port and the HTTP port, `http_port` defaulting to --http-port, are shared)."""
    threads = worker_threads(settings)
    metrics_port = (
        settings.observability.metrics_port + index
        if settings.observability.metrics_port > 0
        else settings.observability.metrics_port
    )
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
        "--http-port",
        str(settings.http.http_port if http_port is None else http_port),
    ]


def _ignore_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _start_worker(command: list[str], environment: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start one worker. It ignores SIGHUP until its server installs the reload handler: a reload
    forwarded while it starts would otherwise kill it (and it loads the current items anyway)."""
    return subprocess.Popen(command, env=environment, preexec_fn=_ignore_sighup)


def supervise(settings: Settings, argv: Sequence[str]) -> int:
    """Run `settings.server.workers` workers until SIGTERM/SIGINT; return 0 when all drained cleanly.

    `argv` are the flags the parent was given (forwarded to every worker).
    """
    # One loop (start, watch, restart, forward signals) over shared state, then the drain.
    port = settings.server.port or free_port(settings.server.host)
    stopping = False

    def request_stop(signal_number: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    http_port = settings.http.http_port if settings.http.http_port != 0 else free_port(settings.server.host)
    commands = [worker_command(settings, argv, index, port, http_port) for index in range(settings.server.workers)]
    environment = worker_environment(settings)
    workers = [_Worker(index, _start_worker(command, environment)) for index, command in enumerate(commands)]

    def forward_reload(signal_number: int, _frame: object) -> None:
        for worker in workers:
            if worker.process is not None and worker.running:
                worker.process.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGHUP, forward_reload)
    logger.info(
        "supervising %d workers on %s:%d (pids %s)",
        len(workers),
        settings.server.host,
        port,
        ", ".join(str(worker.process.pid) for worker in workers if worker.process is not None),
    )
    # Never sleeps longer than POLL_S: a SIGTERM during a restart backoff is acted on at once.
    while not stopping:
        time.sleep(POLL_S)
        now = time.monotonic()
        for worker in workers:
            if stopping:
                break
            if _tend(worker, now, commands[worker.index], environment):
                stopping = True
                break
    return _drain(workers, settings.lifecycle.drain_seconds)


def _tend(worker: _Worker, now: float, command: list[str], environment: dict[str, str]) -> bool:
    """Restart `worker` when its back-off is over, or schedule its restart when it has exited;
    True when it exited with 2 (a configuration error: restarting cannot help, stop them all)."""
    if worker.process is None:
        if worker.restart_at is not None and now >= worker.restart_at:
            worker.process = _start_worker(command, environment)
            worker.started_at, worker.restart_at = now, None
            worker.restarts += 1
        return False
    code = worker.process.poll()
    if code is None:
        return False
    if code == 2:
        logger.error("worker %d cannot start (exit 2); stopping", worker.index)
        return True
    delay = worker.next_backoff_s(now)
    logger.error(
        "worker %d (pid %d) exited with %d; restarting in %.1f s", worker.index, worker.process.pid, code, delay
    )
    worker.process, worker.restart_at = None, now + delay
    return False


def _drain(workers: list[_Worker], drain_seconds: float) -> int:
    """SIGTERM every running worker and wait for them (killing those still there `drain_seconds`
    + 15 s later); 0 when all exited 0, else 1."""
    for worker in workers:
        if worker.process is not None and worker.running:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + drain_seconds + 15
    codes = []
    for worker in workers:
        if worker.process is None:
            continue
        try:
            codes.append(worker.process.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            codes.append(worker.process.wait())
    clean = all(code == 0 for code in codes)
    (logger.info if clean else logger.warning)("all workers stopped (exit codes %s)", codes)
    return 0 if clean else 1
