"""The exact int8 scan against the float32 scan: kernels, passes, rows rescored, memory, 10M, server.

In-process (what one Recommend pass runs, without the transport), 1M x 384 matrices, memory-mapped,
warm: random unit rows (the worst case for the bound: no structure) and "real" rows (embeddings
of ~20k real sentences, the docstrings of Python's standard library, by the bundled MiniLM, each
item one of them plus noise of norm 0.2, renormalised). Every figure is the median of ROUNDS runs,
both scans interleaved round by round; every query's ids and scores are compared between scans.

Server: `embedrec serve --scan int8|float32` on the 1M random matrix, Recommend by vector (k=10)
through gRPC at concurrency 1, 4 and 16, and Info's latency under Recommend at c=4.

10M (with --ten-million, which `make bench-exact-scan` passes): 10M x 384 random unit rows written
to disk (15 GB), the codes built and written (export-items' step), single-query and 16-query
passes of both scans.

Usage: python -m bench.exact_scan [--rounds R] [--ten-million] [--quick]   (make bench-exact-scan)
"""

from __future__ import annotations

import argparse
import ast
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import MODEL_DIR, REPO_ROOT, ensure_artifacts, run_header, synthetic_items, write_section
from embedrec.server.catalog.mmap.codes import ITEM_CODES, build_codes, write_codes
from embedrec.server.catalog.mmap.scan import ScanStats, exact_top_k
from embedrec.server.catalog.mmap.store import ItemIndex
from embedrec.server.manifest import ITEMS_MANIFEST, ITEMS_MATRIX, read_items_manifest, sha256_file

DIM = 384
K = 10
QUERY_COUNTS = (1, 2, 4, 16)


def median_ms(function: Callable[[], Any], rounds: int) -> float:
    """Median wall time of `function` in ms over `rounds` runs after one warm-up."""
    function()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def unit(rows: np.ndarray) -> np.ndarray:
    normalised: np.ndarray = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    return normalised


