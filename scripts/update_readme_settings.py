"""Rewrite the generated tables of docs/settings.md: settings (from embedrec.server.settings) and metrics (from
server.observability.metrics), each between its markers.

Usage: python scripts/update_readme_settings.py   (tests/test_docs.py fails when they are stale)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embedrec.server.observability.metrics import METRICS
from embedrec.server.settings import settings_table

README = Path(__file__).resolve().parent.parent / "docs" / "settings.md"  # the page holding the tables
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def render_table() -> str:
    """The Markdown table of every setting: flag, environment variable, default, meaning."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{flag}` | `{env}` | {default} | {text} |" for flag, env, default, text in settings_table()]
    return "\n".join(rows)


def render_metrics() -> str:
    """The Markdown table of every Prometheus metric: name, kind, meaning."""
    rows = ["| metric | kind | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | {kind} | {text} |" for name, (kind, text) in METRICS.items()]
    return "\n".join(rows)


def updated_readme(text: str) -> str:
    """`text` with each generated part replaced by its current table."""
    for name, table in (("settings", render_table()), ("metrics", render_metrics())):
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{table}\n{end}{tail}"
    return text


def main() -> int:
    """Rewrite docs/settings.md in place."""
    README.write_text(updated_readme(README.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
