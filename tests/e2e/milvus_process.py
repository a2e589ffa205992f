"""A real Milvus server (the standalone of the `milvus` package's `milvus-server`) in a directory
of its own on free ports, for the tests and the benchmarks: started, stopped and restarted on the
same data.

What the embedded standalone needs to restart (measured, Milvus 2.3.5):

- Stop it through its launcher's Ctrl+C (SIGINT): the launcher stops Milvus and exits within
  ~1 s. A SIGTERM to the Milvus process itself starts a graceful stop that waits minutes for
  coordinators already gone, and a SIGKILL of the launcher alone leaves Milvus running.
- Start it again with the Milvus binary and the configuration the launcher wrote, not with the
  launcher: the launcher probes each port with a plain bind, which fails while the old
  connections are in TIME_WAIT, and then silently moves the proxy to another port; Milvus
  itself rebinds its ports at once.
- Its sessions in its embedded etcd outlive a stopped process by `common.session.ttl` (30 s by
  default): until they expire the restarted coordinators wait for the old query node and
  searches time out. Here the TTL is 5 s; Milvus then serves ~1-2 s after listening again and
  reloads the collections that were loaded.
- Its embedded etcd ignores `--etcd-port` (that only sets the address Milvus would dial) and
  listens on etcd's defaults, 2379 and 2380, as its metrics do on 9091: a second server on the
  machine failed to start. Milvus reads an etcd configuration file named by `etcd.config.path`,
  which the launcher's template lacks but the environment variable ETCD_CONFIG_PATH sets (Milvus
  reads its settings from the environment too); here it gives etcd free ports, and METRICS_PORT
  the metrics.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from embedrec.ports import free_port

PORT_FLAGS = (
    "--proxy-port",
    "--etcd-port",
    "--root-coord-port",
    "--proxy-internal-port",
    "--query-coord-port",
    "--query-node-port",
    "--index-coord-port",
    "--index-node-port",
    "--data-coord-port",
    "--data-node-port",
)
SESSION_TTL_S = 5


def milvus_server_executable() -> str | None:
    """The `milvus-server` launcher of this environment, or None when `milvus` is not installed."""
    return shutil.which("milvus-server", path=str(Path(sys.executable).parent)) or shutil.which("milvus-server")


class MilvusServerProcess:
    """One Milvus standalone in `directory` (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        executable = milvus_server_executable()
        if executable is None:
            raise RuntimeError("milvus-server is not installed (pip install milvus==2.3.5)")
        self.executable = executable
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.data = directory / "data"
        self.ports = {flag: free_port() for flag in PORT_FLAGS}
        self.environment = self._etcd_environment(directory, self.ports["--etcd-port"])
        self.uri = f"http://127.0.0.1:{self.ports['--proxy-port']}"
        self.log_path = directory / "milvus-server.log"
        # More of milvus.yaml (keys the launcher's template has), set before the first start.
        self.extra_config: dict[str, str] = {"common.session.ttl": str(SESSION_TTL_S)}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        """Start Milvus (the launcher the first time, the binary on its data afterwards) and
        wait until it answers; RuntimeError (Milvus killed) when it does not within `timeout_s`."""
        with self.log_path.open("ab") as log:
            if (self.data / "configs" / "milvus.yaml").exists():
                environment = dict(
                    self.environment,
                    DEPLOY_MODE="STANDALONE",
                    MILVUS_RUN_DIR=str(self.data / "run"),
                    LD_LIBRARY_PATH=str(self.data / "bin"),
                )
                command = [str(self.data / "bin" / "milvus"), "run", "standalone"]
                self.process = subprocess.Popen(
                    command, cwd=self.data, env=environment, stdout=log, stderr=log, start_new_session=True
                )
            else:
                command = [self.executable, "--data", str(self.data)]
                for key, value in self.extra_config.items():
                    command += ["--extra-config", f"{key}={value}"]
                for flag, port in self.ports.items():
                    command += [flag, str(port)]
                self.process = subprocess.Popen(
                    command, env=self.environment, stdout=log, stderr=log, start_new_session=True
                )
        try:
            self.wait_listening(timeout_s)
        except BaseException:
            self.kill()  # never leave a half-started Milvus behind (it would hold its etcd ports)
            raise

    @staticmethod
    def _etcd_environment(directory: Path, client_port: int) -> dict[str, str]:
        """The environment that gives the embedded etcd `client_port` and a free peer port, and
        the metrics a free port (see the module docstring)."""
        peer = f"http://127.0.0.1:{free_port()}"
        client = f"http://127.0.0.1:{client_port}"
        config = directory / "embed-etcd.yaml"
        config.write_text(
            f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
            f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\ninitial-cluster: default={peer}\n"
        )
        return dict(os.environ, ETCD_CONFIG_PATH=str(config), METRICS_PORT=str(free_port()))

    def stop(self) -> None:
        """Stop Milvus (Ctrl+C to the launcher, or to the binary) and wait for every process of it."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # the launcher's Milvus child, if it lingers
        give_up = time.monotonic() + 15
        while time.monotonic() < give_up and self._group_alive():
            time.sleep(0.1)
        self.process = None

    def kill(self) -> None:
        """Kill every process of it at once (the end of a test session: nothing to keep)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
            self.process = None

    def wait_listening(self, timeout_s: float) -> None:
        """Block until Milvus answers a version call; RuntimeError with its log's tail if it
        exits or does not answer in `timeout_s`."""
        from pymilvus import MilvusClient

        give_up = time.monotonic() + timeout_s
        while time.monotonic() < give_up:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"milvus exited ({self.process.returncode}): {self._log_tail()}")
            try:
                MilvusClient(uri=self.uri, timeout=2).get_server_version()
                return
            except Exception:  # noqa: BLE001 (not listening yet)
                time.sleep(0.3)
        raise RuntimeError(f"milvus did not answer at {self.uri} within {timeout_s:.0f} s: {self._log_tail()}")

    def milvus_pid(self) -> int | None:
        """The pid of the Milvus process itself (the launcher's child, or the binary)."""
        if self.process is None:
            return None
        found = subprocess.run(["pgrep", "-g", str(self.process.pid), "-x", "milvus"], capture_output=True, text=True)
        pids = [int(pid) for pid in found.stdout.split()]
        return pids[0] if pids else None

    def _group_alive(self) -> bool:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]