def kernel_rows(directory: Path, rounds: int) -> list[str]:
    """One query over 1M x 384: each candidate kernel's time for the first pass."""
    import numkong
    import onnxruntime
    from onnx import TensorProto, helper

    matrix = np.load(directory / ITEMS_MATRIX, mmap_mode="r")
    codes, _ = build_codes(matrix)
    query = unit(np.random.default_rng(1).standard_normal((1, DIM)))
    query_codes = np.random.default_rng(2).integers(-127, 128, (1, DIM), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8",
        [
            helper.make_tensor_value_info("a", TensorProto.INT8, [None, DIM]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [DIM, None]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [None, None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    whole = numkong.dots_pack(codes)
    blocks = [numkong.dots_pack(np.ascontiguousarray(codes[s : s + 65536])) for s in range(0, len(codes), 65536)]
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(2)
    rows = [
        ("numpy float32 matrix-vector product (the float32 scan's first pass)", lambda: matrix @ query[0]),
        (
            "ONNX Runtime MatMulInteger, int8 codes",
            lambda: session.run(None, {"a": codes, "b": np.ascontiguousarray(query_codes.T)}),
        ),
        ("numkong dots_packed, int8 codes packed once, one thread", lambda: numkong.dots_packed(query_codes, whole)),
        (
            "numkong dots_packed, 16 blocks on 2 threads (the int8 scan's first pass)",
            lambda: list(pool.map(lambda block: numkong.dots_packed(query_codes, block), blocks)),
        ),
    ]
    base = median_ms(rows[0][1], rounds)
    lines = ["| kernel, one query over 1M x 384 | ms | vs float32 |", "|---|---|---|"]
    for name, function in rows:
        took = base if function is rows[0][1] else median_ms(function, rounds)
        lines.append(f"| {name} | {took:.1f} | {took / base:.2f}x |")
        print(lines[-1], flush=True)
    pool.shutdown()
    return lines


def pass_rows(
    name: str, index: ItemIndex, float_index: ItemIndex, rounds: int, counts: tuple[int, ...] = QUERY_COUNTS
) -> tuple[list[str], bool]:
    """Pass times of both scans for each of `counts` queries; whether every answer was identical.
    Each timed pass starts after a 0.2 s pause: OpenBLAS's threads spin for a while after a
    float32 matrix-vector product and would slow whatever runs right after it."""
    rng = np.random.default_rng(3)
    lines, identical, single = [], True, 0.0
    for count in counts:
        queries = unit(rng.standard_normal((count, DIM)))

        def run(store: ItemIndex, queries: np.ndarray = queries) -> list[tuple[np.ndarray, np.ndarray]]:
            return exact_top_k(store.matrix, queries, K, scan=store.scan, row_norm=store.row_norm, packed=store.packed)

        times: dict[str, list[float]] = {"int8": [], "float32": []}
        for _ in range(rounds):  # interleaved
            for scan, store in (("int8", index), ("float32", float_index)):
                time.sleep(0.2)
                started = time.perf_counter()
                found = run(store)
                times[scan].append(time.perf_counter() - started)
                if scan == "int8":
                    int8_found = found
            pairs = zip(int8_found, found, strict=True)
            identical &= all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in pairs)
        int8_ms, float_ms = (statistics.median(times[scan]) * 1000 for scan in ("int8", "float32"))
        single = single or int8_ms
        lines.append(
            f"| {name} | {count} | {int8_ms:.1f} | {float_ms:.1f} | {int8_ms / float_ms:.2f}x | "
            f"{int8_ms / single:.2f}x | {'yes' if identical else 'NO'} |"
        )
        print(lines[-1], flush=True)
    return lines, identical


def rescored_row(name: str, index: ItemIndex, queries: int = 200) -> str:
    """Rows rescored per single query: median and p99."""
    rng = np.random.default_rng(4)
    counts = []
    for _ in range(queries):
        stats = ScanStats()
        exact_top_k(
            index.matrix,
            unit(rng.standard_normal((1, DIM))),
            K,
            scan="int8",
            row_norm=index.row_norm,
            packed=index.packed,
            stats=stats,
        )
        counts.append(stats.snapshot()["rescored_rows"]["int8"])
    line = f"| {name} | {statistics.median(counts):.0f} | {np.percentile(counts, 99):.0f} | {max(counts)} |"
    print(line, flush=True)
    return line


MEMORY_PROBE = """
import ctypes, os, sys
from pathlib import Path
import numpy as np
from embedrec.server.catalog.mmap.store import ItemIndex
from embedrec.server.catalog.store import Query
from embedrec.server.catalog.mmap.topk import RowFilter
directory = Path(sys.argv[1])
for name in ("items.npy", "item_codes.npy"):  # start cold: out of the page cache
    fd = os.open(directory / name, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
index = ItemIndex(directory, scan=sys.argv[2])
rng = np.random.default_rng(5)
for _ in range(1000):
    q = rng.standard_normal(384).astype(np.float32)
    index.search([Query(q / np.linalg.norm(q), RowFilter())], 10)
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
cached = []
for name in ("items.npy", "item_codes.npy"):
    size = (directory / name).stat().st_size
    mapped = np.memmap(directory / name, dtype=np.uint8, mode="r")
    pages = (size + 4095) // 4096
    vector = (ctypes.c_ubyte * pages)()
    ctypes.CDLL(None).mincore(ctypes.c_void_p(mapped.ctypes.data), ctypes.c_size_t(size), vector)
    cached.append(sum(byte & 1 for byte in vector) * 4096 // 2**20)
print(int(status["RssAnon"].split()[0]) // 1024, int(status["RssFile"].split()[0]) // 1024, *cached)
"""


def memory_rows(directory: Path) -> list[str]:
    """Private memory, mapped pages and page cache after 1,000 queries, each scan in a fresh
    process that starts with the matrix and codes evicted from the page cache."""
    lines = []
    for scan in ("int8", "float32"):
        output = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(directory), scan], capture_output=True, text=True, check=True
        ).stdout.split()
        anon, mapped, matrix_cached, codes_cached = (int(value) for value in output)
        lines.append(f"| {scan} | {anon:,} | {mapped:,} | {matrix_cached:,} | {codes_cached:,} |")
        print(lines[-1], flush=True)
    return lines


def real_texts(limit: int) -> list[str]:
    """Up to `limit` distinct real sentences: first paragraphs of the standard library's docstrings."""
    texts: dict[str, None] = {}
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    first = " ".join(doc.split("\n\n")[0].split())
                    if len(first.split()) >= 5:
                        texts[first[:500]] = None
        if len(texts) >= limit:
            break
    return list(texts)[:limit]


def real_items(directory: Path, count: int, sources: int) -> int:
    """`count` items near real embeddings (see the module docstring); returns how many sources."""
    from embedrec.server.inference.encoder import OnnxEncoder

    texts = real_texts(sources)
    encoder = OnnxEncoder(MODEL_DIR, provider="cpu")
    embedded = np.concatenate([encoder.encode(texts[s : s + 64]) for s in range(0, len(texts), 64)])
    synthetic_items(directory, count)  # the directory's files; the rows are replaced below
    matrix = np.load(directory / ITEMS_MATRIX, mmap_mode="r+")
    rng = np.random.default_rng(6)
    for start in range(0, count, 50_000):
        stop = min(start + 50_000, count)
        noise = rng.standard_normal((stop - start, DIM)).astype(np.float32) * np.float32(0.2 / np.sqrt(DIM))
        matrix[start:stop] = unit(embedded[rng.integers(0, len(embedded), stop - start)] + noise)
    matrix.flush()
    del matrix
    _refresh_checksum(directory)
    return len(texts)


def _refresh_checksum(directory: Path) -> None:
    import json

    manifest = json.loads((directory / ITEMS_MANIFEST).read_text())
    manifest["items_sha256"] = sha256_file(directory / ITEMS_MATRIX)
    (directory / ITEMS_MANIFEST).write_text(json.dumps(manifest))


def with_codes(directory: Path) -> float:
    """Write the directory's codes (export-items' step); seconds it took."""
    started = time.perf_counter()
    write_codes(
        directory, np.load(directory / ITEMS_MATRIX, mmap_mode="r"), read_items_manifest(directory).items_sha256
    )
    return time.perf_counter() - started


def open_times(directory: Path) -> tuple[float, float]:
    """Seconds to open `directory` for the int8 scan with its stored codes, and without them."""
    started = time.perf_counter()
    ItemIndex(directory, scan="int8")
    stored = time.perf_counter() - started
    hidden = [directory / name for name in ("item_codes.json", "item_codes.npy")]
    for path in hidden:
        path.rename(path.with_suffix(path.suffix + ".aside"))
    try:
        started = time.perf_counter()
        ItemIndex(directory, scan="int8")
        building = time.perf_counter() - started
    finally:
        for path in hidden:
            path.with_suffix(path.suffix + ".aside").rename(path)
    return stored, building


def ten_million_rows(root: Path, rounds: int) -> list[str]:
    """10M random unit rows: code build time and pass times of both scans."""
    directory = synthetic_items(root / "ten-million", 10_000_000)
    build_s = with_codes(directory)
    started = time.perf_counter()
    index = ItemIndex(directory, scan="int8")
    open_s = time.perf_counter() - started
    float_index = ItemIndex(directory, scan="float32")
    lines = [
        f"- codes built and written in {build_s:.0f} s ({(directory / ITEM_CODES).stat().st_size / 2**30:.1f} GiB); "
        f"opening the directory for the int8 scan (checksum, packing) {open_s:.1f} s",
        "",
        "| catalog | queries | int8 ms | float32 ms | int8 / float32 | vs 1 query (int8) | identical |",
        "|---|---|---|---|---|---|---|",
    ]
    rows, _ = pass_rows("10M random", index, float_index, rounds, (1, 16))
    return lines + rows


def server_rows(directory: Path, step_s: float) -> list[str]:
    """Recommend by vector at c=1, 4, 16 with each scan; Info's p50 under Recommend at c=4."""
    from bench.common import server_process
    from embedrec.client import EmbedrecClient
    from embedrec.client.loadtest.processes import run_step_in_processes
    from embedrec.client.loadtest.runner import StepPlan
    from embedrec.client.loadtest.workload import Workload

    lines, rates = [], {}
    for scan in ("int8", "float32"):
        with server_process(["--scan", scan, "--metrics-port", "-1", "--http-port", "-1"], items_dir=directory) as (
            target,
            _,
        ):
            summaries = {}
            info_ms: list[float] = []
            for concurrency in (1, 4, 16):
                stop = threading.Event()

                def probe(stop: threading.Event = stop, info_ms: list[float] = info_ms) -> None:
                    with EmbedrecClient(target, timeout=10) as client:
                        while not stop.wait(0.05):
                            started = time.perf_counter()
                            client.info()
                            info_ms.append((time.perf_counter() - started) * 1000)

                prober = threading.Thread(target=probe) if concurrency == 4 else None
                if prober:
                    prober.start()
                plan = StepPlan("closed", concurrency, step_s, 1.0)
                workload = Workload(rpc_weights={"recommend": 1.0}, k=K)
                summaries[concurrency] = run_step_in_processes(
                    target, workload, plan, dim=DIM, processes=1, channels=4
                ).summary()
                if prober:
                    stop.set()
                    prober.join()
            for concurrency, summary in summaries.items():
                rates[(scan, concurrency)] = summary["requests_per_s"]
                lines.append(
                    f"| {scan} | {concurrency} | {summary['requests_per_s']:.1f} | "
                    f"{summary['latency_ms']['p50']:.1f} / {summary['latency_ms']['p99']:.1f} | "
                    + (f"{statistics.median(info_ms):.2f} |" if concurrency == 4 and info_ms else "|")
                )
                print(lines[-1], flush=True)
    ratios = ", ".join(
        f"c={c}: {rates[('int8', c)] / rates[('float32', c)]:.2f}x" for c in (1, 4, 16) if rates[("float32", c)]
    )
    lines.append("")
    lines.append(f"int8 / float32 req/s: {ratios}; int8 c=4 / c=1: {rates[('int8', 4)] / rates[('int8', 1)]:.2f}x")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ten-million", action="store_true")
    parser.add_argument("--quick", action="store_true", help="100k items, short steps: a smoke run")
    args = parser.parse_args(argv)
    ensure_artifacts()
    count = 100_000 if args.quick else 1_000_000
    step_s = 3.0 if args.quick else 15.0
    with tempfile.TemporaryDirectory(dir=REPO_ROOT / "build") as temporary:
        root = Path(temporary)
        random_dir = synthetic_items(root / "random", count)
        random_build_s = with_codes(random_dir)
        open_stored_s, open_building_s = open_times(random_dir)
        real_dir = root / "real"
        sources = real_items(real_dir, count, 2_000 if args.quick else 20_000)
        with_codes(real_dir)
        print("kernels", flush=True)
        kernels = kernel_rows(random_dir, args.rounds)
        print("passes", flush=True)
        passes, rescored, all_identical = [], [], True
        for name, directory in (("random unit", random_dir), ("real + noise", real_dir)):
            index, float_index = ItemIndex(directory, scan="int8"), ItemIndex(directory, scan="float32")
            rows, identical = pass_rows(name, index, float_index, args.rounds)
            passes += rows
            all_identical &= identical
            rescored.append(rescored_row(name, index))
            del index, float_index
        print("memory", flush=True)
        memory = memory_rows(random_dir)
        print("server", flush=True)
        server = server_rows(random_dir, step_s)
        ten = ten_million_rows(root, max(3, args.rounds // 2)) if args.ten_million else []
    command = "make bench-exact-scan" if args.ten_million else "python -m bench.exact_scan " + " ".join(argv or [])
    items_per_gib_int8 = 2**30 // (DIM + 4)
    items_per_gib_float = 2**30 // (DIM * 4)
    body = [
        "## Exact int8 scan: Recommend at int8 bandwidth, the same answer",
        "",
        run_header(command),
        f"{count:,} x {DIM} items; random unit rows, and real rows (MiniLM embeddings of {sources:,} standard-library "
        "docstrings, each item one of them plus noise of norm 0.2, renormalised); k = 10; medians of "
        f"{args.rounds} rounds, both scans interleaved. Codes for {count:,} items built and written in "
        f"{random_build_s:.1f} s. Opening the {count:,} items for the int8 scan: {open_stored_s:.1f} s with "
        f"stored codes (checksum and packing), {open_building_s:.1f} s for a directory without them (built in "
        "memory at load).",
        "",
        "### First-pass kernels (chosen by this measurement)",
        "",
        *kernels,
        "",
        "### A pass of the exact scan (bound, rescoring and merge included)",
        "",
        "| catalog | queries | int8 ms | float32 ms | int8 / float32 | vs 1 query (int8) | identical |",
        "|---|---|---|---|---|---|---|",
        *passes,
        "",
        f"Ids and scores identical between the scans on every measured query: {'yes' if all_identical else 'NO'}.",
        "",
        "### Rows rescored per query (200 single queries)",
        "",
        "| catalog | median | p99 | max |",
        "|---|---|---|---|",
        *rescored,
        "",
        "### Memory after 1,000 random queries (a fresh process per scan, matrix and codes evicted first)",
        "",
        "| scan | private MiB (RssAnon: packed codes) | mapped MiB (RssFile) | items.npy in page cache MiB | "
        "item_codes.npy in page cache MiB |",
        "|---|---|---|---|---|",
        *memory,
        "",
        f"Items per GiB of RAM at {DIM} dimensions: int8 scan ~{items_per_gib_int8 / 1e6:.1f}M (packed codes; the "
        f"float32 rows stay on disk, only rescored rows are read), float32 scan ~{items_per_gib_float / 1e6:.2f}M "
        "(the whole matrix, read on every pass, must stay in the page cache to run at memory speed).",
        "",
        "### Server: Recommend by vector through gRPC (k = 10, random catalog)",
        "",
        "| scan | concurrency | req/s | p50 / p99 ms | Info p50 ms under it |",
        "|---|---|---|---|---|",
        *server,
    ]
    if ten:
        body += ["", "### 10M items (random unit rows, 15 GB matrix)", "", *ten]
    write_section("exact-scan", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
