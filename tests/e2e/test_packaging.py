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
