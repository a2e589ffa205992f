"""Generate the synchronous client from the asyncio one (the only way client/sync.py is written;
never edit it). Each method is defined once, in client/aio.py; this drops `async`/`await` and
renames what differs, as httpcore's unasync does.

Usage: python scripts/generate_sync_client.py [--check]   (make clients)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE = REPO_ROOT / "client" / "aio.py"
TARGET = REPO_ROOT / "client" / "sync.py"
HEADER = (
    "# Generated from client/aio.py by scripts/generate_sync_client.py (make clients): edit aio.py, not this file.\n"
)
# Exact replacements, in order, before the general async -> sync rewrite.
REPLACEMENTS = (
    (
        '"""The asyncio client: typed methods, numpy out, a deadline on every call; awaitable.\n\n'
        "The source of both clients: `client/sync.py` is generated from this file (`make clients`).\n"
        '"""',
        '"""The synchronous client: typed methods, numpy out, a deadline on every call."""',
    ),
    (
        '"""An asyncio connection to an embedrec server. Use `async with`, or await `close()`; create it\n'
        '    inside the event loop that will use it."""',
        '"""A connection to an embedrec server. Use as a context manager, or call `close()`."""',
    ),
    ("from collections.abc import Awaitable, Callable,", "from collections.abc import Callable,"),
    ("Callable[..., Awaitable[Reply]]", "Callable[..., Reply]"),
    ("class AsyncEmbedrecClient:", "class EmbedrecClient:"),
    ("-> AsyncEmbedrecClient:", "-> EmbedrecClient:"),
    ("async def __aenter__(", "def __enter__("),
    ("async def __aexit__(", "def __exit__("),
    ("asyncio=True", "asyncio=False"),
)


def render() -> str:
    """client/sync.py as generated from client/aio.py, formatted by ruff."""
    text = SOURCE.read_text(encoding="utf-8")
    for old, new in REPLACEMENTS:
        if old not in text:
            raise RuntimeError(f"client/aio.py no longer contains {old[:60]!r}: update the generator")
        text = text.replace(old, new)
    text = re.sub(r"\basync def ", "def ", text)
    text = re.sub(r"\bawait ", "", text)
    if re.search(r"\basync\b|\bawait\b|Awaitable|asyncio=True", text):
        raise RuntimeError("an async construct survived the rewrite: update the generator")
    text = HEADER + text
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    return formatted.stdout


def main(argv: list[str] | None = None) -> int:
    """Write client/sync.py, or with --check exit 1 when it is stale."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check that client/sync.py is current")
    arguments = parser.parse_args(argv)
    rendered = render()
    if arguments.check:
        current = TARGET.read_text(encoding="utf-8") == rendered
        print("client/sync.py is current" if current else "client/sync.py is stale; run make clients")
        return 0 if current else 1
    TARGET.write_text(rendered, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
