"""`embedrec loadtest`: a concurrency sweep or a fixed-rate run against one target."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedrec.client.channel import ChannelConfig
from embedrec.client.cli import add_connection_arguments, connect
from embedrec.client.errors import EmbedrecClientError
from embedrec.client.loadtest.http import server_info
from embedrec.client.loadtest.processes import run_step_in_processes
from embedrec.client.loadtest.report import format_table, plot, progress_bar
from embedrec.client.loadtest.runner import MAX_STEP_SECONDS, StepPlan
from embedrec.client.loadtest.workload import TextLengths, Workload


def _levels(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The loadtest flags."""
    parser = argparse.ArgumentParser(prog="embedrec loadtest", description=__doc__)
    add_connection_arguments(parser)
    loop = parser.add_mutually_exclusive_group()
    loop.add_argument(
        "--concurrency", default=None, help="closed loop: comma-separated concurrency levels (default 1,8,32)"
    )
    loop.add_argument("--rate", default=None, help="open loop: comma-separated request rates per second (Poisson)")
    parser.add_argument("--duration", type=float, default=10.0, help=f"seconds per step (at most {MAX_STEP_SECONDS:g})")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unrecorded warm-up before each step")
    parser.add_argument(
        "--rpc", default="embed", help="embed, recommend, similarity, info, or a mix: embed=3,recommend=1"
    )
    parser.add_argument("--texts-per-request", type=int, default=1, help="texts in each Embed/Similarity/Recommend")
    parser.add_argument("--words", default="20", help="words per generated text: N, or A-B for uniform lengths")
    parser.add_argument("--texts-file", type=Path, help="draw texts from this file (one per line) instead")
    parser.add_argument("-k", type=int, default=10, help="k for Recommend")
    parser.add_argument("--recommend-by", choices=("vector", "text"), default="vector", help="Recommend's profile")
    parser.add_argument(
        "--protocol",
        choices=("grpc", "http"),
        default="grpc",
        help="grpc, or http: --target is the HTTP port (Embed as OpenAI /v1/embeddings, the others as JSON)",
    )
    parser.add_argument("--processes", type=int, default=1, help="client processes (when one is the bottleneck)")
    parser.add_argument(
        "--channels",
        type=int,
        default=1,
        help="connections per process (spreads load over server workers sharing a port)",
    )
    parser.add_argument("--json", dest="json_path", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--plot", type=Path, help="draw latency percentiles to this PNG (needs matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run every step in turn, print a table, and write JSON and a plot when asked."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    try:
        workload = Workload(
            rpc_weights=Workload.parse_mix(arguments.rpc),
            texts_per_request=arguments.texts_per_request,
            lengths=TextLengths.parse(arguments.words),
            texts_file=arguments.texts_file,
            k=arguments.k,
            recommend_by=arguments.recommend_by,
        )
    except ValueError as error:
        parser.error(str(error))
    mode, levels = (
        ("open", _levels(arguments.rate)) if arguments.rate else ("closed", _levels(arguments.concurrency or "1,8,32"))
    )
    try:
        with connect(arguments) as client:
            channel = client.config
            if arguments.protocol == "http":
                described = server_info(arguments.target, channel.bearer_token)
                dim, model = int(described["dim"]), str(described["modelName"])
                workload = dataclasses.replace(workload, protocol="http", model=model)
            else:
                info = client.info()
                dim, model = info.dim, info.model_name
    except (EmbedrecClientError, OSError, ValueError, KeyError) as error:
        print(f"embedrec loadtest: cannot reach {arguments.target}: {error}", file=sys.stderr)
        return 1
    summaries = _run_steps(arguments, workload, mode, levels, dim, channel)
    print(format_table(summaries))
    report = {
        "target": arguments.target,
        "rpc": arguments.rpc,
        "model": model,
        "protocol": arguments.protocol,
        "processes": arguments.processes,
        "steps": summaries,
    }
    if arguments.json_path:
        arguments.json_path.write_text(json.dumps(report, indent=2) + "\n")
    if arguments.plot:
        plot(summaries, arguments.plot, title=f"embedrec {arguments.rpc} against {arguments.target} ({model})")
    return 0


def _run_steps(
    arguments: argparse.Namespace,
    workload: Workload,
    mode: str,
    levels: list[float],
    dim: int,
    channel: ChannelConfig,
) -> list[dict[str, Any]]:
    """Run one step per level (concurrency or rate, by `mode`) in turn; their summaries."""
    summaries = []
    for index, level in enumerate(levels):
        plan = StepPlan(mode, level, arguments.duration, arguments.warmup, arguments.timeout, seed=index)
        progress = None if arguments.quiet else progress_bar(plan.label, plan.duration_s)
        result = run_step_in_processes(
            arguments.target,
            workload,
            plan,
            dim=dim,
            processes=arguments.processes,
            channel=channel,
            progress=progress,
            channels=arguments.channels,
        )
        if not arguments.quiet:
            sys.stderr.write("\n")
        summaries.append(result.summary())
    return summaries
