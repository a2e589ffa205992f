"""The Milvus item store on a real Milvus server (FLAT, HNSW) and on Milvus Lite, against the
memory-mapped matrix (float32 and int8 scans), at 100k and 1M items.

Items: rows near real embeddings (bench.exact_scan.real_items: MiniLM embeddings of standard-
library docstrings plus noise); queries: embeddings of QUERIES docstrings not among the items'
sources. Per store: single-query p50 in process (the search a Recommend runs after admission),
recall@10 against the exact answer (the matrix's float32 scan), on the HNSW collection also by filter
selectivity (1%, 10%, 50%) and the live recall estimate beside the measured recall, sync time (a built directory into
a new collection: insert, flush, index, load; for HNSW the index replaced on the synced rows), and
through embedrec (`embedrec serve`, Recommend by vector, closed loop at c=16): req/s, p50, and the
resident memory of embedrec and of Milvus. HNSW is measured at several ef; the server's default
(milvus.index.DEFAULT_EF) is the one the target is read at. Milvus Lite runs at 100k only (at 1M
its sync took 497 s and one query 3.2 s: the 2026-11-28 section this one replaces).

Usage: python -m bench.milvus [--items 100000,1000000] [--step-s S] [--quick]   (make bench-milvus)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.catalog import add_columns
from bench.common import MODEL_DIR, ensure_artifacts, run_header, server_process, write_section
from bench.exact_scan import DIM, real_items, real_texts, unit
from embedrec.server.catalog.fields import ConditionSpec
from embedrec.server.catalog.milvus.index import DEFAULT_EF, VectorIndex
from embedrec.server.catalog.mmap.store import ItemIndex
from embedrec.server.catalog.store import History, ItemStore, Query, SearchEffort
from tests.e2e.milvus_process import MilvusServerProcess

K = 10
QUERIES = 100
EF_SWEEP = tuple(sorted({64, 128, 256, DEFAULT_EF, 1024}))
COLLECTION = "bench"
# `price` is uniform in [0, 1000) (bench.catalog.add_columns): price < 10 admits 1% of the rows.
SELECTIVITIES = (0.01, 0.10, 0.50)
LIVE_EFS = (64, DEFAULT_EF)


def query_vectors(sources: int) -> np.ndarray:
    """QUERIES real embeddings of texts past the items' `sources`."""
    from embedrec.server.inference.encoder import OnnxEncoder

    texts = real_texts(sources + QUERIES)[sources:]
    encoder = OnnxEncoder(MODEL_DIR, provider="cpu")
    return unit(np.asarray(encoder.encode(texts), dtype=np.float32))


def run_queries(store: ItemStore, vectors: np.ndarray) -> tuple[list[list[str]], float]:
    """Each query's top-K ids, one search at a time; the median ms of one search."""
    empty = History(np.zeros((0, vectors.shape[1]), np.float32), [], None)
    selection = store.selection(empty, [], [], field="filter_values")
    found, times = [], []
    for vector in vectors:
        started = time.perf_counter()
        result = store.search([Query(vector, selection)], K)[0]
        times.append((time.perf_counter() - started) * 1000)
        found.append([one.item_id for one in result])
    return found, statistics.median(times)


def run_filtered(store: ItemStore, vectors: np.ndarray, share: float) -> list[list[str]]:
    """Each query's top-K ids among the items whose price admits `share` of them."""
    empty = History(np.zeros((0, vectors.shape[1]), np.float32), [], None)
    condition = ConditionSpec("price", lt=1000.0 * share)
    selection = store.selection(empty, [], [], field="filter_values", conditions=[condition])
    return [[one.item_id for one in store.search([Query(vector, selection)], K)[0]] for vector in vectors]


