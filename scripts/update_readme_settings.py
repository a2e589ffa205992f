"""Rewrite the generated tables of the docs: settings (from embedrec.server.settings, one table per
group) and metrics (from server.observability.metrics), each between its markers, in whichever of README.md and
docs/*.md holds them.

Usage: python scripts/update_readme_settings.py   (tests/unit/docs/test_docs.py fails when they are stale)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embedrec.server.observability.metrics import METRICS
from embedrec.server.settings import settings_groups

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PARTS = ("settings", "metrics")


def targets() -> list[Path]:
    """README.md and every docs/ page (those without markers are left as they are)."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def render_table() -> str:
    """One Markdown table per settings group, titled by it: flag, environment variable, default, meaning."""
    tables = []
    for title, rows in settings_groups():
        lines = [f"**{title}**", "", "| flag | environment | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{flag}` | `{env}` | {default} | {text} |" for flag, env, default, text in rows]
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def render_metrics() -> str:
    """The Markdown table of every Prometheus metric: name, kind, meaning."""
    rows = ["| metric | kind | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | {kind} | {text} |" for name, (kind, text) in METRICS.items()]
    return "\n".join(rows)


def updated_readme(text: str) -> str:
    """`text` with each generated part it holds replaced by its current table."""
    for name, render in (("settings", render_table), ("metrics", render_metrics)):
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        if begin not in text:
            continue
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{render()}\n{end}{tail}"
    return text


def main() -> int:
    """Rewrite every target holding markers in place."""
    for path in targets():
        text = path.read_text(encoding="utf-8")
        if updated_readme(text) != text:
            path.write_text(updated_readme(text), encoding="utf-8")
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
