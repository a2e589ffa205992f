"""Item build at scale: resumable after Ctrl-C or kill (byte-identical), atomic, filter field, id index."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedrec.export.catalog import CatalogError
from embedrec.export.items import build_items
from embedrec.server.catalog.mmap.store import ItemIndex
from embedrec.server.inference.encoder import OnnxEncoder
from tests.e2e.tiny_models import CountingEncoder
from tests.support.paths import REPO_ROOT

ROWS = 90
BLOCK_ROWS = 16  # 6 blocks: an interruption can land in the middle
BATCH_SIZE = 8  # 2 encoder calls per block
BUILD: dict[str, Any] = {
    "filter_field": "category",
    "progress": False,
    "block_rows": BLOCK_ROWS,
    "batch_size": BATCH_SIZE,
}


def write_catalog(path: Path, rows: int = ROWS, *, seed_text: str = "item") -> Path:
    words = ["red", "air", "quiet", "coffee", "phone", "shoes", "book", "fast", "family", "kitchen"]
    with path.open("w", encoding="utf-8") as handle:
        for row in range(rows):
            text = " ".join(words[(row * 7 + step) % len(words)] for step in range(1 + row % 9))
            category = ["a", "b", "c"][row % 3]
            handle.write(json.dumps({"id": f"{seed_text}-{row}", "text": text, "category": category}) + "\n")
    return path


def directory_bytes(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


class InterruptingEncoder:
    """The real encoder, interrupted (like Ctrl-C) after `calls` encode calls."""

    def __init__(self, model_dir: Path, calls: int) -> None:
        self._encoder = OnnxEncoder(model_dir, provider="cpu")
        self._calls_left = calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode(self, texts: list[str], **options: Any) -> Any:
        if self._calls_left == 0:
            raise KeyboardInterrupt
        self._calls_left -= 1
        return self._encoder.encode(texts, **options)


@pytest.fixture()
def catalog(tmp_path: Path) -> Path:
    return write_catalog(tmp_path / "catalog.jsonl")


@pytest.fixture()
def uninterrupted(tiny_model_dir: Path, catalog: Path, tmp_path: Path) -> dict[str, bytes]:
    output = tmp_path / "reference"
    build_items(catalog, tiny_model_dir, output, **BUILD)
    return directory_bytes(output)


def test_a_build_interrupted_by_ctrl_c_resumes_and_ends_byte_identical(
    tiny_model_dir: Path, catalog: Path, tmp_path: Path, uninterrupted: dict[str, bytes]
) -> None:
    output = tmp_path / "items"
    for calls in (3, 2):  # interrupted twice, mid-block each time
        encoder = InterruptingEncoder(tiny_model_dir, calls)
        with pytest.raises(KeyboardInterrupt):
            build_items(
                catalog,
                tiny_model_dir,
                output,
                **BUILD,
                encoder=encoder,
            )
        assert not output.exists(), "a half-built matrix must never be visible at the output path"
    checkpoint = json.loads((tmp_path / ".items.partial" / "build_checkpoint.json").read_text())
    assert checkpoint["rows_done"] == 2 * BLOCK_ROWS  # 2 blocks of 2 batches each completed

    build_items(catalog, tiny_model_dir, output, **BUILD)

    assert directory_bytes(output) == uninterrupted
    assert not (tmp_path / ".items.partial").exists()


def test_a_build_killed_with_sigkill_resumes_and_ends_byte_identical(
    tiny_model_dir: Path, catalog: Path, tmp_path: Path, uninterrupted: dict[str, bytes]
) -> None:
    output = tmp_path / "items"
    script = f"""
import os, signal
from pathlib import Path
from embedrec.export.items import build_items
from embedrec.server.inference.encoder import OnnxEncoder

encoder = OnnxEncoder(Path({str(tiny_model_dir)!r}), provider="cpu")
real_encode, calls = encoder.encode, []
def encode(texts, **options):
    calls.append(1)
    if len(calls) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_encode(texts, **options)
