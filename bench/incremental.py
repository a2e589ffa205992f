"""Incremental item build against a full build, in one run: a catalog of N generated short
texts, then 1% of the rows changed, 0.5% added and 0.5% removed; the incremental build into the
existing directory against a full build of the changed catalog, which must come out byte-identical.

Bundled MiniLM-L6 fp32 on the CPU, the item build's defaults (batch 32, blocks of 1,024 rows).

Usage: python -m bench.incremental [--items N]   (make bench-incremental)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from bench.common import MODEL_DIR, ensure_artifacts, run_header, write_section
from embedrec.export.items import build_items
from embedrec.server.manifest import sha256_file

WORDS = (
    "quiet",
    "energy",
    "saving",
    "air",
    "conditioner",
    "inverter",
    "portable",
    "tent",
    "sleeping",
    "bag",
    "hiking",
    "boots",
    "coffee",
    "tea",
    "kettle",
    "novel",
    "phone",
    "screen",
    "laptop",
    "bag",
    "red",
    "blue",
    "family",
    "kitchen",
    "garden",
    "lamp",
    "desk",
    "chair",
    "running",
    "shoes",
    "jacket",
)


def rows(count: int, seed: int, prefix: str = "item") -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"id": f"{prefix}-{row}", "text": " ".join(rng.choices(WORDS, k=rng.randint(4, 10)))} for row in range(count)
    ]


def write(path: Path, catalog: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in catalog))


def main() -> int:
    """Build, change, rebuild both ways; write the BENCHMARKS.md section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    arguments = parser.parse_args()
    ensure_artifacts()
    count = arguments.items
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        original = rows(count, seed=0)
        catalog = root / "catalog.jsonl"
        write(catalog, original)
        incremental = root / "incremental"
        build_items(catalog, MODEL_DIR, incremental, progress=False)
        changed = [dict(row) for row in original]
        rng = random.Random(1)
        for index in rng.sample(range(count), count // 100):
            changed[index]["text"] += " renewed"
        removed = set(rng.sample(range(count), count // 200))
        changed = [row for index, row in enumerate(changed) if index not in removed]
        changed += rows(count // 200, seed=2, prefix="new")
        write(catalog, changed)
        started = time.perf_counter()
        build_items(catalog, MODEL_DIR, incremental, progress=False)
        incremental_s = time.perf_counter() - started
        full = root / "full"
        started = time.perf_counter()
        build_items(catalog, MODEL_DIR, full, progress=False, force=True)
        full_s = time.perf_counter() - started
        identical = all(
            sha256_file(incremental / name) == sha256_file(full / name)
            for name in ("items.npy", "ids.txt", "ids_offsets.npy", "ids_hashes.npy", "row_hashes.npy")
        )
    body = "\n".join(
        [
            "## Incremental item builds",
            "",
            run_header("make bench-incremental  (python -m bench.incremental)"),
            f"- {count:,} generated 4-10-word items; then {count // 100:,} texts changed (1%), {count // 200:,} "
            f"added (0.5%), {len(removed):,} removed (0.5%); bundled MiniLM-L6 fp32 on the CPU, item build defaults",
            "",
            "| build of the changed catalog | seconds | / full |",
            "|---|---|---|",
            f"| full (`--force`) | {full_s:.1f} | 1.00 |",
            f"| incremental (into the previous build) | {incremental_s:.1f} | {incremental_s / full_s:.3f} |",
            "",
            f"Byte-identical (items.npy, ids and their index, row hashes): {identical}. Target <= 0.05: "
            f"{'met' if incremental_s / full_s <= 0.05 else 'not met'}.",
        ]
    )
    write_section("incremental", body + "\n")
    print(body)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
