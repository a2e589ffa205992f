"""Layout rules checked by reading the code: transports stay in server/edge/, and the unit layer
(tests/unit/) imports neither the e2e layer nor the model stack."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.support.paths import REPO_ROOT
from tests.unit.conftest import HEAVY_MODULES

UNIT = REPO_ROOT / "tests/unit"
TRANSPORTS = ("grpc", "grpc_health", "grpc_reflection", "uvicorn", "httptools", "starlette")


def test_only_the_edge_imports_grpc_or_the_http_stack() -> None:
    """The rooms' rule: transports live in server/edge/; the rest of the server imports none at
    module level (the Milvus store imports grpc inside a function, for pymilvus's errors)."""
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


def test_the_unit_layer_imports_nothing_of_the_e2e_layer() -> None:
    offenders = []
    for path in sorted(UNIT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.relative_to(REPO_ROOT)}: {name}" for name in names if name.startswith("tests.e2e")]
    assert offenders == []


def test_importing_every_unit_module_imports_no_model_stack() -> None:
    """Each unit module and conftest, imported in a fresh interpreter, leaves torch, transformers
    and optimum unimported (holds whichever layers a run collects)."""
    modules = [
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        for path in sorted(UNIT.rglob("*.py"))
        if path.name != "__init__.py"
    ]
    script = "; ".join(
        [
            "import importlib, sys",
            *[f"importlib.import_module({module!r})" for module in modules],
            f"print([name for name in {HEAVY_MODULES!r} if name in sys.modules])",
        ]
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert completed.stdout.strip() == "[]"
