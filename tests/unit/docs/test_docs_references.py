"""Every name and path the documentation gives resolves: the dotted `embedrec.*`, `server.*`,
`client.*` and `export.*` names and the repository paths (`server/catalog/mmap/scan.py`, `bench/`)
written in README.md, docs/*.md, BENCHMARKS.md and the comments and docstrings of the Python code.

A dotted name resolves when its longest module prefix is a module of this checkout (a `server.`
name is `embedrec.server.`'s) and the rest are attributes: found statically (a definition,
assignment or import in the module's source, a member of a class there), else on the imported
module (generated protobuf classes); a name under `embedrec.v1` may also be a message, enum or
service of the proto. A path resolves when it exists (a glob when it has `*`). Code is not read:
Markdown code fences and indented example code in docstrings (their variables, such as an openai
`client`, are not modules); nor are the names in NOT_MODULES.
"""

from __future__ import annotations

import ast
import importlib
import io
import os
import re
import tokenize
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from tests.support.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "embedrec"
PROTO = REPO_ROOT / "protos/embedrec/v1/embedrec.proto"
SKIPPED_DIRS = {
    ".git",
    ".venv",
    "node_modules",
    "__pycache__",
    "build",
    "dist",
    "models",  # exported models and built items: run-time outputs (.gitignore), absent on a fresh clone
    "items",
    "embedrec.egg-info",
    ".mypy_cache",
    ".ruff_cache",
}
TOP_DIRS = sorted(
    path.name for path in REPO_ROOT.iterdir() if path.is_dir() and path.name not in SKIPPED_DIRS and path.name[0] != "."
)
# A dotted name not inside a URL, a host name or a longer dotted name.
DOTTED = re.compile(r"(?<![\w./@:-])(?:embedrec|server|client|export)(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(rf"(?<![\w./@:-])(?:\.\./)*((?:{'|'.join(map(re.escape, TOP_DIRS))})/[\w./*-]*)")
# Dotted names that are not Python: OpenTelemetry span and attribute names (server/observability/
# tracing.py) and the gRPC health service of the item store.
NOT_MODULES = re.compile(
    r"embedrec\.(admission|tokenize|tokens|prepare|queue_ms|pooling|request_id|items|batch\.\w+"
    r"|(inference|search|rerank)\.(queue|batch))"
)
# server.pem, client.key and the like are files a page tells the reader to make, not modules.
FILE_SUFFIXES = {"pem", "key", "crt", "csr", "py", "md", "json", "jsonl", "npy", "txt", "toml", "yaml", "csv", "gz"}


def markdown_pages() -> list[Path]:
    return [REPO_ROOT / "README.md", REPO_ROOT / "BENCHMARKS.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def python_files() -> Iterator[Path]:
    for directory, subdirectories, files in os.walk(REPO_ROOT):  # symbolic links not followed
        subdirectories[:] = sorted(name for name in subdirectories if name not in SKIPPED_DIRS)
        if Path(directory) == PACKAGE / "v1":
            continue  # generated stubs
        yield from (Path(directory) / name for name in sorted(files) if name.endswith(".py"))


def markdown_prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line outside code fences."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield number, line


def python_prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every comment and docstring line."""
    source = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            docstring = (
                first.value.value if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) else None
            )
            if isinstance(docstring, str):
                text_indent = 0 if isinstance(node, ast.Module) else node.col_offset + 4
                for offset, line in enumerate(docstring.splitlines()):
                    if not (offset and line.startswith(" " * (text_indent + 4))):  # example code
                        yield first.lineno + offset, line


def prose() -> Iterator[tuple[str, int, str]]:
    for page in markdown_pages():
        for number, line in markdown_prose(page):
            yield page.relative_to(REPO_ROOT).as_posix(), number, line
    for path in python_files():
        for number, line in python_prose(path):
            yield path.relative_to(REPO_ROOT).as_posix(), number, line


def module_file(module: str) -> Path | None:
    """The source of `module` (an `embedrec.` name) in this checkout, if it is one."""
    base = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def names_defined(path: Path) -> dict[str, set[str]]:
    """Top-level names of a module's source ('' key), and each top-level class's members."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, set[str]] = {"": set()}

    def targets(node: ast.AST) -> set[str]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return {node.name}
        if isinstance(node, ast.Assign):
            return {name.id for target in node.targets for name in ast.walk(target) if isinstance(name, ast.Name)}
        if isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
            return {node.target.id}
        if isinstance(node, ast.Import | ast.ImportFrom):
            return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        return set()

    def walk(body: list[ast.stmt]) -> Iterator[ast.stmt]:  # into if/try blocks (TYPE_CHECKING, fallbacks)
        for node in body:
            yield node
            for field in ("body", "orelse", "finalbody", "handlers"):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    yield from walk([child for child in getattr(node, field, []) if isinstance(child, ast.stmt)])
            if isinstance(node, ast.Try):
                for handler in node.handlers:
                    yield from walk(handler.body)

    for node in walk(tree.body):
        found[""] |= targets(node)
        if isinstance(node, ast.ClassDef):
            members = found.setdefault(node.name, set())
            for member in walk(node.body):
                members |= targets(member)
                if isinstance(member, ast.FunctionDef) and member.name == "__init__":
                    for statement in ast.walk(member):
                        if isinstance(statement, ast.Attribute) and isinstance(statement.value, ast.Name):
                            members.add(statement.attr)  # self.x = ...
    return found


@cache
def proto_names() -> set[str]:
    return set(re.findall(r"^\s*(?:message|enum|service)\s+(\w+)", PROTO.read_text(encoding="utf-8"), re.M))


def dotted_resolves(name: str) -> bool:
    parts = name.split(".")
    if parts[0] != "embedrec":
        parts = ["embedrec", *parts]
    if parts[:2] == ["embedrec", "v1"] and len(parts) >= 3 and parts[2] in proto_names():
        return True
    for split in range(len(parts), 0, -1):
        module = ".".join(parts[:split])
        source = module_file(module)
        if source is None:
            continue
        rest = parts[split:]
        if not rest:
            return True
        defined = names_defined(source)
        if rest[0] in defined[""] and (len(rest) == 1 or (len(rest) == 2 and rest[1] in defined.get(rest[0], ()))):
            return True
        try:  # generated or re-exported names: ask the module itself
            value: object = importlib.import_module(module)
            for attribute in rest:
                value = getattr(value, attribute)
        except (ImportError, AttributeError):
            return False
        return True
    return False


LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")


def broken_links() -> list[str]:
    """Markdown links to files of the repository (relative to their page) that do not exist."""
    failures = []
    for page in markdown_pages():
        for number, line in markdown_prose(page):
            for match in LINK.finditer(line):
                target = match.group(1)
                if not re.match(r"[a-z]+:", target) and not (page.parent / target).exists():
                    failures.append(f"{page.relative_to(REPO_ROOT).as_posix()}:{number}: link to `{target}` is broken")
    return failures


def path_resolves(text: str) -> bool:
    text = text.rstrip(".,:;")
    if "*" in text:
        return any(REPO_ROOT.glob(text))
    return (REPO_ROOT / text).exists()


def unresolved() -> list[str]:
    failures: list[str] = []
    for where, number, line in prose():
        for match in DOTTED.finditer(line):
            name = match.group(0)
            if name.rsplit(".", 1)[-1] in FILE_SUFFIXES or NOT_MODULES.fullmatch(name):
                continue
            if not dotted_resolves(name):
                failures.append(f"{where}:{number}: `{name}` is not a module or attribute")
        for match in PATH.finditer(line):
            if not path_resolves(match.group(1)):
                failures.append(f"{where}:{number}: `{match.group(1)}` is not a path of the repository")
    return failures + broken_links()


def test_every_name_and_path_the_docs_give_resolves() -> None:
    failures = unresolved()
    assert not failures, f"{len(failures)} unresolved references:\n" + "\n".join(failures)


def test_the_checker_catches_stale_references() -> None:
    assert not dotted_resolves("server.topk.top_k")
    assert not dotted_resolves("server.servicer")
    assert not dotted_resolves("server.tokenization")
    assert dotted_resolves("server.inference.tokenization")
    assert dotted_resolves("embedrec.client.EmbedrecClient")
    assert dotted_resolves("embedrec.v1.embedrec_pb2.RecommendRequest")
    assert dotted_resolves("embedrec.v1.RecommendRequest")
    assert not path_resolves("server/no_such_module.py")
    assert path_resolves("bench/embed.py")
