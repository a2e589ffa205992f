"""Recommendation quality on a real catalog: Debian's Python packages, each "user" a package and
its "interactions" the packages it depends on (Depends and Recommends).

Why this catalog: it is real, large enough to rank (about 4,500 items), built offline here from
the package lists apt already holds (`apt-cache dumpavail`; after `apt-get update` on a fresh
machine), and its relations are real choices people made: a package's dependencies are what its
maintainer picked for one purpose, as a basket is what a shopper picked. Holding one dependency
out and asking for it from the package's description and its other dependencies is the
question "what else does someone building this need". The item texts are the packages' short
descriptions, the user text the depending package's own description.

Items almost every package depends on (python3, on more than UBIQUITOUS of the users) are
infrastructure, not interest, and are left out of histories; each user's own package is a
"seen" row (never recommended to it). The held-out item is a dependency drawn at random (each
user's rows are shuffled by the seed: Depends order is no timeline).

Runs: the bundled MiniLM fp32 and int8 (both exported here) on the same split, with user
texts, against popularity, random and ALS; then fp32 from the history items alone, compared
with the first run through its saved per-user results (--against).

Usage: python -m bench.evaluate [--section python] [--max-users N] [--resamples R]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import MODEL_DIR, REPO_ROOT, run_header, server_process, write_section

INT8_DIR = REPO_ROOT / "models/all-MiniLM-L6-v2-int8"
UBIQUITOUS = 0.10
KS = (1, 5, 10, 20)
FREE_PORTS = ("--http-port", "0", "--metrics-port", "0")  # two servers at once: no fixed side ports


def debian_packages() -> dict[str, dict[str, str]]:
    """Every package apt knows: {name: {field: value}} (first lines of multi-line fields)."""
    text = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    packages: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        record = {}
        for line in block.splitlines():
            if line and not line[0].isspace():
                name, _, value = line.partition(":")
                record[name] = value.strip()
        if "Package" in record:
            packages.setdefault(record["Package"], record)
    return packages


def dependencies(record: dict[str, str]) -> list[str]:
    """The packages `record` depends on or recommends (the first of each alternative), in order."""
    names = []
    for field in ("Depends", "Recommends"):
        for alternative in record.get(field, "").split(","):
            name = alternative.split("|")[0].strip().split(" ")[0].split(":")[0]
            if name:
                names.append(name)
    return list(dict.fromkeys(names))


def catalog_and_log(section: str, seed: int) -> tuple[list[dict[str, str]], list[dict[str, Any]], dict[str, Any]]:
    """The catalog rows (the section's packages), the log rows, and figures about both."""
    packages = {
        name: record
        for name, record in debian_packages().items()
        if record.get("Section", "").split("/")[-1] == section and record.get("Description")
    }
    baskets = {
        name: [d for d in dependencies(record) if d in packages and d != name] for name, record in packages.items()
    }
    counts = Counter(item for basket in baskets.values() for item in basket)
    users = sum(1 for basket in baskets.values() if basket)
    ubiquitous = {item for item, count in counts.items() if count > UBIQUITOUS * users}
    rng = random.Random(seed)
    log: list[dict[str, Any]] = []
    for name, basket in baskets.items():
        kept = [item for item in basket if item not in ubiquitous]
        if len(kept) < 2:
            continue
        rng.shuffle(kept)
        log.append({"user": name, "item": name, "event": "seen"})
        log.append({"user": name, "text": packages[name]["Description"]})
        log += [{"user": name, "item": item} for item in kept]
    catalog = [{"id": name, "text": record["Description"]} for name, record in sorted(packages.items())]
    figures = {"items": len(catalog), "users": len({row["user"] for row in log}), "left out": sorted(ubiquitous)}
    return catalog, log, figures


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def build(catalog: Path, name: str) -> tuple[Path, Path, float]:
    """The fp32 and int8 exports and their item builds under items/ (kept: a rerun on the same
    catalog re-embeds nothing); seconds spent building."""
    from embedrec.export.items import build_items
    from embedrec.export.onnx_model import export_model

    export_model(output_dir=MODEL_DIR)
    export_model(output_dir=INT8_DIR, quantize="int8")
    started = time.perf_counter()
    fp32, int8 = REPO_ROOT / f"items/{name}-fp32", REPO_ROOT / f"items/{name}-int8"
    build_items(catalog, MODEL_DIR, fp32, progress=False)
    build_items(catalog, INT8_DIR, int8, progress=False)
    return fp32, int8, time.perf_counter() - started


def main() -> int:
    """Build, serve, evaluate twice, print the reports and write the BENCHMARKS.md section."""
    from embedrec.client.evaluate import EvaluationConfig, ServerTarget, evaluate
    from embedrec.client.evaluate.report import ProgressBar, format_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", default="python")
    parser.add_argument("--max-users", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        catalog_rows, log_rows, figures = catalog_and_log(arguments.section, arguments.seed)
        catalog = write_jsonl(scratch / "catalog.jsonl", catalog_rows)
        log = write_jsonl(scratch / "log.jsonl", log_rows)
        items_only = write_jsonl(scratch / "log-items.jsonl", [row for row in log_rows if "item" in row])
        fp32_items, int8_items, build_s = build(catalog, f"debian-{arguments.section}")
        config = EvaluationConfig(
            ks=KS,
            catalog_ids=[row["id"] for row in catalog_rows],
            max_users=arguments.max_users,
            seed=arguments.seed,
            resamples=arguments.resamples,
        )
        with (
            server_process(FREE_PORTS, items_dir=fp32_items) as (fp32, _),
            server_process(FREE_PORTS, items_dir=int8_items, model_dir=INT8_DIR) as (int8, _),
        ):
            progress = ProgressBar()
            started = time.perf_counter()
            first = evaluate(log, [ServerTarget("fp32", fp32), ServerTarget("int8", int8)], config, progress)
            first.write(scratch / "run.json")
            second_config = dataclasses.replace(config, baselines=(), against=(scratch / "run.json",))
            second = evaluate(items_only, [ServerTarget("fp32 items only", fp32)], second_config, progress)
            progress.close()
            evaluate_s = time.perf_counter() - started
    body = _section(arguments, figures, build_s, evaluate_s, format_report(first), format_report(second))
    print(body)
    write_section("evaluate", body)
    return 0


def _section(
    arguments: argparse.Namespace, figures: dict[str, Any], build_s: float, evaluate_s: float, first: str, second: str
) -> str:
    command = f"python -m bench.evaluate --section {arguments.section}" + (
        f" --max-users {arguments.max_users}" if arguments.max_users else ""
    )
    return (
        f"## Recommendation quality: Debian {arguments.section} packages and their dependencies\n\n"
        + run_header(command)
        + f"- catalog: {figures['items']} packages of section {arguments.section} (short descriptions); "
        f"{figures['users']} users (packages with 2+ dependencies in it); left out as infrastructure: "
        f"{', '.join(figures['left out']) or 'none'}\n"
        f"- embedding both item builds: {build_s:.0f} s; both evaluations: {evaluate_s:.0f} s "
        "(a shared, busy 2-core machine: timings are indicative only)\n\n"
        "fp32 and int8 servers with user texts, against the baselines:\n\n"
        f"```\n{first}\n```\n\nfp32 from history items alone (no user text), against the run above:\n\n"
        f"```\n{second}\n```\n"
    )


if __name__ == "__main__":
    sys.exit(main())
