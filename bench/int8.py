"""int8 speed/fidelity frontier of the bundled MiniLM: every recipe against fp32, one run.

Speed: in-process tokenise + infer + mean pool on length-sorted real texts, batch 1 and 32, one
ONNX Runtime thread, in texts per CPU-second of this process (process_time: on a shared, busy
machine wall-clock rates measure the neighbours; CPU time measures the model), in interleaved
rounds with the median reported. Then through the server (bench.int8_served, its own section).
Fidelity: the export's own agreement measure (export.agreement) on the catalog: share of fp32's
top-10 returned by int8 queries against int8 items and against fp32 items, and cosine.

Usage: python -m bench.int8 [--catalog FILE.jsonl] [--rounds N] [--no-server]   (make bench-int8)
The default catalog: a seeded sample of 20,000 of the Debian archive's one-line package
descriptions (`apt-cache dumpavail`: ~60,000, many near-identical, e.g. "... - Rust source
code"); where apt knows fewer, the summaries of the installed Python packages, the installed
Debian packages' descriptions and data/demo_catalog.jsonl.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import int8_served as served
from bench.common import CATALOG, run_header, write_section
from embedrec.export.agreement import embed_in_batches, retrieval_agreement
from embedrec.export.onnx_model import export_model
from embedrec.server.inference.cpu_features import host_cpu_flags, int8_target_for
from embedrec.server.inference.encoder import OnnxEncoder

PLAIN = {"int8_smoothing": None, "int8_per_token": (), "int8_keep_fp32": ()}
DEFAULT = "int8 default (smoothed 0.7, FFN outputs per token)"
CALIBRATED = "int8 default, --calibration-catalog (held-out catalog texts)"
CALIBRATION_TEXTS = 2000
RECIPES: dict[str, dict[str, Any]] = {
    "int8 plain (one scale per tensor, per-channel weights)": PLAIN,
    "int8 smoothed 0.7": {**PLAIN, "int8_smoothing": 0.7},
    "int8 smoothed 0.7, first FFN output fp32 (the old default)": {
        **PLAIN,
        "int8_smoothing": 0.7,
        "int8_keep_fp32": ("first-ffn-output",),
    },
    "int8 FFN outputs per token (no smoothing)": {**PLAIN, "int8_per_token": ("ffn-output",)},
    DEFAULT: {},
    CALIBRATED: {},  # calibration_catalog: the held-out texts, set in main()
    "int8 smoothed 0.7, every FFN output fp32": {**PLAIN, "int8_smoothing": 0.7, "int8_keep_fp32": ("ffn-output",)},
}
SECONDS = 2.0
DPKG_STATUS = Path("/var/lib/dpkg/status")
SAMPLE = 20_000


def default_texts() -> tuple[list[str], str]:
    """Real short descriptions found on this machine, deduplicated, and what they are: the
    Debian archive's where apt knows at least SAMPLE packages, else local_texts()."""
    from bench.evaluate import debian_packages

    try:
        descriptions = [record.get("Description", "") for record in debian_packages().values()]
    except (OSError, subprocess.SubprocessError):
        descriptions = []
    texts = sorted({text.strip() for text in descriptions if len(text.strip()) > 10})
    if len(texts) < SAMPLE:
        return local_texts()
    random.Random(0).shuffle(texts)
    what = f"a seeded sample of {SAMPLE:,} of the {len(texts):,} distinct one-line descriptions of the Debian archive"
    return texts[: SAMPLE + CALIBRATION_TEXTS], what


