"""The items' texts beside the matrix, for a rerank stage: what the cross-encoder reads.

`export-items` writes them in the build's finishing step from the catalog, in row order:
item_texts.bin (every row's text, UTF-8, concatenated) and item_texts_offsets.npy (uint64, n + 1:
row i is bytes [offsets[i], offsets[i + 1])). Both are memory-mapped at serve time, so a text
costs a page read, not resident memory; a build is deterministic in the catalog, so incremental
and resumed builds write the same bytes. A directory built before texts were stored has none:
Recommend's rerank stage then answers FAILED_PRECONDITION (rebuild to add them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from embedrec.server.errors import ConfigurationError

ITEM_TEXTS = "item_texts.bin"
ITEM_TEXT_OFFSETS = "item_texts_offsets.npy"


def write_item_texts(directory: Path, texts: Iterable[str], count: int) -> None:
    """Write the `count` texts of the rows, in order, into `directory` (the offsets last, so a
    killed write leaves offsets that do not match and a directory read as without texts)."""
    offsets = np.zeros(count + 1, dtype=np.uint64)
    written, rows = 0, 0
    with (directory / ITEM_TEXTS).open("wb") as blob:
        for text in texts:
            if rows == count:
                raise ConfigurationError(f"more than {count} item texts for {count} rows")
            data = text.encode("utf-8")
            blob.write(data)
            written += len(data)
            rows += 1
            offsets[rows] = written
    if rows != count:
        raise ConfigurationError(f"{rows} item texts for {count} rows")
    np.save(directory / ITEM_TEXT_OFFSETS, offsets)


class ItemTexts:
    """The texts of an item directory, memory-mapped."""

    def __init__(self, directory: Path, count: int) -> None:
        """Open the texts of `count` rows; ConfigurationError naming the file when they do not
        match the rows (see `open`)."""
        self.offsets = np.load(directory / ITEM_TEXT_OFFSETS, mmap_mode="r")
        size = (directory / ITEM_TEXTS).stat().st_size
        if self.offsets.shape != (count + 1,) or int(self.offsets[-1]) != size:
            raise ConfigurationError(f"{directory / ITEM_TEXT_OFFSETS} does not match the items: rebuild them")
        self.blob = np.memmap(directory / ITEM_TEXTS, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)

    @classmethod
    def open(cls, directory: Path, count: int) -> ItemTexts | None:
        """The texts of `directory`, or None when it has none (built before texts were stored)."""
        if not (directory / ITEM_TEXT_OFFSETS).is_file() or not (directory / ITEM_TEXTS).is_file():
            return None
        return cls(directory, count)

    def texts_at(self, rows: Sequence[int]) -> list[str]:
        """The texts of `rows`, in order."""
        found = []
        for row in rows:
            start, end = int(self.offsets[row]), int(self.offsets[row + 1])
            found.append(bytes(self.blob[start:end]).decode("utf-8"))
        return found
