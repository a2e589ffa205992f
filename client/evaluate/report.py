"""What people read: a progress line while a target runs, tables of each metric per target, the
paired differences against the reference, what the data dropped; and metric@k curves (--plot).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from embedrec.client.evaluate.compare import Difference
from embedrec.client.evaluate.metrics import MEASURES
from embedrec.client.evaluate.results import EvaluationResult

BAR_WIDTH = 30


class ProgressBar:
    """A one-line progress bar per stage on `stream` (a terminal's stderr), redrawn in place."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Show `done` of `total` users for `stage`; a new stage starts a new line."""
        if stage != self.stage and self.stage:
            self.stream.write("\n")
        self.stage = stage
        filled = BAR_WIDTH * done // total if total else BAR_WIDTH
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r{stage[:28]:<28} [{bar}] {done}/{total} users")
        self.stream.flush()

    def close(self) -> None:
        """End the last line."""
        if self.stage:
            self.stream.write("\n")
            self.stream.flush()


def format_report(result: EvaluationResult) -> str:
    """The whole report as text: data, one table per metric, catalog figures, differences."""
    parts = [_data_lines(result), *(_metric_table(result, name) for name in MEASURES)]
    parts.append(_catalog_table(result))
    if result.differences:
        parts.append(_differences_table(result))
    parts += [f"note: {note}" for note in result.notes]
    return "\n\n".join(part for part in parts if part)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(
            str(cell).rjust(width) if index else str(cell).ljust(width)
            for index, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in [header, ["-" * width for width in widths], *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _data_lines(result: EvaluationResult) -> str:
    data = result.data
    skipped = ", ".join(
        f"{data[key]} {label}"
        for key, label in [
            ("users_too_few_interactions", "with too few interactions"),
            ("users_nothing_to_hold_out", "with nothing liked to hold out"),
            ("users_no_history", "with no history before it"),
            ("users_no_liked_history", "with only dislikes in their history"),
            ("users_sampled_out", "sampled out (--max-users)"),
        ]
        if data.get(key)
    )
    lines = [
        f"split: {result.split}; {data['users_evaluated']} of {data['users']} users evaluated"
        + (f" (skipped: {skipped})" if skipped else ""),
        f"rows: {data['rows']} read, {data['malformed_rows']} malformed, {data['unknown_item_rows']} naming "
        f"{data['unknown_items']} items the catalog lacks, {data['repeated_rows']} repeats of an item",
        f"catalog: {result.catalog_size} items",
    ]
    lines += [f"  malformed: {example}" for example in data.get("malformed_examples", [])]
    if data.get("unknown_item_examples"):
        lines.append(f"  unknown items, e.g.: {', '.join(data['unknown_item_examples'])}")
    return "\n".join(lines + [f"  {note}" for note in data.get("notes", [])])


def _metric_table(result: EvaluationResult, name: str) -> str:
    header = [name, *(f"@{k}" for k in result.ks)]
    rows = [
        [target.name, *(f"{target.metrics[f'{name}@{k}']:.4f}" for k in result.ks)]
        for target in result.targets
        if target.metrics
    ]
    return _table(header, rows)


def _catalog_table(result: EvaluationResult) -> str:
    k = max(result.ks)
    header = ["target", f"coverage@{k}", "novelty (mean pop. rank)", "p50 ms", "p99 ms", "users/s", "note"]
    rows = []
    for target in result.targets:
        serving: dict[str, Any] = target.serving
        rows.append(
            [
                target.name,
                f"{target.coverage:.4f}" if target.metrics else "",
                f"{target.novelty:.1f}" if target.novelty is not None else "",
                str(serving.get("p50_ms", "")),
                str(serving.get("p99_ms", "")),
                str(serving.get("users_per_s", "")),
                target.note[:60],
            ]
        )
    return _table(header, rows)


def _differences_table(result: EvaluationResult) -> str:
    first = result.differences[0]
    found = {(d.target, d.metric): d for d in result.differences}
    targets = list(dict.fromkeys(d.target for d in result.differences))
    header = ["target", "metric", *(f"@{k}" for k in result.ks)]
    rows = []
    for target in targets:
        for name in MEASURES:
            cells = [found.get((target, f"{name}@{k}")) for k in result.ks]
            rows.append([target, name, *(_difference_cell(cell) for cell in cells)])
    title = (
        f"paired bootstrap over {first.users} users, each target minus {first.reference}: mean "
        f"[{first.confidence:.0%} interval], * significant (the interval excludes 0)"
    )
    return title + "\n" + _table(header, rows)


def _difference_cell(difference: Difference | None) -> str:
    if difference is None:
        return ""
    star = "*" if difference.significant else " "
    return f"{difference.mean:+.4f} [{difference.low:+.3f}, {difference.high:+.3f}]{star}"


def plot(result: EvaluationResult, path: Path) -> None:
    """Draw each metric against k, one line per target, into the PNG at `path`. Needs matplotlib
    (the `loadtest` or `evaluate` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(MEASURES), figsize=(4 * len(MEASURES), 3.6), squeeze=False)
    for axis, name in zip(axes[0], MEASURES, strict=True):
        for target in result.targets:
            if target.metrics:
                axis.plot(result.ks, [target.metrics[f"{name}@{k}"] for k in result.ks], marker="o", label=target.name)
        axis.set_title(f"{name}@k")
        axis.set_xlabel("k")
        axis.set_xscale("log")
        axis.set_xticks(result.ks, [str(k) for k in result.ks])
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
