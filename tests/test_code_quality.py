"""The code stays ruff- and mypy-clean (the same checks as `make check`), so CI enforces them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_static_checks_pass(command: list[str]) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]


TRANSPORTS = ("grpc", "grpc_health", "grpc_reflection", "uvicorn", "httptools", "starlette")


def test_only_the_edge_imports_grpc_or_the_http_stack() -> None:
    """The rooms' rule: transports live in server/edge/; the rest of the server imports none at
    module level (the Milvus store imports grpc inside a function, for pymilvus's errors)."""
    import ast

    offenders = []
    for path in sorted((REPO_ROOT / "server").rglob("*.py")):
        if path.parent.name == "edge":
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(REPO_ROOT)}: {name}" for name in names if name.split(".")[0] in TRANSPORTS
            ]
    assert offenders == []
