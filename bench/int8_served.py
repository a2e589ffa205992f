"""int8 through the server: fp32 and the default int8 recipe of the bundled MiniLM served side
by side (`embedrec serve`, the demo items built at fp32: asymmetric serving), HTTP
`/v1/embeddings` from wrk, one real text per request, at c = 1/8/32/128.

Both servers run for the whole measurement and take turns per load step (the order alternating
each round), so each ratio pairs two steps taken a few seconds apart on the same busy machine;
medians over rounds. The server's CPU-µs per call is reported beside the rates.

Usage: python -m bench.int8_served [--rounds N]   (also the last part of `make bench-int8`)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bench.common import ITEMS_DIR, MODEL_DIR, ensure_artifacts, run_header, server_process, write_section
from bench.embed import CONCURRENCY, Step, http_step
from embedrec.ports import free_port

SERVED = ("fp32", "int8")


def served_steps(model_dirs: dict[str, Path], texts: list[str], rounds: int) -> dict[str, dict[int, list[Step]]]:
    """Per served model ("fp32", "int8") and concurrency: the load steps of every round."""
    from embedrec.server.manifest import read_model_manifest

    steps: dict[str, dict[int, list[Step]]] = {name: {c: [] for c in CONCURRENCY} for name in model_dirs}
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
        lines = Path(directory) / "texts.txt"
        lines.write_text("".join(json.dumps(text) + "\n" for text in texts[:2000]), encoding="utf-8")
        servers = {}
        for name, model_dir in model_dirs.items():
            http_port = free_port()
            flags = ["--http-port", str(http_port), "--metrics-port", "0"]
            _, process = stack.enter_context(server_process(flags, model_dir=model_dir, items_dir=ITEMS_DIR))
            model = read_model_manifest(model_dir).model_name.rsplit("/", 1)[-1]
            servers[name] = (f"http://127.0.0.1:{http_port}", model, process.pid)
        for round_index in range(rounds):
            for concurrency in CONCURRENCY:
                order = list(servers) if (round_index + concurrency) % 2 == 0 else list(reversed(servers))
                for name in order:
                    base_url, model, pid = servers[name]
                    step = http_step(base_url, lines, model, concurrency, pid)
                    steps[name][concurrency].append(step)
                    print(f"served {name} c={concurrency:<4} {step.requests_per_s:7.1f}/s", flush=True)
    return steps


def section(steps: dict[str, dict[int, list[Step]]], rounds: int, command: str) -> str:
    """The BENCHMARKS.md section: medians per model, and the int8/fp32 ratio paired per round."""
    header = " | ".join(f"c={c}" for c in CONCURRENCY)
    lines = [
        "## int8 through the server (bundled MiniLM-L6, CPU)",
        "",
        run_header(command),
        "- fp32 and the default int8 recipe served side by side, HTTP `/v1/embeddings` from wrk, one real "
        f"text per request, demo items built at fp32; the two take turns per step, {rounds} rounds; "
        "medians; the ratio paired within a round",
        "",
        f"| served model | {header} |",
        "|---" * (len(CONCURRENCY) + 1) + "|",
    ]
    for name in SERVED:
        rates = " | ".join(f"{statistics.median(s.requests_per_s for s in steps[name][c]):.0f}" for c in CONCURRENCY)
        lines.append(f"| {name}, requests/s | {rates} |")
    for name in SERVED:
        cpu = " | ".join(f"{statistics.median(s.cpu_us_per_call for s in steps[name][c]):.0f}" for c in CONCURRENCY)
        lines.append(f"| {name}, server CPU-µs per call | {cpu} |")
    ratios = []
    for c in CONCURRENCY:
        paired = zip(steps["int8"][c], steps["fp32"][c], strict=True)
        ratios.append(statistics.median(int8.requests_per_s / fp32.requests_per_s for int8, fp32 in paired))
    lines.append("| int8 / fp32 requests/s | " + " | ".join(f"{ratio:.2f}x" for ratio in ratios) + " |")
    return "\n".join(lines) + "\n"


def measure(int8_dir: Path, fp32_dir: Path, texts: list[str], rounds: int, command: str) -> None:
    """Serve both, measure, write the section."""
    ensure_artifacts()
    steps = served_steps({"fp32": fp32_dir, "int8": int8_dir}, texts, rounds)
    write_section("int8-served", section(steps, rounds, command))


def main(argv: list[str] | None = None) -> int:
    """Export the default int8 recipe, serve it beside fp32, write the BENCHMARKS.md section."""
    from bench.int8 import default_texts
    from embedrec.export.onnx_model import export_model

    parser = argparse.ArgumentParser(prog="bench.int8_served")
    parser.add_argument("--rounds", type=int, default=4)
    arguments = parser.parse_args(argv)
    texts, _ = default_texts()
    with tempfile.TemporaryDirectory(prefix="embedrec-int8-served-") as temporary:
        int8_dir = Path(temporary) / "int8"
        export_model(output_dir=int8_dir, quantize="int8", min_agreement=0.0)
        measure(
            int8_dir, MODEL_DIR, texts, arguments.rounds, f"python -m bench.int8_served --rounds {arguments.rounds}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
