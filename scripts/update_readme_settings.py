"""Rewrite the settings table in README.md (between the settings markers) from server.settings.

Usage: python scripts/update_readme_settings.py   (tests/test_docs.py fails when it is stale)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.settings import settings_table

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def render_table() -> str:
    """The Markdown table of every setting: flag, environment variable, default, meaning."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{flag}` | `{env}` | {default} | {text} |" for flag, env, default, text in settings_table()]
    return "\n".join(rows)


def updated_readme(text: str) -> str:
    """`text` with the part between the markers replaced by the current table."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render_table()}\n{END}{tail}"


def main() -> int:
    """Rewrite README.md in place."""
    README.write_text(updated_readme(README.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