def trust_rows(items_dir: Path, uri: str, vectors: np.ndarray, truth: list[list[str]]) -> list[dict[str, Any]]:
    """On the HNSW collection right after its sync returned: recall@10 by filter selectivity at the
    default ef (milvus.filtered's plan), and the live estimate (every search sampled) beside the
    measured recall at LIVE_EFS."""
    from embedrec.server.catalog.live_recall import LiveRecall
    from embedrec.server.catalog.milvus.store import MilvusItems

    exact = ItemIndex(items_dir, scan="float32")
    store = MilvusItems(uri, COLLECTION, timeout=600.0)
    rows: list[dict[str, Any]] = []
    for share in SELECTIVITIES:
        found = run_filtered(store, vectors, share)
        measured = recall(found, run_filtered(exact, vectors, share))
        rows.append({"what": f"filter admitting {share:.0%}, ef {DEFAULT_EF}", "recall": measured})
    for ef in LIVE_EFS:
        live = LiveRecall(1.0, 10_000, 1.0, seed=0)
        sampled = MilvusItems(uri, COLLECTION, timeout=600.0, effort=SearchEffort(ef=ef), live_recall=live)
        found = []
        for vector in vectors:  # paced: the checker's queue is bounded, a burst would drop checks
            found += run_queries(sampled, vector[None, :])[0]
            while not live.idle():
                time.sleep(0.01)
        estimate = live.estimate()
        rows.append(
            {
                "what": f"no filter, ef {ef}: live estimate {estimate.recall:.4f} ± {estimate.error:.4f} "
                f"(n={estimate.samples}, skipped {estimate.skipped}, dropped {estimate.dropped})",
                "recall": recall(found, truth),
            }
        )
    for row in rows:
        print(row, flush=True)
    return rows


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)]))


