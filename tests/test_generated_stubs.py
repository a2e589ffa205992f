"""The committed gRPC stubs are exactly what `make proto` generates from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_generated_stubs_are_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/generate_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "protoc wrote nothing"
    for relative in generated:
        committed = REPO_ROOT / relative
        assert committed.is_file(), f"{relative} is not committed; run make proto"
        assert committed.read_bytes() == (tmp_path / relative).read_bytes(), f"{relative} is stale; run make proto"
