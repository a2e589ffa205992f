"""Shared benchmark plumbing: the real model and demo items, a server subprocess, the machine's
description, and writing a section of BENCHMARKS.md."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from embedrec.ports import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO_ROOT / "models/all-MiniLM-L6-v2"
ITEMS_DIR = REPO_ROOT / "items/demo"
CATALOG = REPO_ROOT / "data/demo_catalog.jsonl"
BENCHMARKS = REPO_ROOT / "BENCHMARKS.md"


def ensure_artifacts() -> tuple[Path, Path]:
    """Export the bundled MiniLM and build the demo items when missing (as `make serve` does)."""
    from embedrec.export.items import build_items
    from embedrec.export.onnx_model import export_model

    export_model(output_dir=MODEL_DIR)
    build_items(CATALOG, MODEL_DIR, ITEMS_DIR, progress=False)
    return MODEL_DIR, ITEMS_DIR


def synthetic_items(directory: Path, count: int, *, dim: int | None = None, seed: int = 0) -> Path:
    """`count` random unit rows, written as an item directory of the bundled model (so the server
    accepts it; `dim` defaults to the model's), with ids item-0, item-1, ..."""
    import numpy as np

    from embedrec.server.catalog.mmap.item_ids import write_id_index
    from embedrec.server.manifest import (
        ITEMS_IDS,
        ITEMS_LAYOUT,
        ITEMS_MANIFEST,
        ITEMS_MATRIX,
        ItemsManifest,
        read_model_manifest,
        sha256_file,
        write_manifest,
    )

    model = read_model_manifest(MODEL_DIR)
    dim = dim or model.dim
    directory.mkdir(parents=True, exist_ok=True)
    matrix = np.lib.format.open_memmap(directory / ITEMS_MATRIX, mode="w+", dtype=np.float32, shape=(count, dim))
    rng = np.random.default_rng(seed)
    for start in range(0, count, 50_000):
        block = rng.standard_normal((min(50_000, count - start), dim)).astype(np.float32)
        matrix[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    matrix.flush()
    del matrix
    with (directory / ITEMS_IDS).open("w") as ids:
        ids.writelines(f"item-{row}\n" for row in range(count))
    write_id_index(directory, count)
    write_manifest(
        ItemsManifest(
            item_count=count,
            dim=dim,
            dtype="float32",
            items_sha256=sha256_file(directory / ITEMS_MATRIX),
            model_name=model.model_name,
            model_onnx_sha256=model.onnx_sha256,
            catalog=f"synthetic (seed {seed})",
            catalog_sha256="",
            layout=ITEMS_LAYOUT,
        ),
        directory / ITEMS_MANIFEST,
    )
    return directory


@contextmanager
def server_process(
    extra_args: Sequence[str] = (),
    *,
    items_dir: Path | None = ITEMS_DIR,
    cwd: Path = REPO_ROOT,
    module: str = "embedrec.cli",
    log_path: Path | None = None,
    model_dir: Path = MODEL_DIR,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`embedrec serve` on the real model and `items_dir` in a subprocess, SERVING; yields
    (target, process) and drains it with SIGTERM on exit. `cwd` is the source tree whose code
    runs (another checkout, for before/after comparisons); `module` the one run with `serve`
    and the flags (a wrapper of embedrec.cli's main); `items_dir` None: none given (the flags name the
    items, e.g. a Milvus collection); `log_path`, when given, receives its
    stdout and stderr; `model_dir` the exported model it serves."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        module,
        "serve",
        "--model-dir",
        str(model_dir),
        "--port",
        str(port),
        "--log-level",
        "WARNING",
        *(["--items-dir", str(items_dir)] if items_dir is not None else []),
        *extra_args,
    ]
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(log_path.open("wb")) if log_path is not None else None
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=log)
        target = f"127.0.0.1:{port}"
        try:
            wait_serving(target)
            yield target, process
        finally:
            from embedrec.tune import stop_server

            stop_server(process)


def wait_serving(target: str, timeout_s: float = 120.0) -> None:
    """Block until `target` reports SERVING."""
    from embedrec.tune import wait_serving as wait_until_serving

    wait_until_serving(target, timeout_s=timeout_s)


def machine_description() -> str:
    """CPU model, cores, memory, OS and Python, for the record."""
    from embedrec.server.tuning import cpu_model

    cpu = cpu_model()
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def run_header(command: str) -> str:
    """The lines every benchmark section starts with: date, machine, command."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"- date: {now}\n- machine: {machine_description()}\n- command: `{command}`\n"


def under_topic(body: str) -> str:
    """`body` with each Markdown heading one level down: BENCHMARKS.md groups sections under
    `## topic` headings, so a section's `## title` is written as `### title`."""
    lines, fenced = [], False
    for line in body.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        lines.append("#" + line if not fenced and re.match(r"#+ ", line) else line)
    return "\n".join(lines)


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section `name` of BENCHMARKS.md, between its markers (its
    headings one level down, under the topic it sits in)."""
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    text = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else "# Benchmarks\n"
    block = f"{begin}\n{under_topic(body.rstrip())}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text, encoding="utf-8")


def wait_for_embed(target: str, timeout_s: float = 120.0) -> None:
    """Block until `target` answers an Embed call (for servers without a health service)."""
    import time

    import grpc

    from embedrec.v1 import embedrec_pb2 as pb
    from embedrec.v1 import embedrec_pb2_grpc as pb_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.EmbedRecStub(channel)
        while True:
            try:
                stub.Embed(pb.EmbedRequest(texts=["ready?"]), timeout=5)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
