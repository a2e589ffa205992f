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


MAX_MODULE_LINES = 550
MAX_FUNCTION_LINES = 60
LONG_FUNCTIONS_ALLOWED = 3  # issue #34: at most 3 functions over MAX_FUNCTION_LINES outside bench/
PACKAGE_DIRECTORIES = ("server", "client", "export", "embedrec", "scripts")


def _python_files(top: Path) -> list[Path]:
    """The repository's own Python files under `top` (symlinks resolved, each once): no virtual
    environments, hidden or build directories, and no generated protobuf modules."""
    found = {}
    for path in top.rglob("*.py"):
        relative = path.relative_to(REPO_ROOT).parts
        skipped = any(
            part.startswith(".") or part in ("build", "dist") or part.endswith(".egg-info") for part in relative
        )
        if not skipped and "_pb2" not in path.name:
            found.setdefault(path.resolve(), path)
    return sorted(found)


def _name(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def test_no_module_is_over_550_lines() -> None:
    """A module a newcomer can read in one sitting (issue #34 point 7)."""
    lengths = {
        _name(path): len(path.read_text(encoding="utf-8").splitlines())
        for top in PACKAGE_DIRECTORIES
        for path in _python_files(REPO_ROOT / top)
    }
    long = {name for name, lines in lengths.items() if lines > MAX_MODULE_LINES}
    assert sorted(long) == [], {name: lengths[name] for name in long}


def test_at_most_three_functions_are_over_60_lines_outside_bench() -> None:
    """Functions stay short (issue #34 point 7): a long one is split into named helpers, for
    argument parsers one helper per group of flags. Lines are the AST's, signature to last line."""
    import ast

    lengths = {}
    for path in _python_files(REPO_ROOT):
        if _name(path).startswith("bench/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    lengths[f"{_name(path)}:{node.name}"] = lines
    assert len(lengths) <= LONG_FUNCTIONS_ALLOWED, lengths
