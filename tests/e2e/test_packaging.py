"""One installable name: the wheel holds only the `embedrec` package (server, client and export
inside it), and the README's imports are the installed names."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.paths import REPO_ROOT


def test_the_wheel_installs_only_the_embedrec_package(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (wheel,) = tmp_path.glob("embedrec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"embedrec", next(name for name in top_level if name.endswith(".dist-info"))}
    for module in (
        "embedrec/server/app.py",
        "embedrec/client/sync.py",
        "embedrec/client/loadtest/runner.py",
        "embedrec/export/items.py",
        "embedrec/v1/embedrec_pb2.py",
        "embedrec/cli.py",
    ):
        assert module in names


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
