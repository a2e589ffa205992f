"""Atomic directory output: build in a hidden sibling directory, then rename into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_directory(output_dir: Path) -> Iterator[Path]:
    """Yield an empty staging directory beside `output_dir`; on success, it replaces `output_dir`.

    On an exception the staging directory is removed and `output_dir` is left as it was, so a
    reader never sees a half-written directory.
    """
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    staging.chmod(0o755)
    try:
        yield staging
        replace_directory(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_directory(finished: Path, output_dir: Path) -> None:
    """Rename the complete directory `finished` to `output_dir`, retiring any old one.

    Two renames: a reader sees the old directory, briefly none, or the new one, never a mix.
    """
    retired = None
    if output_dir.exists():
        retired = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
        output_dir.rename(retired)
    finished.rename(output_dir)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
