"""Item ids on disk, looked up without loading them: row → id and id → row over memory maps.

A Python list and dict of a million ids cost ~150 MB of private memory and a second of start-up
per process; this layout costs neither. Files (written by `write_id_index` at item build):

- ids.txt: one id per line, row order (the human-readable source of truth);
- ids_offsets.npy: int64 (n + 1,), byte offset of each line in ids.txt (row → id);
- ids_hashes.npy: uint64 (n,), 64-bit blake2b of each id, ascending;
- ids_hash_rows.npy: int64 (n,), the row of each entry of ids_hashes.npy (id → row, by binary
  search, then a comparison with the id itself, so hash collisions never mix items up).
"""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embedrec.server.errors import ConfigurationError

IDS_TEXT = "ids.txt"
IDS_OFFSETS = "ids_offsets.npy"
IDS_HASHES = "ids_hashes.npy"
IDS_HASH_ROWS = "ids_hash_rows.npy"
_BLOCK = 65_536

IndexArray = npt.NDArray[np.int64]


def id_hash(item_id: str) -> int:
    """The 64-bit hash of one id, stable across processes and platforms."""
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest(), "little")


def write_id_index(directory: Path, count: int) -> None:
    """Write the offset and hash files for `directory/ids.txt`, which holds `count` ids.

    Streams ids.txt into memory-mapped outputs; private memory is the sort order, 8 bytes per
    id, nothing per character. Raises ValueError when ids.txt does not hold `count` lines.
    """
    unsorted_path = directory / (IDS_HASHES + ".unsorted.npy")
    offsets = np.lib.format.open_memmap(directory / IDS_OFFSETS, mode="w+", dtype=np.int64, shape=(count + 1,))
    hashes = np.lib.format.open_memmap(unsorted_path, mode="w+", dtype=np.uint64, shape=(count,))
    offsets[0] = position = row = 0
    with (directory / IDS_TEXT).open("rb") as handle:
        for row, line in enumerate(handle, start=1):
            if row > count:
                raise ValueError(f"{directory / IDS_TEXT} has more than {count} ids")
            position += len(line)
            offsets[row] = position
            hashes[row - 1] = id_hash(line[:-1].decode("utf-8"))
    if row != count:
        raise ValueError(f"{directory / IDS_TEXT} has {row} ids, expected {count}")
    offsets.flush()
    order = np.argsort(hashes, kind="stable").astype(np.int64)
    np.save(directory / IDS_HASH_ROWS, order)
    ordered = np.lib.format.open_memmap(directory / IDS_HASHES, mode="w+", dtype=np.uint64, shape=(count,))
    for start in range(0, count, _BLOCK):
        ordered[start : start + _BLOCK] = hashes[order[start : start + _BLOCK]]
    ordered.flush()
    del offsets, hashes, ordered
    unsorted_path.unlink()


class ItemIds:
    """The ids of an item directory, memory-mapped: `id_at(row)` and `find(ids)`."""

    def __init__(self, directory: Path, expected_count: int) -> None:
        """Map the id files of `directory`; ConfigurationError when missing or inconsistent."""
        try:
            with (directory / IDS_TEXT).open("rb") as handle:
                size = handle.seek(0, 2)
                self._text = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            self._offsets: IndexArray = np.load(directory / IDS_OFFSETS, mmap_mode="r")
            self._hashes: npt.NDArray[np.uint64] = np.load(directory / IDS_HASHES, mmap_mode="r")
            self._hash_rows: IndexArray = np.load(directory / IDS_HASH_ROWS, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"item ids in {directory} unreadable ({error}); rebuild the items") from None
        shapes = (self._offsets.shape, self._hashes.shape, self._hash_rows.shape)
        if shapes != ((expected_count + 1,), (expected_count,), (expected_count,)) or (
            int(self._offsets[-1]) != len(self._text)
        ):
            raise ConfigurationError(
                f"item ids in {directory} disagree with the manifest's {expected_count} items; rebuild the items"
            )
        self.count = expected_count

    def id_at(self, row: int) -> str:
        """The id of `row`."""
        start, stop = int(self._offsets[row]), int(self._offsets[row + 1])
        return bytes(self._text[start : stop - 1]).decode("utf-8")

    def ids_at(self, rows: Iterable[int]) -> list[str]:
        """The ids of `rows`, in order."""
        return [self.id_at(int(row)) for row in rows]

    def find(self, item_ids: Sequence[str]) -> IndexArray:
        """The row of each id, -1 where the id is not in the catalog."""
        found = np.full(len(item_ids), -1, dtype=np.int64)
        if not item_ids or not self.count:
            return found
        wanted = np.fromiter((id_hash(item_id) for item_id in item_ids), dtype=np.uint64, count=len(item_ids))
        positions = np.searchsorted(self._hashes, wanted)
        for index, (item_id, position) in enumerate(zip(item_ids, positions.tolist(), strict=True)):
            # Equal hashes sit together; compare the ids themselves (collisions are harmless).
            while position < self.count and self._hashes[position] == wanted[index]:
                row = int(self._hash_rows[position])
                if self.id_at(row) == item_id:
                    found[index] = row
                    break
                position += 1
        return found
