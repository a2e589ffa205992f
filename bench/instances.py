"""Model instances and the tuner: the raw in-process floor by configuration, then the server at
the default configuration against the one `embedrec tune` chose, in one run, plus the memory each
added instance costs.

Usage: python -m bench.instances [--budget S]   (make bench-instances)
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import MODEL_DIR, ensure_artifacts, run_header, server_process, write_section
from embedrec.tune import load_step, raw_floor, raw_table, sample_texts, table, tune

CONCURRENCIES = (1, 8, 32, 128)
STEP_S = 6.0


def rss_mib(pid: int) -> dict[str, float]:
    """VmRSS and RssAnon of `pid`, MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {
        key: int(match.group(1)) / 1024
        for key in ("VmRSS", "RssAnon")
        if (match := re.search(rf"^{key}:\s+(\d+) kB", text, re.M))
    }


def serve_and_load(flags: list[str], pool: ProcessPoolExecutor) -> tuple[dict[int, dict[str, Any]], dict[str, float]]:
    """Closed-loop Embed at each concurrency against `embedrec serve FLAGS`; and its memory after."""
    rows = {}
    with server_process(["--tuning", "off", "--metrics-port", "-1", "--http-port", "-1", *flags]) as (target, process):
        for concurrency in CONCURRENCIES:
            rows[concurrency] = pool.submit(load_step, target, "closed", concurrency, STEP_S, None).result()
            print(flags, concurrency, f"{rows[concurrency]['requests_per_s']:.1f}/s", flush=True)
        memory = rss_mib(process.pid)
    return rows, memory


def main() -> int:
    """Run the floor, the tuner and both servers; write the BENCHMARKS.md section."""
    # Kept whole: a benchmark script (measure, then write its section); one experiment in one place.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0, help="the tuner's budget in seconds")
    arguments = parser.parse_args()
    ensure_artifacts()
    raw, provider = raw_floor(MODEL_DIR, "cpu", sample_texts(None), 4.0, lambda line: print(line, flush=True))
    started = time.monotonic()
    result = tune(MODEL_DIR, budget_s=arguments.budget, provider="cpu")
    tune_s = time.monotonic() - started
    tuned = result.tuning.settings
    tuned_flags = [f"--{name.replace('_', '-')}={value}" for name, value in tuned.items()]
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        default_rows, default_memory = serve_and_load([], pool)
        tuned_rows, tuned_memory = serve_and_load(tuned_flags, pool)
        _, one_memory = serve_and_load(["--instances", "1", "--intra-op-threads", "1"], pool)
        _, two_memory = serve_and_load(["--instances", "2", "--intra-op-threads", "1"], pool)
        _, shared_memory = serve_and_load(["--instances", "2", "--sessions", "1"], pool)
    skipped = f"; not measured within the budget: {', '.join(result.skipped)}" if result.skipped else ""
    best_raw = max(row["texts_per_s"] for row in raw if row["batch"] == 32)
    lines = [
        "## Model instances and `embedrec tune`",
        "",
        run_header("make bench-instances  (python -m bench.instances)"),
        f"- bundled MiniLM-L6 fp32 on {provider}, generated ~17-word texts; Embed with one text per call; "
        f"server steps of {STEP_S:g} s from the project's load tester in its own process, on the same 2 cores",
        "",
        "In-process floor (tokenise + infer + pool, one feeding thread per instance, texts/s):",
        "",
        *raw_table(raw),
        "",
        f"`embedrec tune --budget {arguments.budget:g}` took {tune_s:.0f} s and measured:",
        "",
        *table(result.rows, result.winner),
        "",
        f"Chosen: `{' '.join(tuned_flags)}`" + skipped + (f". {result.confirmation}" if result.confirmation else ""),
        "",
        "Server, default configuration (1 instance, ONNX Runtime's threads, batch 32) vs the tuned one:",
        "",
        "| concurrency | default req/s | tuned req/s | tuned / default | default p50 ms | tuned p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for concurrency in CONCURRENCIES:
        old, new = default_rows[concurrency], tuned_rows[concurrency]
        lines.append(
            f"| {concurrency} | {old['requests_per_s']:.1f} | {new['requests_per_s']:.1f} | "
            f"{new['requests_per_s'] / old['requests_per_s']:.2f} | {old['latency_ms']['p50']:.2f} | "
            f"{new['latency_ms']['p50']:.2f} |"
        )
    tuned_c8 = max(tuned_rows[c]["requests_per_s"] for c in CONCURRENCIES if c >= 8)
    lines += [
        "",
        f"Tuned server at c >= 8, best / best raw floor at batch 32 ({best_raw:.0f} texts/s): "
        f"{tuned_c8 / best_raw:.2f}.",
        "",
        "Memory after the load (VmRSS / RssAnon MiB): "
        f"default {default_memory['VmRSS']:.0f} / {default_memory['RssAnon']:.0f}, "
        f"tuned {tuned_memory['VmRSS']:.0f} / {tuned_memory['RssAnon']:.0f}; one instance x 1 thread "
        f"{one_memory['VmRSS']:.0f} / {one_memory['RssAnon']:.0f}, two instances x 1 thread "
        f"{two_memory['VmRSS']:.0f} / {two_memory['RssAnon']:.0f}: "
        f"{two_memory['RssAnon'] - one_memory['RssAnon']:.0f} MiB per added instance with a session of its own "
        "(each session holds its own copy of the optimised weights); two instances sharing one session "
        f"{shared_memory['VmRSS']:.0f} / {shared_memory['RssAnon']:.0f}.",
    ]
    body = "\n".join(lines) + "\n"
    write_section("instances", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
