"""Recall@10 of category-filtered searches on an HNSW collection of a real Milvus server, by the
share of rows the filter admits, on a real catalog, queried right after the sync returned.

The catalog: the first paragraphs of the standard library's docstrings (distinct, at least 5
words), embedded by the bundled MiniLM, each item's category its top-level module (`email`,
`asyncio`, ...), the filter field, in the order the files are read (a module's items are
neighbours in the catalog, as a real catalog's categories often are). Queries: docstrings past the
items'. Every category is searched with every query (filter values = [category]) through the
Milvus store (milvus.filtered's plan applied, default ef) and through the memory-mapped exact
store on the same build; recall@10 is the share of the exact top 10 found, averaged per bucket of
the share of rows the category admits. `--raw` searches without the plan (one filtered search),
`--shuffled` builds the catalog in a random order, `--segment-rows N` caps Milvus's segments at
about N rows (dataCoord.segment.maxSize), as a large catalog's several segments would, `--added N`
syncs all but the last N rows first and then all (a catalog that grew: the added rows get a
segment of their own), measuring once Milvus loaded it sealed.

Usage: nice -n 19 python -m bench.milvus_filter_recall [--items 10000] [--queries 50] [--raw]
       [--shuffled] [--segment-rows N] [--added N] [--milvus-config KEY=VALUE]
Recall only (no timing): safe on a busy machine.
"""

from __future__ import annotations

import argparse
import ast
import json
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import MODEL_DIR, REPO_ROOT
from embedrec.server.catalog.store import History, ItemStore, Query

K = 10
WORK = REPO_ROOT / "bench/results/filter_recall"
NO_FILTER = "(no filter)"
BUCKETS = ((0.0, 0.01), (0.01, 0.05), (0.05, 0.10), (0.10, 0.25), (0.25, 0.52), (0.52, 1.01))


def docstrings(limit: int) -> list[tuple[str, str]]:
    """Up to `limit` distinct (text, top-level module) pairs of the standard library's docstrings."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found: dict[str, str] = {}
    for path in sorted(stdlib.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        module = path.relative_to(stdlib).parts[0].removesuffix(".py")
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                first = " ".join(doc.split("\n\n")[0].split()) if doc else ""
                if len(first.split()) >= 5:
                    found.setdefault(first[:500], module)
        if len(found) >= limit:
            break
    return list(found.items())[:limit]


def build(items: int, queries: int, shuffled: bool) -> tuple[Path, np.ndarray]:
    """The item build (cached under WORK) and the queries' embeddings."""
    from embedrec.export.items import build_items
    from embedrec.server.inference.encoder import OnnxEncoder

    pairs = docstrings(items + queries)
    catalog_rows = [{"id": f"doc-{n}", "text": text, "category": module} for n, (text, module) in enumerate(pairs)]
    catalog_rows = catalog_rows[:items]
    if shuffled:
        catalog_rows = [catalog_rows[n] for n in np.random.default_rng(0).permutation(len(catalog_rows))]
    name = f"{items}{'-shuffled' if shuffled else ''}"
    WORK.mkdir(parents=True, exist_ok=True)
    catalog = WORK / f"catalog-{name}.jsonl"
    catalog.write_text("".join(json.dumps(row) + "\n" for row in catalog_rows), encoding="utf-8")
    items_dir = WORK / f"items-{name}"
    in_order = WORK / f"items-{items}"  # the same texts: their embeddings reused
    reuse = in_order if shuffled and in_order.exists() else None
    build_items(catalog, MODEL_DIR, items_dir, filter_field="category", progress=False, reuse_from=reuse)
    cached = WORK / f"queries-{items}-{queries}.npy"
    if not cached.exists():
        encoder = OnnxEncoder(MODEL_DIR, provider="cpu")
        np.save(cached, np.asarray(encoder.encode([text for text, _ in pairs[items:]]), dtype=np.float32))
    return items_dir, np.load(cached)


def first_rows(items_dir: Path, count: int) -> Path:
    """A build of the first `count` rows of `items_dir`'s catalog (its embeddings reused)."""
    from embedrec.export.items import build_items

    lines = (items_dir.parent / catalog_name(items_dir)).read_text(encoding="utf-8").splitlines(keepends=True)
    catalog = WORK / f"catalog-{items_dir.name.removeprefix('items-')}-first-{count}.jsonl"
    catalog.write_text("".join(lines[:count]), encoding="utf-8")
    output = WORK / f"items-{items_dir.name.removeprefix('items-')}-first-{count}"
    build_items(catalog, MODEL_DIR, output, filter_field="category", progress=False, reuse_from=items_dir)
    return output


def synced(items_dir: Path, uri: str, added: int) -> None:
    """Sync `items_dir` into the collection (HNSW): at once, or the rows but the last `added`
    first and then all (a catalog that grew), waiting until Milvus loaded the added rows' segment
    sealed (~15 s: until then they are searched exactly, as a growing segment)."""
    from pymilvus import MilvusClient

    from embedrec.export.milvus_sync import sync_to_milvus
    from embedrec.server.catalog.milvus.index import VectorIndex

    hnsw = VectorIndex.of("HNSW")
    if added:
        count = sum(1 for _ in (items_dir.parent / catalog_name(items_dir)).open())
        sync_to_milvus(first_rows(items_dir, count - added), uri, "filter_recall", progress=False, vector_index=hnsw)
    sync_to_milvus(items_dir, uri, "filter_recall", progress=False, vector_index=hnsw)
    client, started = MilvusClient(uri=uri), time.monotonic()
    while added and time.monotonic() - started < 120:
        flushed = {one.segment_id for one in client.list_persistent_segments("filter_recall")}
        if flushed <= {one.segment_id for one in client.list_loaded_segments("filter_recall")}:
            print(f"every segment loaded sealed {time.monotonic() - started:.0f} s after the sync", flush=True)
            break
        time.sleep(1.0)


