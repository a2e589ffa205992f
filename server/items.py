"""The served catalog: a read-only memory-mapped item matrix, its ids, and user profiles.

The matrix is never copied into memory: `np.load(..., mmap_mode="r")` lets the page cache hold
it, shared by every process that maps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from server.errors import ConfigurationError, InvalidArgument, NotFound
from server.manifest import ITEMS_IDS, ITEMS_MATRIX, ItemsManifest, read_items_manifest
from server.topk import FloatArray, IndexArray, top_k


@dataclass(frozen=True)
class Recommendation:
    """One recommended item and its cosine score."""

    item_id: str
    score: float


class ItemIndex:
    """An item matrix directory (written by `embedrec export-items`) opened for search."""

    def __init__(self, items_dir: Path) -> None:
        """Map `items_dir/items.npy` read-only and read its ids and manifest.

        Raises ConfigurationError when the files are missing or disagree with the manifest.
        """
        self.manifest: ItemsManifest = read_items_manifest(items_dir)
        try:
            self.matrix: npt.NDArray[np.float32] = np.load(items_dir / ITEMS_MATRIX, mmap_mode="r")
            ids = (items_dir / ITEMS_IDS).read_text(encoding="utf-8").split("\n")[:-1]
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"item matrix in {items_dir} unreadable: {error}") from None
        if self.matrix.dtype != np.float32 or self.manifest.dtype != "float32":
            raise ConfigurationError(
                f"{items_dir}: item matrix has dtype {self.matrix.dtype} (manifest: {self.manifest.dtype}); "
                "this server reads float32: rebuild the items"
            )
        expected = (self.manifest.item_count, self.manifest.dim)
        if self.matrix.shape != expected or len(ids) != self.manifest.item_count:
            raise ConfigurationError(
                f"{items_dir}: matrix shape {self.matrix.shape} and {len(ids)} ids disagree with "
                f"the manifest's {expected}; rebuild the items"
            )
        self.ids = ids
        self._row_of = {item_id: row for row, item_id in enumerate(ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def rows_of(self, item_ids: Sequence[str], *, field: str) -> IndexArray:
        """Row numbers of `item_ids`; raises NotFound naming `field` and the unknown ids, and
        InvalidArgument when an id is given twice."""
        seen: set[str] = set()
        for item_id in item_ids:
            if item_id in seen:
                raise InvalidArgument(f"{field} has duplicate id {item_id[:64]!r}; give each item once")
            seen.add(item_id)
        unknown = [item_id for item_id in item_ids if item_id not in self._row_of]
        if unknown:
            shown = ", ".join(repr(item_id[:64]) for item_id in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise NotFound(f"{field}: unknown item id(s) {shown}{more}")
        return np.fromiter((self._row_of[item_id] for item_id in item_ids), dtype=np.int64, count=len(item_ids))

    def known_rows(self, item_ids: Sequence[str]) -> IndexArray:
        """Row numbers of the ids in `item_ids` that exist; unknown ids are skipped."""
        rows = [self._row_of[item_id] for item_id in item_ids if item_id in self._row_of]
        return np.asarray(rows, dtype=np.int64)

    def vectors(self, rows: IndexArray) -> FloatArray:
        """The item vectors at `rows`, float32 (len(rows), dim)."""
        return np.asarray(self.matrix[rows], dtype=np.float32)

    def recommend(self, profile: FloatArray, k: int, *, excluded_rows: IndexArray) -> list[Recommendation]:
        """The k items most similar to the unit vector `profile` (dim,), best first."""
        rows, scores = top_k(self.matrix, profile[None, :], k, excluded_rows=excluded_rows)[0]
        return [Recommendation(self.ids[row], float(score)) for row, score in zip(rows, scores, strict=True)]
