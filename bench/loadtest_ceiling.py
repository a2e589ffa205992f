"""The load-test tool's ceiling: how many cheap calls (Info) it drives, against the server's Embed
throughput, in the same run. The tool must never be the bottleneck of an Embed test.

Usage: python -m bench.loadtest_ceiling   (make bench-loadtest)
"""

from __future__ import annotations

import sys

from bench.common import ensure_artifacts, run_header, server_process, write_section
from embedrec.client.loadtest.processes import run_step_in_processes
from embedrec.client.loadtest.report import format_table
from embedrec.client.loadtest.runner import StepPlan
from embedrec.client.loadtest.workload import TextLengths, Workload

DURATION_S = 10.0
WARMUP_S = 2.0


def main() -> int:
    """Measure Embed (concurrency 32) and Info (concurrency 64, 1 and 2 processes); write the ratio."""
    ensure_artifacts()
    embed = Workload(rpc_weights={"embed": 1.0}, lengths=TextLengths(16, 16))
    info = Workload(rpc_weights={"info": 1.0})
    with server_process() as (target, _):
        runs = [
            (
                "Embed, 1 text of ~20 tokens",
                run_step_in_processes(
                    target, embed, StepPlan("closed", 32, DURATION_S, WARMUP_S), dim=384, processes=1
                ),
            ),
            (
                "Info, 1 process",
                run_step_in_processes(target, info, StepPlan("closed", 64, DURATION_S, WARMUP_S), dim=384, processes=1),
            ),
            (
                "Info, 2 processes",
                run_step_in_processes(target, info, StepPlan("closed", 64, DURATION_S, WARMUP_S), dim=384, processes=2),
            ),
        ]
    summaries = []
    for name, result in runs:
        summary = result.summary()
        summary["label"] = f"{name}: {summary['label']}"
        summaries.append(summary)
    embed_rate = summaries[0]["requests_per_s"]
    best_info = max(summary["requests_per_s"] for summary in summaries[1:])
    body = (
        "## Load-test tool ceiling\n\n"
        + run_header("make bench-loadtest  (python -m bench.loadtest_ceiling)")
        + f"- server: `embedrec serve` defaults, bundled MiniLM-L6 fp32 on CPU, in a separate process on the same "
        f"2 cores as the load generator; {DURATION_S:g} s per step after {WARMUP_S:g} s warm-up\n\n"
        + "```\n"
        + format_table(summaries)
        + "\n```\n\n"
        + f"**Ceiling ratio: the tool drives {best_info:.0f} Info calls/s = {best_info / embed_rate:.1f} x the "
        f"server's Embed throughput ({embed_rate:.0f} requests/s)** (target >= 5 x). Info is bounded by the "
        "Python gRPC server sharing the two cores, so the tool's own ceiling is at least this.\n"
    )
    write_section("loadtest-ceiling", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
