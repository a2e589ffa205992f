"""One installable name, read from the sources: no code imports `server`, `client` or `export` by their
bare folder names, and the README's imports are the installed names. (The wheel itself is built
in tests/e2e/test_packaging.py.)"""

from __future__ import annotations

from tests.support.paths import REPO_ROOT


def test_no_code_imports_the_folders_by_their_bare_names() -> None:
    bare = ("from server", "import server", "from client", "import client", "from export", "import export")
    offenders = []
    for path in REPO_ROOT.glob("**/*.py"):
        if any(part in {".venv", "build", ".git"} for part in path.relative_to(REPO_ROOT).parts):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip().startswith(bare) and not line.strip().startswith(("from server_", "from client_")):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_readme_imports_the_installed_names() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "from embedrec.client import" in readme
    assert "from client import" not in readme
