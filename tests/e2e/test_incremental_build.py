"""Incremental item builds: only new or changed rows are embedded, unchanged ones are copied,
removed ids are dropped, and the result is byte-identical to a full build of the same catalog,
also after a kill mid-build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embedrec.export.items import build_items
from tests.e2e.tiny_models import CountingEncoder
from tests.support.paths import REPO_ROOT

WORDS = ["air", "conditioner", "quiet", "red", "shoes", "coffee", "tea", "novel", "phone", "screen", "laptop", "cat"]


def catalog_rows(count: int, *, seed: int = 0, prefix: str = "item") -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "id": f"{prefix}-{row}",
            "text": " ".join(rng.choice(WORDS, size=int(rng.integers(2, 12)))),
            "category": str(rng.choice(["a", "b", "c"])),
            "price": float(rng.integers(1, 100)),
        }
        for row in range(count)
    ]


def write_catalog(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def changed_catalog(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Of 400 rows: 4 texts changed (1%), 2 removed (0.5%), 2 added (0.5%), one moved."""
    changed = [dict(row) for row in rows]
    for index in (3, 50, 120, 399):
        changed[index]["text"] = f"{changed[index]['text']} renewed"
    changed[10]["category"] = "z"  # a field change: copied row, new field value
    del changed[200], changed[7]
    changed.insert(0, changed.pop(100))  # reordered: its row is copied from elsewhere
    changed += catalog_rows(2, seed=9, prefix="new")
    return changed


def files_of(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != "items_manifest.json"
    }


def manifest_without_catalog_path(directory: Path) -> dict[str, object]:
    manifest = json.loads((directory / "items_manifest.json").read_text())
    manifest.pop("catalog")
    return manifest


@pytest.fixture(scope="module")
def builds(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("incremental")
    original = catalog_rows(400)
    catalog = write_catalog(root / "catalog.jsonl", original)
    incremental = root / "incremental"
    options = {"filter_field": "category", "numeric_fields": ["price"], "progress": False}
    build_items(catalog, tiny_model_dir, incremental, **options)  # type: ignore[arg-type]
    write_catalog(catalog, changed_catalog(original))
    encoder = CountingEncoder(tiny_model_dir, provider="cpu")
    build_items(catalog, tiny_model_dir, incremental, encoder=encoder, **options)  # type: ignore[arg-type]
    full = root / "full"
    build_items(catalog, tiny_model_dir, full, force=True, **options)  # type: ignore[arg-type]
    return {"incremental": incremental, "full": full, "embedded": encoder.embedded}


def test_only_new_and_changed_rows_are_embedded(builds: dict[str, object]) -> None:
    assert builds["embedded"] == 4 + 2  # four changed texts, two new items


def test_the_result_is_byte_identical_to_a_full_build(builds: dict[str, object]) -> None:
    incremental, full = Path(str(builds["incremental"])), Path(str(builds["full"]))
    assert files_of(incremental) == files_of(full)
    assert manifest_without_catalog_path(incremental) == manifest_without_catalog_path(full)


def test_a_forced_build_embeds_everything(tiny_model_dir: Path, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog.jsonl", catalog_rows(30))
    build_items(catalog, tiny_model_dir, tmp_path / "items", progress=False)
    write_catalog(catalog, catalog_rows(30)[:-1])
    encoder = CountingEncoder(tiny_model_dir, provider="cpu")
    build_items(catalog, tiny_model_dir, tmp_path / "items", progress=False, force=True, encoder=encoder)
    assert encoder.embedded == 29


KILLED_BUILD = """
import sys
from pathlib import Path
from embedrec.export.items import build_items
build_items(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), block_rows=50, progress=False)
"""


def test_an_incremental_build_killed_midway_resumes_to_the_same_bytes(tiny_model_dir: Path, tmp_path: Path) -> None:
    original = catalog_rows(400, seed=3)
    catalog = write_catalog(tmp_path / "catalog.jsonl", original)
    output = tmp_path / "items"
    build_items(catalog, tiny_model_dir, output, block_rows=50, progress=False)
    write_catalog(catalog, changed_catalog(original))
    partial = tmp_path / ".items.partial"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, str(catalog), str(tiny_model_dir), str(output)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it once it has checkpointed at least one block
        checkpoint = partial / "build_checkpoint.json"
        if checkpoint.exists() and json.loads(checkpoint.read_text()).get("rows_done", 0) > 0:
            break
        if process.poll() is not None:
            break
        time.sleep(0.01)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(30)
    build_items(catalog, tiny_model_dir, output, block_rows=50, progress=False)
    full = tmp_path / "full"
    build_items(catalog, tiny_model_dir, full, block_rows=50, progress=False, force=True)
    assert files_of(output) == files_of(full)


def test_rows_are_reused_from_another_directory_when_each_build_goes_to_a_new_one(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    original = catalog_rows(60, seed=5)
    catalog = write_catalog(tmp_path / "catalog.jsonl", original)
    build_items(catalog, tiny_model_dir, tmp_path / "build-1", progress=False)
    (tmp_path / "current").symlink_to(tmp_path / "build-1")
    changed = [dict(row) for row in original]
    changed[4]["text"] = "a brand new text"
    write_catalog(catalog, changed)
    encoder = CountingEncoder(tiny_model_dir, provider="cpu")
    build_items(catalog, tiny_model_dir, tmp_path / "build-2", reuse_from=tmp_path / "current", encoder=encoder)
    assert encoder.embedded == 1
    build_items(catalog, tiny_model_dir, tmp_path / "full", force=True, progress=False)
    assert files_of(tmp_path / "build-2") == files_of(tmp_path / "full")
