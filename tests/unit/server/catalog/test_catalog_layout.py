"""The catalog's layout: a store-neutral core (server/catalog/*.py) and one package per store
(catalog/mmap/, catalog/milvus/). The core and the edge know no store; only the Milvus package
speaks pymilvus."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import REPO_ROOT

CATALOG = REPO_ROOT / "server" / "catalog"
STORES = ("embedrec.server.catalog.mmap", "embedrec.server.catalog.milvus")


def imported(path: Path) -> list[str]:
    """Every module `path` imports, at module level or inside a function."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def offenders(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(REPO_ROOT)}: {name}"
        for path in paths
        for name in imported(path)
        if any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden)
    ]


def test_the_catalog_core_imports_no_store() -> None:
    core = sorted(CATALOG.glob("*.py"))
    assert core and offenders(core, STORES) == []


def test_the_stores_do_not_import_each_other() -> None:
    mmap = sorted((CATALOG / "mmap").glob("*.py"))
    milvus = sorted((CATALOG / "milvus").glob("*.py"))
    assert offenders(mmap, (STORES[1],)) == []
    assert offenders(milvus, (STORES[0],)) == []


def test_only_the_milvus_package_imports_pymilvus() -> None:
    sources = [
        path
        for folder in ("server", "export", "client")
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
        if (CATALOG / "milvus") not in path.parents
    ]
    sources += sorted((REPO_ROOT / "embedrec").glob("*.py"))
    assert offenders(sources, ("pymilvus",)) == []


def test_the_edge_imports_no_store_module() -> None:
    edge = sorted((REPO_ROOT / "server" / "edge").glob("*.py"))
    assert edge and offenders(edge, STORES) == []


def test_no_catalog_module_exceeds_550_lines() -> None:
    long = {
        str(path.relative_to(REPO_ROOT)): lines
        for path in sorted(CATALOG.rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 550
    }
    assert long == {}