def rss_mib(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def through_embedrec(
    flags: list[str], items_dir: Path | None, step_s: float, milvus_pid: int | None
) -> dict[str, float]:
    """Recommend by vector at c=16 through a served embedrec: req/s, p50 ms, RSS of both (MiB)."""
    from embedrec.client.loadtest.processes import run_step_in_processes
    from embedrec.client.loadtest.runner import StepPlan
    from embedrec.client.loadtest.workload import Workload

    with server_process([*flags, "--metrics-port", "-1", "--http-port", "-1"], items_dir=items_dir) as (
        target,
        process,
    ):
        workload = Workload(rpc_weights={"recommend": 1.0}, k=K)
        summary = run_step_in_processes(
            target, workload, StepPlan("closed", 16, step_s, 1.0), dim=DIM, processes=1, channels=4
        ).summary()
        return {
            "rps": summary["requests_per_s"],
            "c16_p50": summary["latency_ms"]["p50"],
            "embedrec_rss": rss_mib(process.pid),
            "milvus_rss": rss_mib(milvus_pid),
        }


def measure(
    count: int, scratch: Path, step_s: float, sources: int, lite: bool, trust: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every store's row at `count` items; the HNSW collection's recall under filters and live
    estimate appended to `trust`."""
    from embedrec.export.milvus_sync import sync_to_milvus
    from embedrec.server.catalog.milvus.store import MilvusItems

    items_dir = scratch / f"items-{count}"
    real_items(items_dir, count, sources)
    add_columns(items_dir, count)
    vectors = query_vectors(sources)
    rows: list[dict[str, Any]] = []
    truth, _ = run_queries(ItemIndex(items_dir, scan="float32"), vectors)
    for scan in ("float32", "int8"):
        found, p50 = run_queries(ItemIndex(items_dir, scan=scan), vectors)
        served = through_embedrec(["--scan", scan], items_dir, step_s, None)
        rows.append({"store": f"mmap {scan}", "p50": p50, "recall": recall(found, truth), "sync_s": 0.0, **served})
        print(rows[-1], flush=True)

    server = MilvusServerProcess(scratch / f"milvus-{count}")
    server.start()
    try:
        milvus_flags = ["--items-store", "milvus", "--milvus-uri", server.uri, "--milvus-collection", COLLECTION]
        started = time.perf_counter()
        sync_to_milvus(items_dir, server.uri, COLLECTION, progress=False, timeout=3600.0)
        sync_s = time.perf_counter() - started
        found, p50 = run_queries(MilvusItems(server.uri, COLLECTION, timeout=600.0), vectors)
        served = through_embedrec(milvus_flags, None, step_s, server.milvus_pid())
        rows.append(
            {"store": "Milvus server FLAT", "p50": p50, "recall": recall(found, truth), "sync_s": sync_s, **served}
        )
        rows[-1]["ids_equal"] = found == truth
        print(rows[-1], flush=True)

        hnsw = VectorIndex.of("HNSW")
        started = time.perf_counter()
        sync_to_milvus(items_dir, server.uri, COLLECTION, progress=False, timeout=3600.0, vector_index=hnsw)
        sync_s = time.perf_counter() - started
        trust += [{"items": count, **row} for row in trust_rows(items_dir, server.uri, vectors, truth)]
        for ef in EF_SWEEP:
            store = MilvusItems(server.uri, COLLECTION, timeout=600.0, effort=SearchEffort(ef=ef))
            found, p50 = run_queries(store, vectors)
            row = {"store": f"Milvus server {hnsw.describe()}, ef {ef}", "p50": p50, "recall": recall(found, truth)}
            if ef == DEFAULT_EF:
                row.update(sync_s=sync_s, **through_embedrec(milvus_flags, None, step_s, server.milvus_pid()))
            rows.append(row)
            print(rows[-1], flush=True)
    finally:
        server.kill()

    if lite:
        uri = str(scratch / f"lite-{count}.db")
        started = time.perf_counter()
        sync_to_milvus(items_dir, uri, COLLECTION, progress=False, timeout=3600.0)
        sync_s = time.perf_counter() - started
        found, p50 = run_queries(MilvusItems(uri, COLLECTION, timeout=600.0), vectors)
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)  # one process at a time opens a Milvus Lite file
        served = through_embedrec(
            ["--items-store", "milvus", "--milvus-uri", uri, "--milvus-collection", COLLECTION], None, step_s, None
        )
        rows.append(
            {"store": "Milvus Lite FLAT", "p50": p50, "recall": recall(found, truth), "sync_s": sync_s, **served}
        )
        print(rows[-1], flush=True)
    for row in rows:
        row["items"] = count
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| items | store | 1 query p50 ms | recall@10 | sync s | c=16 req/s | c=16 p50 ms | embedrec RSS MiB "
        "| Milvus RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        served = "rps" in row
        lines.append(
            f"| {row['items']:,} | {row['store']} | {row['p50']:.1f} | {row['recall']:.4f} | "
            + (f"{row['sync_s']:.0f}" if row.get("sync_s") else "-")
            + (
                f" | {row['rps']:.1f} | {row['c16_p50']:.1f} | {row['embedrec_rss']:.0f} | "
                + ("-" if np.isnan(row["milvus_rss"]) else f"{row['milvus_rss']:.0f}")
                + " |"
                if served
                else " | | | | |"
            )
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Measure every store at each size and write the BENCHMARKS.md section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="100000,1000000", help="comma-separated catalog sizes")
    parser.add_argument("--step-s", type=float, default=10.0, help="seconds of load per c=16 step")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20k items, 2k sources, 3 s steps")
    arguments = parser.parse_args(argv)
    ensure_artifacts()
    sizes = [20_000] if arguments.quick else [int(value) for value in arguments.items.split(",")]
    step_s = 3.0 if arguments.quick else arguments.step_s
    sources = 2_000 if arguments.quick else 20_000
    rows: list[dict[str, Any]] = []
    trust: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for count in sizes:
            rows += measure(count, Path(scratch), step_s, sources, lite=count <= 100_000, trust=trust)
    flat_equal = all(row.get("ids_equal", True) for row in rows)
    lines = [
        "## Milvus: a real Milvus server (FLAT, HNSW) and Milvus Lite vs the memory-mapped matrix",
        "",
        run_header("make bench-milvus  (python -m bench.milvus)"),
        f"- items near real embeddings ({sources:,} MiniLM embeddings of standard-library docstrings plus noise, "
        f"384 dims), {QUERIES} held-out real queries, k={K}; recall@10 against the matrix's exact float32 scan",
        "- 1 query p50: the store's search in process, one query at a time; c=16: Recommend by vector through "
        f"`embedrec serve`, closed loop, {step_s:.0f} s, random query vectors; RSS at the end of that step",
        f"- Milvus server: the `milvus` package's standalone 2.3.5 (C++ engine), FLAT then HNSW built on the same "
        f"rows (sync s for HNSW: replacing the index and waiting for it); HNSW at ef {', '.join(map(str, EF_SWEEP))} "
        f"(the server's default: {DEFAULT_EF})",
        f"- FLAT on the Milvus server returned the matrix's ids for every query: {flat_equal}",
        "",
        *table(rows),
        "",
        f"HNSW right after its sync returned (the sync waits until Milvus searches the built index): recall@10 by "
        f"the share of rows a `where price < x` admits, at the default ef {DEFAULT_EF} with the filter plan of "
        "docs/milvus.md, and the live estimate (every search re-checked by an exact scan) beside the measured recall. "
        "Taken on a shared, busy machine.",
        "",
        "| items | search | recall@10 measured |",
        "|---|---|---|",
        *(f"| {row['items']:,} | {row['what']} | {row['recall']:.4f} |" for row in trust),
    ]
    body = "\n".join(lines) + "\n"
    write_section("milvus", body)
    print(body)
    return 0 if flat_equal else 1


if __name__ == "__main__":
    sys.exit(main())
