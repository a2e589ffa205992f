"""Live-catalog features at 1M items: field conditions, a score floor and hidden items, each
against the plain search in the same run, and each checked against a float64 brute force.

In-process (the search a Recommend call runs, without the transport): a synthetic 1M x 384
matrix of random unit rows (the bundled model's dimension) with a categorical `brand` column
(100 values: one matches ~1% of items) and a numeric `price` column (uniform 0-1000: a range of
100 matches ~10%). One query at a time, k=10; each figure is the median of ROUNDS runs, the
variants interleaved round by round so drift on the shared machine hits them alike.

Usage: python -m bench.catalog [--items N] [--rounds R]   (make bench-catalog)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.common import run_header, synthetic_items, write_section
from embedrec.server.catalog.fields import FIELDS_DIR, CategoricalColumn, ConditionSpec, NumericColumn
from embedrec.server.catalog.mmap.store import ItemIndex
from embedrec.server.catalog.mmap.topk import RowFilter
from embedrec.server.catalog.store import Query
from embedrec.server.manifest import ITEMS_MANIFEST

K = 10
BRANDS = 100
ONE_BRAND = ConditionSpec("brand", any_of=["brand-0"])
PRICE_RANGE = ConditionSpec("price", gte=200, lt=300)


def add_columns(directory: Path, count: int, seed: int = 1) -> None:
    """A categorical `brand` and a numeric `price` column, as export-items would write them."""
    rng = np.random.default_rng(seed)
    fields = directory / FIELDS_DIR
    fields.mkdir(exist_ok=True)
    np.save(fields / "brand.offsets.npy", np.arange(count + 1, dtype=np.int64))
    np.save(fields / "brand.codes.npy", rng.integers(0, BRANDS, count).astype(np.int32))
    (fields / "brand.values.json").write_text(json.dumps([f"brand-{code}" for code in range(BRANDS)]))
    np.save(fields / "price.npy", rng.uniform(0, 1000, count))
    manifest = json.loads((directory / ITEMS_MANIFEST).read_text())
    manifest["fields"] = {"brand": "categorical", "price": "numeric"}
    (directory / ITEMS_MANIFEST).write_text(json.dumps(manifest))


def brute_force(items: ItemIndex, query: np.ndarray, allowed: np.ndarray | None, floor: float | None) -> list[str]:
    """The top-K ids by float64 scores over the rows in `allowed` (None: all) at or above `floor`."""
    scores = np.empty(len(items), dtype=np.float64)
    for start in range(0, len(items), 100_000):
        block = np.asarray(items.matrix[start : start + 100_000], dtype=np.float64)
        scores[start : start + len(block)] = block @ query.astype(np.float64)
    if allowed is not None:
        scores[~allowed] = -np.inf
    if floor is not None:
        scores[scores < floor] = -np.inf
    order = np.lexsort((np.arange(len(scores)), -scores))[:K]
    return [items.ids.ids_at(np.asarray([row]))[0] for row in order if np.isfinite(scores[row])]


def median_ms(runs: list[float]) -> float:
    return statistics.median(runs) * 1000


def main() -> int:
    """Build the synthetic catalog, time every variant, write the BENCHMARKS.md section."""
    # Kept whole: a benchmark script (measure, then write its section); one experiment in one place.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=15)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = synthetic_items(Path(scratch) / "items", arguments.items)
        add_columns(directory, arguments.items)
        items = ItemIndex(directory)
        rng = np.random.default_rng(7)
        query = rng.standard_normal(items.manifest.dim).astype(np.float32)
        query /= np.linalg.norm(query)
        brand_column, price_column = items.columns["brand"], items.columns["price"]
        assert isinstance(brand_column, CategoricalColumn) and isinstance(price_column, NumericColumn)
        brand = np.asarray(brand_column.codes) == 0
        price = np.asarray(price_column.values)
        in_range = (price >= 200) & (price < 300)
        scores = np.asarray(items.matrix @ query)
        floor = float(np.sort(scores)[-max(1, arguments.items // 1000)])  # admits ~0.1%
        hidden_rows = rng.choice(arguments.items, 10_000, replace=False)
        hidden_mask = np.zeros(arguments.items, dtype=np.bool_)
        hidden_mask[hidden_rows] = True
        plain_filter = items.row_filter(np.zeros(0, np.int64), (), field="f")
        variants: dict[str, tuple[Query, np.ndarray | None, float | None]] = {
            "plain": (Query(query, plain_filter), None, None),
            "brand = brand-0 (~1%)": (_conditioned(items, query, [ONE_BRAND]), brand, None),
            "200 <= price < 300 (~10%)": (_conditioned(items, query, [PRICE_RANGE]), in_range, None),
            "both": (_conditioned(items, query, [ONE_BRAND, PRICE_RANGE]), brand & in_range, None),
            "min_score admitting ~0.1%": (Query(query, plain_filter, floor), None, floor),
        }
        hidden_query = Query(query, RowFilter(blocked=hidden_mask))

        def searcher(one: Query) -> Callable[[], list[str]]:
            return lambda: [found.item_id for found in items.search([one], K)[0]]

        searches = {name: searcher(one) for name, (one, _, _) in variants.items()}
        searches["10,000 hidden"] = searcher(hidden_query)
        exact = {
            name: searches[name]() == brute_force(items, query, allowed, floor)
            for name, (_, allowed, floor) in variants.items()
        }
        exact["10,000 hidden"] = searches["10,000 hidden"]() == brute_force(items, query, ~hidden_mask, None)
        for search in searches.values():
            search()  # warm the page cache and the code paths
        runs: dict[str, list[float]] = {name: [] for name in searches}
        names = list(searches)
        for round_number in range(arguments.rounds):
            shift = round_number % len(names)  # each round starts with another variant
            for name in names[shift:] + names[:shift]:
                search = searches[name]
                started = time.perf_counter()
                search()
                runs[name].append(time.perf_counter() - started)
    plain = median_ms(runs["plain"])
    lines = [
        "## Live catalogs: conditions, a score floor and hidden items at 1M items",
        "",
        run_header("make bench-catalog  (python -m bench.catalog)"),
        f"- {arguments.items:,} random unit rows x {items.manifest.dim} (memory-mapped float32), one query, k={K}, "
        f"in-process search (what a Recommend call runs after admission); median of {arguments.rounds} interleaved "
        "runs, each round in a rotated order; ids compared with a float64 brute force. Conditions letting fewer "
        "than 2% of the items through (estimated on a sample) score only their eligible rows; the others are "
        "checked on the scan's candidates",
        "",
        "| search | median ms | / plain | ids equal brute force |",
        "|---|---|---|---|",
    ]
    for name, samples in runs.items():
        lines.append(f"| {name} | {median_ms(samples):.1f} | {median_ms(samples) / plain:.2f} | {exact[name]} |")
    body = "\n".join(lines) + "\n"
    write_section("catalog", body)
    print(body)
    return 0 if all(exact.values()) else 1


def _conditioned(items: ItemIndex, query: np.ndarray, conditions: list[ConditionSpec]) -> Query:
    return Query(query, items.row_filter(np.zeros(0, np.int64), (), field="f", conditions=conditions))


if __name__ == "__main__":
    sys.exit(main())
