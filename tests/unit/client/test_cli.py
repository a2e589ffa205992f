"""The `embedrec` command without a server: --help lists every subcommand.
(Against a real server: tests/e2e/test_cli.py.)"""

from __future__ import annotations

import subprocess
import sys

from tests.support.paths import REPO_ROOT


def embedrec(*arguments: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedrec.cli", *arguments],
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_every_subcommand() -> None:
    completed = embedrec("--help")
    assert completed.returncode == 0
    names = ("serve", "export-model", "export-items", "embed", "similarity", "recommend", "info", "health")
    for name in (*names, "reload-items"):
        assert name in completed.stdout
    assert "EMBEDREC_TARGET" in completed.stdout and "--metrics-port" in completed.stdout  # where things are