def category_ids(store: ItemStore, vectors: np.ndarray, category: str) -> list[list[str]]:
    """Each query's top-K ids among the items of `category` (NO_FILTER: among all)."""
    empty = History(np.zeros((0, vectors.shape[1]), np.float32), [], None)
    values = [category] if category != NO_FILTER else []
    selection = store.selection(empty, [], values, field="filter_values")
    return [[one.item_id for one in hits] for hits in store.search([Query(v, selection) for v in vectors], K)]


def recall(found: list[list[str]], truth: list[list[str]]) -> list[float]:
    """Each query's share of its exact top K found."""
    return [len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True) if b]


def segments(uri: str, collection: str) -> str:
    """The collection's flushed segments' row counts and how many the query node has sealed with an index."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    flushed = sorted(int(one.num_rows) for one in client.list_persistent_segments(collection))
    loaded = client.list_loaded_segments(collection)
    indexed = sum(1 for one in loaded if one.index_id)
    return f"flushed segments (rows): {flushed}; loaded: {len(loaded)}, with an index: {indexed}"


def measure(items_dir: Path, vectors: np.ndarray, uri: str, raw: bool) -> dict[str, tuple[float, list[float]]]:
    """Per category: (share of the rows it admits, each query's recall@K)."""
    from embedrec.server.catalog.milvus.filtered import UNPLANNED
    from embedrec.server.catalog.milvus.store import MilvusItems
    from embedrec.server.catalog.mmap.store import ItemIndex

    exact = ItemIndex(items_dir, scan="float32")
    store = MilvusItems(uri, "filter_recall", timeout=600.0)
    if raw:
        store._filter_plan = lambda selection: UNPLANNED  # type: ignore[method-assign]
    counts = Counter(json.loads(line)["category"] for line in (items_dir.parent / catalog_name(items_dir)).open())
    total = sum(counts.values())
    results = {}
    for category, count in [*sorted(counts.items()), (NO_FILTER, total)]:
        truth = category_ids(exact, vectors, category)
        results[category] = (count / total, recall(category_ids(store, vectors, category), truth))
    return results


def catalog_name(items_dir: Path) -> str:
    return "catalog-" + items_dir.name.removeprefix("items-") + ".jsonl"


def report(results: dict[str, tuple[float, list[float]]]) -> None:
    """recall@K per bucket of the admitted share, and the worst categories."""
    print("| rows admitted | categories | searches | recall@10 | worst category |")
    print("|---|---|---|---|---|")
    every: list[float] = []
    for low, high in BUCKETS:
        chosen = {name: value for name, value in results.items() if low < value[0] <= high and name != NO_FILTER}
        if not chosen:
            continue
        values = [one for _, per in chosen.values() for one in per]
        every += values
        worst = min(chosen, key=lambda name: float(np.mean(chosen[name][1])))
        share, per = chosen[worst]
        print(
            f"| {low:.0%}-{min(high, 1.0):.0%} | {len(chosen)} | {len(values)} | {np.mean(values):.4f} "
            f"| {worst} ({share:.2%}): {np.mean(per):.3f} |"
        )
    print(f"| every category | {len(results) - 1} | {len(every)} | {np.mean(every):.4f} | |")
    print(f"| no filter | | {len(results[NO_FILTER][1])} | {np.mean(results[NO_FILTER][1]):.4f} | |", flush=True)


def main(argv: list[str] | None = None) -> int:
    from tests.e2e.milvus_process import MilvusServerProcess

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--raw", action="store_true", help="one filtered search, no plan")
    parser.add_argument("--shuffled", action="store_true", help="the catalog in a random order")
    parser.add_argument("--segment-rows", type=int, default=0, help="cap Milvus's segments at ~N rows")
    parser.add_argument("--added", type=int, default=0, help="sync all but the last N rows first, then all")
    parser.add_argument("--milvus-config", action="append", default=[], help="KEY=VALUE of milvus.yaml")
    args = parser.parse_args(argv)
    items_dir, vectors = build(args.items, args.queries, args.shuffled)
    with tempfile.TemporaryDirectory(prefix="milvus-filter-recall-") as directory:
        server = MilvusServerProcess(Path(directory))
        server.extra_config.update(one.split("=", 1) for one in args.milvus_config)
        if args.segment_rows:
            # ~1.6 KiB a row (384 float32 + fields): maxSize in MiB
            server.extra_config["dataCoord.segment.maxSize"] = str(max(1, args.segment_rows * 1600 // 2**20))
        server.start()
        try:
            synced(items_dir, server.uri, args.added)
            print(segments(server.uri, "filter_recall"), flush=True)
            report(measure(items_dir, vectors, server.uri, args.raw))
        finally:
            server.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
