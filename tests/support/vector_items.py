"""Item directories written from given vectors (no model run): catalogs whose exact answer the
test computes itself, e.g. for the recall of an approximate Milvus index."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedrec.server.catalog.fields import FIELDS_DIR
from embedrec.server.catalog.mmap.item_ids import write_id_index
from embedrec.server.manifest import (
    ITEMS_IDS,
    ITEMS_LAYOUT,
    ITEMS_MANIFEST,
    ITEMS_MATRIX,
    ItemsManifest,
    sha256_file,
    write_manifest,
)


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """`rows` scaled to unit length, float32."""
    scaled: np.ndarray = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    return scaled


def clustered_rows(count: int, dim: int, *, clusters: int = 50, spread: float = 0.5, seed: int = 0) -> np.ndarray:
    """`count` unit rows around `clusters` random centres (like real embeddings: neighbourhoods)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    rows = centres[rng.integers(0, clusters, count)] + spread * rng.standard_normal((count, dim))
    return unit_rows(rows)


def vector_items(
    directory: Path,
    vectors: np.ndarray,
    *,
    model_name: str = "vectors",
    model_onnx_sha256: str = "0" * 64,
    numeric: dict[str, np.ndarray] | None = None,
) -> Path:
    """An item directory holding `vectors` (unit rows) as items item-0, item-1, ... in that
    order, with `numeric` fields (name -> one value per row), recorded as embedded by the model
    `model_name` / `model_onnx_sha256` (a served model's, for a server to accept it)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, values in (numeric or {}).items():
        (directory / FIELDS_DIR).mkdir(exist_ok=True)
        np.save(directory / FIELDS_DIR / f"{name}.npy", np.asarray(values, dtype=np.float64))
    np.save(directory / ITEMS_MATRIX, np.asarray(vectors, dtype=np.float32))
    count, dim = vectors.shape
    with (directory / ITEMS_IDS).open("w") as ids:
        ids.writelines(f"item-{row}\n" for row in range(count))
    write_id_index(directory, count)
    manifest = ItemsManifest(
        item_count=count,
        dim=dim,
        dtype="float32",
        items_sha256=sha256_file(directory / ITEMS_MATRIX),
        model_name=model_name,
        model_onnx_sha256=model_onnx_sha256,
        catalog="vectors",
        catalog_sha256="",
        layout=ITEMS_LAYOUT,
        fields=dict.fromkeys(numeric or {}, "numeric"),
    )
    write_manifest(manifest, directory / ITEMS_MANIFEST)
    return directory


def exact_top(queries: np.ndarray, vectors: np.ndarray, k: int) -> list[list[str]]:
    """Each query's exact top-k ids (inner product on unit rows)."""
    scores = queries @ vectors.T
    return [[f"item-{row}" for row in np.argsort(-one, kind="stable")[:k]] for one in scores]


def recall_at(found: list[list[str]], truth: list[list[str]]) -> float:
    """The mean share of each true top-k found."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)]))
