"""Item build: a catalog → L2-normalised float32 item matrix, ids and a manifest.

Rows are embedded with the server's own ONNX encoder (not PyTorch, so items and queries share
one embedding path) and written chunk by chunk into a memory-mapped .npy: memory stays flat for
any catalog size. Everything is written into a temporary directory that is renamed into place
after the manifest, so a half-built matrix is never picked up.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from export.atomic import staged_directory
from export.catalog import iter_catalog, validate_catalog
from server.encoder import OnnxEncoder
from server.errors import ConfigurationError
from server.manifest import (
    ITEMS_IDS,
    ITEMS_MANIFEST,
    ITEMS_MATRIX,
    ItemsManifest,
    read_items_manifest,
    read_model_manifest,
    sha256_file,
    write_manifest,
)

# Rows read and sorted by length together, so batches pad little; batch_size rows per run.
READ_BLOCK_ROWS = 1024
DEFAULT_BATCH_SIZE = 32
_Row = TypeVar("_Row")

logger = logging.getLogger(__name__)


def build_items(
    catalog: Path,
    model_dir: Path,
    output_dir: Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    id_field: str = "id",
    text_field: str = "text",
    progress: bool = True,
    encoder: OnnxEncoder | None = None,
    force: bool = False,
) -> ItemsManifest:
    """Embed every row of `catalog` with the model in `model_dir` into `output_dir`.

    Writes items.npy (float32, (n, dim), unit rows), ids.txt (one id per line, row order) and
    items_manifest.json naming the model. Re-running with the same catalog and model is a
    no-op unless `force`. Raises CatalogError listing bad rows before any embedding is done.
    """
    catalog_sha256 = sha256_file(catalog)
    model_sha256 = read_model_manifest(model_dir).onnx_sha256
    if not force and _is_up_to_date(output_dir, catalog_sha256, model_sha256):
        logger.info("items in %s are up to date", output_dir)
        return read_items_manifest(output_dir)
    count = validate_catalog(catalog, id_field=id_field, text_field=text_field)
    encoder = encoder or OnnxEncoder(model_dir, provider="auto")
    with staged_directory(output_dir) as staging:
        _write_matrix_and_ids(catalog, encoder, staging, count, batch_size, id_field, text_field, progress)
        manifest = ItemsManifest(
            item_count=count,
            dim=encoder.dim,
            dtype="float32",
            items_sha256=sha256_file(staging / ITEMS_MATRIX),
            model_name=encoder.manifest.model_name,
            model_onnx_sha256=encoder.manifest.onnx_sha256,
            catalog=str(catalog),
            catalog_sha256=catalog_sha256,
        )
        write_manifest(manifest, staging / ITEMS_MANIFEST)
    logger.info("built %d items (dim %d) into %s", count, encoder.dim, output_dir)
    return manifest


def _is_up_to_date(output_dir: Path, catalog_sha256: str, model_sha256: str) -> bool:
    try:
        existing = read_items_manifest(output_dir)
    except ConfigurationError:
        return False
    return existing.catalog_sha256 == catalog_sha256 and existing.model_onnx_sha256 == model_sha256


def _write_matrix_and_ids(
    catalog: Path,
    encoder: OnnxEncoder,
    staging: Path,
    count: int,
    batch_size: int,
    id_field: str,
    text_field: str,
    progress: bool,
) -> None:
    matrix = np.lib.format.open_memmap(staging / ITEMS_MATRIX, mode="w+", dtype=np.float32, shape=(count, encoder.dim))
    rows = iter_catalog(catalog, id_field=id_field, text_field=text_field)
    bar = _progress_bar(count, progress)
    written = 0
    with (staging / ITEMS_IDS).open("w", encoding="utf-8") as ids_file:
        for block in _blocks(rows, READ_BLOCK_ROWS):
            texts = [row.text or "" for row in block]
            # Longest first inside a block: neighbours in a batch have similar lengths.
            order = sorted(range(len(texts)), key=lambda index: -len(texts[index]))
            for start in range(0, len(order), batch_size):
                chosen = order[start : start + batch_size]
                vectors = encoder.encode([texts[index] for index in chosen], normalize=True)
                matrix[written + np.asarray(chosen)] = vectors
                bar.update(len(chosen))
            ids_file.writelines(f"{row.item_id}\n" for row in block)
            written += len(block)
    matrix.flush()
    bar.close()
    del matrix


def _blocks(iterator: Iterator[_Row], size: int) -> Iterator[list[_Row]]:
    while block := list(islice(iterator, size)):
        yield block


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="item", desc="embedding items", disable=not enabled, file=sys.stderr)
