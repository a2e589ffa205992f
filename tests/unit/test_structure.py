"""The structure stays readable (issue #34 point 7): no module over 550 lines, at most three long functions."""

from __future__ import annotations

from pathlib import Path

from tests.support.paths import REPO_ROOT

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
