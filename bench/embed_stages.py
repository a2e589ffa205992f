"""Where the microseconds of an Embed call go: the median of each stage of a call at
concurrency 1 (bench/embed_stages_probe.py times them inside the server), and the server
process's CPU-µs per call at concurrency 32, for this tree and for an older commit, in one run.

Usage: python -m bench.embed_stages [--before REV]   (make bench-embed-stages; default REV: the
commit before the batcher lost its worker task)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.common import ITEMS_DIR, MODEL_DIR, REPO_ROOT, ensure_artifacts, run_header, wait_serving, write_section
from bench.embed import Step, grpc_step, h2load_step, real_texts, text_files
from embedrec.ports import free_port

DEFAULT_BEFORE = "9224188"  # the last commit with the worker task and run_in_executor hand-offs
PROBE = REPO_ROOT / "bench/embed_stages_probe.py"


@contextlib.contextmanager
def tree_at(revision: str) -> Iterator[Path]:
    """A detached worktree of `revision` (removed afterwards)."""
    directory = Path(tempfile.mkdtemp(prefix="embedrec-before-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(directory), revision], cwd=REPO_ROOT, check=True)
    try:
        yield directory
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(directory)], cwd=REPO_ROOT, check=True)


@contextlib.contextmanager
def server(tree: Path, *, probe_out: Path | None) -> Iterator[tuple[str, int]]:
    """`embedrec serve` from `tree` (with the stage probe when `probe_out`): (target, pid)."""
    port = free_port()
    entry = ["-m", "embedrec.cli"]
    if probe_out is not None:  # a copy alone in its folder: bench/http.py would shadow the standard library's http
        script = probe_out.with_name("embedrec_stages_probe.py")
        shutil.copyfile(PROBE, script)
        entry = [str(script)]
    flags = ["serve", "--model-dir", str(MODEL_DIR), "--items-dir", str(ITEMS_DIR), "--port", str(port)]
    flags += ["--http-port", "0", "--metrics-port", "0", "--log-level", "WARNING"]
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    if probe_out is not None:
        environment["EMBEDREC_STAGES_OUT"] = str(probe_out)
    process = subprocess.Popen([sys.executable, *entry, *flags], cwd=tree, env=environment)
    try:
        wait_serving(f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}", process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def measure(tree: Path, files: dict[str, Path]) -> tuple[dict[str, float], Step, Step]:
    """(stage medians µs at c=1, the c=1 gRPC step, the c=32 h2load step) of the server in `tree`."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "stages.json"
        with server(tree, probe_out=out) as (target, pid):
            c1 = grpc_step(target, files["real"], 1, pid)
        stages: dict[str, float] = json.loads(out.read_text())["median_us"]
    with server(tree, probe_out=None) as (target, pid):
        c32 = h2load_step(target, 32, pid)
    return stages, c1, c32


def main() -> int:
    """Measure both trees and write the BENCHMARKS.md section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="the commit to compare with")
    revision = parser.parse_args().before
    ensure_artifacts()
    with tempfile.TemporaryDirectory() as directory:
        files = text_files(Path(directory), real_texts(), [])
        with tree_at(revision) as before_tree:
            before = measure(before_tree, files)
        after = measure(REPO_ROOT, files)
    lines = [
        "## Embed: where an idle call's time goes (before / after)",
        "",
        run_header(f"make bench-embed-stages  (python -m bench.embed_stages --before {revision})"),
        "- stages: medians over sequential single-text Embed calls from the grpc-js client (concurrency 1), "
        "timed inside the server by bench/embed_stages_probe.py; before: commit "
        f"{revision}, after: this tree; CPU: the server process's user + system time per call under h2load, "
        "one text, concurrency 32",
        "",
        "| stage (µs, median) | before | after |",
        "|---|---|---|",
    ]
    for stage, value in after[0].items():
        lines.append(f"| {stage} | {before[0].get(stage, float('nan')):.0f} | {value:.0f} |")
    lines += [
        f"| client-observed p50 at c=1 (ms) | {before[1].p50_ms:.2f} | {after[1].p50_ms:.2f} |",
        f"| server CPU-µs per call at c=32 | {before[2].cpu_us_per_call:.0f} | {after[2].cpu_us_per_call:.0f} |",
        f"| req/s at c=32 (h2load) | {before[2].requests_per_s:.0f} | {after[2].requests_per_s:.0f} |",
    ]
    body = "\n".join(lines) + "\n"
    write_section("embed-stages", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
