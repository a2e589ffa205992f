"""The Milvus item store (Milvus Lite, embedded) against the memory-mapped matrix at 100k and 1M.

In-process searches (what a Recommend call runs after admission), k=10, on N random unit rows x
384 (the bundled model's dimension): one query, and 32 queries in one call (RecommendBatch's
shared pass). Each figure is the median of ROUNDS runs, the two stores interleaved round by
round. Build time: the sync of a built item directory into a new collection (insert, flush,
load); the embedding, the same for both stores, is not included. Resident memory: a fresh
process opens the store and answers the 32 queries; its RSS (Milvus Lite runs inside it). Ids
are compared between the stores for every query.

Usage: python -m bench.milvus [--items 100000,1000000] [--rounds R]   (make bench-milvus)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import run_header, synthetic_items, write_section
from embedrec.server.catalog.mmap_store import ItemIndex
from embedrec.server.catalog.store import ItemStore, Query, Recommendation

K = 10
BATCH = 32
COLLECTION = "bench"


def open_store(kind: str, items_dir: Path, uri: str) -> ItemStore:
    if kind == "mmap":
        return ItemIndex(items_dir)
    from embedrec.server.catalog.milvus_store import MilvusItems

    return MilvusItems(uri, COLLECTION, timeout=600.0)


def queries(store: ItemStore, count: int, seed: int = 7) -> list[Query]:
    from embedrec.server.catalog.store import History

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, store.describe().dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    empty = History(np.zeros((0, vectors.shape[1]), np.float32), [], None)
    selection = store.selection(empty, [], [], field="filter_values")
    return [Query(vector, selection) for vector in vectors]


def ids(found: list[list[Recommendation]]) -> list[list[str]]:
    return [[one.item_id for one in row] for row in found]


def resident_mib(kind: str, items_dir: Path, uri: str) -> float:
    """RSS of a fresh process that opens the store and answers BATCH queries."""
    script = (
        "import sys, json; from pathlib import Path; from bench.milvus import open_store, queries; "
        f"store = open_store({kind!r}, Path({str(items_dir)!r}), {uri!r}); "
        f"store.search(queries(store, {BATCH}), {K}); "
        "rss = [l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]; "
        "print(json.dumps(int(rss) / 1024))"
    )
    output = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    return float(json.loads(output.strip().splitlines()[-1]))


def measure(count: int, rounds: int, scratch: Path) -> dict[str, object]:
    from embedrec.export.milvus_sync import sync_to_milvus

    items_dir = synthetic_items(scratch / f"items-{count}", count)
    uri = str(scratch / f"milvus-{count}.db")
    started = time.perf_counter()
    sync_to_milvus(items_dir, uri, COLLECTION, progress=False, timeout=600.0)
    build_s = time.perf_counter() - started
    stores = {kind: open_store(kind, items_dir, uri) for kind in ("mmap", "milvus")}
    one = {kind: queries(store, 1) for kind, store in stores.items()}
    many = {kind: queries(store, BATCH) for kind, store in stores.items()}
    equal = all(
        ids(stores["mmap"].search(batch["mmap"], K)) == ids(stores["milvus"].search(batch["milvus"], K))
        for batch in (one, many)
    )
    runs: dict[tuple[str, str], list[float]] = {(kind, size): [] for kind in stores for size in ("1", str(BATCH))}
    for round_number in range(rounds):
        order = list(stores) if round_number % 2 == 0 else list(reversed(stores))
        for kind in order:
            for size, batch in (("1", one[kind]), (str(BATCH), many[kind])):
                started = time.perf_counter()
                stores[kind].search(batch, K)
                runs[(kind, size)].append(time.perf_counter() - started)
    del stores
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(uri)  # one process at a time opens a Milvus Lite file
    medians = {f"{kind} {size}": statistics.median(samples) * 1000 for (kind, size), samples in runs.items()}
    return {
        "items": count,
        "build_s": build_s,
        "medians_ms": medians,
        "rss_mib": {kind: resident_mib(kind, items_dir, uri) for kind in ("mmap", "milvus")},
        "ids_equal": equal,
    }


def main() -> int:
    """Time both stores at each size and write the BENCHMARKS.md section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="100000,1000000", help="comma-separated catalog sizes")
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for count in (int(value) for value in arguments.items.split(",")):
            results.append(measure(count, arguments.rounds, Path(scratch)))
            print(json.dumps(results[-1]), flush=True)
    lines = [
        "## Milvus Lite vs the memory-mapped matrix",
        "",
        run_header("make bench-milvus  (python -m bench.milvus)"),
        f"- in-process search, k={K}, random unit rows x 384; one query and {BATCH} queries in one call; median of "
        f"{arguments.rounds} rounds, the stores interleaved; build = syncing a built directory into a new Milvus "
        "Lite collection (insert, flush, load; embedding excluded, the same for both); RSS of a fresh process that "
        "opened the store and answered the 32 queries (Milvus Lite runs inside it)",
        "",
        "| items | store | 1 query ms | 32 queries ms | build s | RSS MiB | ids equal |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        medians, rss = result["medians_ms"], result["rss_mib"]
        assert isinstance(medians, dict) and isinstance(rss, dict)
        for kind in ("mmap", "milvus"):
            build = f"{result['build_s']:.1f}" if kind == "milvus" else "0 (the build's matrix)"
            lines.append(
                f"| {result['items']:,} | {kind} | {medians[f'{kind} 1']:.1f} | {medians[f'{kind} {BATCH}']:.1f} | "
                f"{build} | {rss[kind]:.0f} | {result['ids_equal']} |"
            )
        lines.append(
            f"| {result['items']:,} | milvus / mmap | {medians['milvus 1'] / medians['mmap 1']:.1f}x | "
            f"{medians[f'milvus {BATCH}'] / medians[f'mmap {BATCH}']:.1f}x | | {rss['milvus'] / rss['mmap']:.1f}x | |"
        )
    body = "\n".join(lines) + "\n"
    write_section("milvus", body)
    print(body)
    return 0 if all(result["ids_equal"] for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
