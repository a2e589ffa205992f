"""Showing load-test results: a live progress line, a table per step, JSON, and a plot."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from embedrec.client.loadtest.runner import ProgressCallback

COLUMNS = ("step", "req/s", "texts/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "sent", "answers")


def progress_bar(label: str, duration_s: float, stream: TextIO = sys.stderr) -> ProgressCallback:
    """A callback drawing `[#####.....] 5.0/10.0 s  1234 sent` for one step on `stream`."""

    def draw(elapsed_s: float, sent: int) -> None:
        width = 30
        filled = int(width * min(elapsed_s / duration_s, 1.0)) if duration_s else width
        sent_text = f"  {sent} sent" if sent >= 0 else ""
        stream.write(
            f"\r{label:<18} [{'#' * filled}{'.' * (width - filled)}] {elapsed_s:5.1f}/{duration_s:.1f} s{sent_text}"
        )
        stream.flush()

    return draw


def format_table(summaries: Sequence[dict[str, Any]]) -> str:
    """One row per step: throughput, latency percentiles of successful calls, answers by code."""
    rows = [list(COLUMNS)]
    for summary in summaries:
        latency = summary["latency_ms"]
        answers = " ".join(f"{code}={count}" for code, count in summary["answered"].items())
        if summary["unanswered"]:
            answers += f" UNANSWERED={summary['unanswered']}"
        rows.append(
            [
                summary["label"],
                f"{summary['requests_per_s']:.1f}",
                f"{summary['texts_per_s']:.1f}",
                *(_ms(latency[name]) for name in ("p50", "p90", "p99", "p99.9", "max")),
                str(summary["sent"]),
                answers,
            ]
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
    lines = [
        "  ".join(
            cell.rjust(width) if 0 < index < 8 else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def plot(summaries: Sequence[dict[str, Any]], path: Path, *, title: str) -> None:
    """Latency percentiles against throughput, and against the step's level (concurrency or rate).

    Needs matplotlib (the `loadtest` extra).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    figure, (by_throughput, by_level) = plt.subplots(1, 2, figsize=(12, 4.5))
    levels = [summary["level"] for summary in summaries]
    throughput = [summary["requests_per_s"] for summary in summaries]
    for name, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^-"), ("p99.9", "v:")):
        values = [summary["latency_ms"][name] or float("nan") for summary in summaries]
        by_throughput.plot(throughput, values, style, label=name)
        by_level.plot(levels, values, style, label=name)
    mode = summaries[0]["mode"] if summaries else "closed"
    by_throughput.set(xlabel="throughput (requests/s)", ylabel="latency (ms)", title="latency vs throughput")
    by_level.set(
        xlabel="concurrency" if mode == "closed" else "offered rate (requests/s)",
        ylabel="latency (ms)",
        title=f"latency vs {'concurrency' if mode == 'closed' else 'rate'}",
    )
    if mode == "closed" and len(levels) > 1 and max(levels) / max(min(levels), 1) >= 8:
        by_level.set_xscale("log", base=2)
        by_level.set_xticks(levels)
        by_level.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    for axes in (by_throughput, by_level):
        axes.set_yscale("log")
        axes.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