def held_out(texts: list[str]) -> tuple[list[str], list[str]]:
    """(calibration texts, measured texts): a seeded CALIBRATION_TEXTS (at most a tenth) apart, so
    the calibrated recipe is measured on texts it did not see; the rest keep their order."""
    rows = list(range(len(texts)))
    random.Random(1).shuffle(rows)
    count = min(CALIBRATION_TEXTS, len(texts) // 10)
    apart = set(rows[:count])
    return [texts[row] for row in rows[:count]], [text for row, text in enumerate(texts) if row not in apart]


def local_texts() -> tuple[list[str], str]:
    """The short descriptions of what is installed here, deduplicated, and what they are."""
    summaries = [d.metadata["Summary"] or "" for d in metadata.distributions()]
    debian = []
    if DPKG_STATUS.exists():
        debian = [
            line[len("Description: ") :]
            for line in DPKG_STATUS.read_text().splitlines()
            if line.startswith("Description: ")
        ]
    demo = [json.loads(line)["text"] for line in CATALOG.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = list(dict.fromkeys(text.strip() for text in summaries + debian + demo if len(text.strip()) > 10))
    what = (
        f"{len(texts)} real short texts: installed Python packages' summaries, installed Debian packages' "
        f"descriptions, data/demo_catalog.jsonl ({len(demo)} rows, many near-duplicates and translations)"
    )
    return texts, what


def catalog_texts(path: Path) -> tuple[list[str], str]:
    """The `text` of every row of a JSONL catalog."""
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts, f"{len(texts)} texts of {path.name}"


def throughput(encoder: OnnxEncoder, texts: list[str], batch: int) -> float:
    """Texts per CPU-second embedding `texts` (length-sorted) in batches, for SECONDS of CPU."""
    done, started = 0, time.process_time()
    while time.process_time() - started < SECONDS:
        for offset in range(0, len(texts) - batch + 1, batch):
            encoder.encode(texts[offset : offset + batch])
            done += batch
            if time.process_time() - started >= SECONDS:
                break
    return done / (time.process_time() - started)


def speeds(
    encoders: dict[str, OnnxEncoder], texts: list[str], rounds: int
) -> dict[str, dict[int, tuple[float, float]]]:
    """Per model and batch: (median texts/s, median ratio to fp32 within a round)."""
    sample = sorted(texts[:512], key=len)
    measured: dict[str, dict[int, list[tuple[float, float]]]] = {name: {1: [], 32: []} for name in encoders}
    for _ in range(rounds):
        for batch in (1, 32):
            base = throughput(encoders["fp32"], sample, batch)
            for name, encoder in encoders.items():
                value = base if name == "fp32" else throughput(encoder, sample, batch)
                measured[name][batch].append((value, value / base))
    return {
        name: {
            batch: (statistics.median(v for v, _ in runs), statistics.median(r for _, r in runs))
            for batch, runs in by_batch.items()
        }
        for name, by_batch in measured.items()
    }


def main(argv: list[str] | None = None) -> int:
    """Export fp32 and every recipe, measure them, write the BENCHMARKS.md section."""
    parser = argparse.ArgumentParser(prog="bench.int8")
    parser.add_argument("--catalog", type=Path, default=None, help="a JSONL catalog (field text)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-server", action="store_true", help="in process only")
    parser.add_argument("--served-rounds", type=int, default=4, help="rounds through the server (alternating)")
    arguments = parser.parse_args(argv)
    texts, what = catalog_texts(arguments.catalog) if arguments.catalog else default_texts()
    calibration, texts = held_out(texts)
    target = int8_target_for(host_cpu_flags())
    with tempfile.TemporaryDirectory(prefix="embedrec-int8-") as temporary:
        root = Path(temporary)
        export_model(output_dir=root / "fp32")
        encoders = {"fp32": OnnxEncoder(root / "fp32", provider="cpu", intra_op_threads=1)}
        calibration_path = root / "calibration.jsonl"
        rows = (json.dumps({"id": str(row), "text": text}) for row, text in enumerate(calibration))
        calibration_path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
        for index, (name, options) in enumerate(RECIPES.items()):
            if name == CALIBRATED:
                options = {**options, "calibration_catalog": calibration_path}
            export_model(
                output_dir=root / str(index), quantize="int8", int8_target=target, min_agreement=0.0, **options
            )
            encoders[name] = OnnxEncoder(root / str(index), provider="cpu", intra_op_threads=1)
            print("exported", name, flush=True)
        reference = embed_in_batches(encoders["fp32"].encode, texts)
        fidelity = {
            name: retrieval_agreement(reference, embed_in_batches(encoder.encode, texts))
            for name, encoder in encoders.items()
            if name != "fp32"
        }
        print(json.dumps(fidelity, indent=1), flush=True)
        speed = speeds(encoders, texts, arguments.rounds)
        if not arguments.no_server:
            command = f"make bench-int8  (python -m bench.int8, its last part; rounds {arguments.served_rounds})"
            served.measure(
                root / str(list(RECIPES).index(DEFAULT)), root / "fp32", texts, arguments.served_rounds, command
            )
    write_section("int8", report(speed, fidelity, what, target, arguments))
    return 0


def report(
    speed: dict[str, Any],
    fidelity: dict[str, Any],
    what: str,
    target: str,
    arguments: argparse.Namespace,
) -> str:
    """The BENCHMARKS.md section."""
    command = (
        "make bench-int8  (python -m bench.int8"
        + (f" --catalog {arguments.catalog.name}" if arguments.catalog else "")
        + ")"
    )
    lines = [
        "## int8 frontier (bundled MiniLM-L6, CPU)",
        "",
        run_header(command),
        f"- int8 target: `{target}` (auto, from this host's CPU flags); a shared, busy machine: speeds are texts "
        f"per CPU-second on one ONNX Runtime thread (process CPU time), medians of {arguments.rounds} interleaved "
        "rounds, ratios taken within each round",
        f"- fidelity sample: {what}, less {CALIBRATION_TEXTS:,} held out for the calibrated row's "
        "--calibration-catalog (the other rows calibrate on generated texts, the export's default); 300 "
        "queries, each searching all the other texts; agreement = share of fp32's top-10 returned",
        "",
        "| model | texts/CPU-s batch 1 | texts/CPU-s batch 32 | x fp32 (1 / 32) | "
        "top-10 agreement: int8 vs int8 items | "
        "int8 queries vs fp32 items | cosine to fp32 mean / min |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_batch in speed.items():
        (one, one_ratio), (many, many_ratio) = by_batch[1], by_batch[32]
        measured = fidelity.get(name)
        quality = (
            f"{measured['variant_vs_variant']:.3f} | {measured['variant_vs_fp32_items']:.3f} | "
            f"{measured['mean_cosine']:.4f} / {measured['min_cosine']:.4f}"
            if measured
            else "1 | 1 | 1 / 1"
        )
        lines.append(f"| {name} | {one:.0f} | {many:.0f} | {one_ratio:.2f} / {many_ratio:.2f} | {quality} |")
    return "\n".join(lines) + "\n"