encoder.encode = encode
build_items(Path({str(catalog)!r}), Path({str(tiny_model_dir)!r}), Path({str(output)!r}), encoder=encoder, **{BUILD!r})
"""
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert not output.exists()

    build_items(catalog, tiny_model_dir, output, **BUILD)

    assert directory_bytes(output) == uninterrupted


def test_a_partial_build_of_another_catalog_is_discarded_not_resumed(
    tiny_model_dir: Path, catalog: Path, tmp_path: Path, uninterrupted: dict[str, bytes]
) -> None:
    output = tmp_path / "items"
    other = write_catalog(tmp_path / "other.jsonl", seed_text="other")
    with pytest.raises(KeyboardInterrupt):
        build_items(
            other,
            tiny_model_dir,
            output,
            **BUILD,
            encoder=InterruptingEncoder(tiny_model_dir, 1),
        )
    build_items(catalog, tiny_model_dir, output, **BUILD)
    assert directory_bytes(output) == uninterrupted


def test_a_failed_rebuild_leaves_the_served_directory_as_it_was(
    tiny_model_dir: Path, catalog: Path, tmp_path: Path, uninterrupted: dict[str, bytes]
) -> None:
    output = tmp_path / "items"
    build_items(catalog, tiny_model_dir, output, **BUILD)
    changed = write_catalog(tmp_path / "changed.jsonl", rows=ROWS + 5)
    with pytest.raises(KeyboardInterrupt):
        build_items(
            changed,
            tiny_model_dir,
            output,
            **BUILD,
            encoder=InterruptingEncoder(tiny_model_dir, 4),
            force=True,  # every row embedded, so the interruption comes mid-build
        )
    assert directory_bytes(output) == uninterrupted


def test_the_filter_field_and_ids_are_stored_beside_the_matrix(
    tiny_model_dir: Path, catalog: Path, tmp_path: Path
) -> None:
    output = tmp_path / "items"
    build_items(catalog, tiny_model_dir, output, **BUILD)
    index = ItemIndex(output)
    assert index.filter_field == "category"
    assert json.loads((output / "filter_values.json").read_text()) == ["a", "b", "c"]
    np.testing.assert_array_equal(np.load(output / "filter_codes.npy"), np.arange(ROWS) % 3)
    assert index.ids.ids_at(range(3)) == ["item-0", "item-1", "item-2"]
    np.testing.assert_array_equal(index.known_rows(["item-7", "nope", "item-0"]), [7, 0])


def test_a_filter_field_that_no_row_has_is_refused(tiny_model_dir: Path, catalog: Path, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no row has a value in the filter field 'brand'"):
        build_items(catalog, tiny_model_dir, tmp_path / "items", filter_field="brand", progress=False)


def test_a_csv_without_the_filter_column_is_refused_with_its_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("id,text\na,red shoes\nb,coffee\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="header lacks column"):
        build_items(catalog, tiny_model_dir, tmp_path / "items", filter_field="category", progress=False)


def test_an_item_directory_of_the_older_layout_asks_for_a_rebuild(tiny_items_dir: Path, tmp_path: Path) -> None:
    import shutil

    from embedrec.server.errors import ConfigurationError

    old = tmp_path / "old"
    shutil.copytree(tiny_items_dir, old)
    manifest = json.loads((old / "items_manifest.json").read_text())
    manifest["layout"] = 1
    (old / "items_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigurationError, match="rebuild the items"):
        ItemIndex(old)


def test_memory_of_the_build_does_not_hold_the_catalog(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Streaming: rows are read block by block, never all at once (the benchmark measures RssAnon).
    import embedrec.export.items as items_module

    largest_block = []
    real_blocks = items_module._blocks

    def spy(iterator: Any, size: int) -> Any:
        for block in real_blocks(iterator, size):
            largest_block.append(len(block))
            yield block

    monkeypatch.setattr(items_module, "_blocks", spy)
    catalog = write_catalog(tmp_path / "catalog.jsonl", rows=200)
    build_items(catalog, tiny_model_dir, tmp_path / "items", progress=False, block_rows=32)
    assert max(largest_block) == 32
    assert os.path.getsize(tmp_path / "items" / "items.npy") > 200 * 4


def test_csv_catalogs_store_fields_and_a_missing_field_column_is_refused_before_embedding(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from embedrec.export.catalog import CatalogError

    catalog = tmp_path / "catalog.csv"
    catalog.write_text("id,text,brand,price\na,hello world,acme,10\nb,coffee tea,zenith,\nc,red shoes,acme,12.5\n")
    manifest = build_items(catalog, tiny_model_dir, tmp_path / "items", fields=["brand"], numeric_fields=["price"])
    assert manifest.fields == {"brand": "categorical", "price": "numeric"}
    columns = ItemIndex(tmp_path / "items").columns
    np.testing.assert_array_equal(np.asarray(columns["price"].values), [10.0, np.nan, 12.5])  # type: ignore[union-attr]
    with pytest.raises(CatalogError, match=r"header lacks column\(s\) \['colour'\]"):
        build_items(catalog, tiny_model_dir, tmp_path / "other", fields=["colour"], progress=False)
    assert not (tmp_path / "other").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "text": "t", "price": "cheap"}\n{"id": "y", "text": "u", "price": true}\n')
    encoder = CountingEncoder(tiny_model_dir)
    with pytest.raises(CatalogError, match="2 non-numeric values: line 1: price='cheap', line 2: price=True"):
        build_items(bad, tiny_model_dir, tmp_path / "bad-items", numeric_fields=["price"], encoder=encoder)
    assert encoder.embedded == 0  # refused before anything is embedded


def test_a_build_interrupted_while_writing_its_int8_codes_resumes_and_ends_byte_identical(
    tiny_model_dir: Path,
    catalog: Path,
    tmp_path: Path,
    uninterrupted: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import embedrec.server.catalog.mmap.codes as codes

    real_build = codes.build_codes

    def interrupted(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(codes, "build_codes", interrupted)
    output = tmp_path / "items"
    with pytest.raises(KeyboardInterrupt):
        build_items(catalog, tiny_model_dir, output, **BUILD)
    assert not output.exists()
    monkeypatch.setattr(codes, "build_codes", real_build)
    build_items(catalog, tiny_model_dir, output, **BUILD)
    assert directory_bytes(output) == uninterrupted
    assert {"item_codes.npy", "item_codes.json"} <= set(uninterrupted)
