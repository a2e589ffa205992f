"""Items hidden at runtime (out of stock, withdrawn): never recommended until restored.

The hidden ids of an item directory live in its `hidden_ids.json` (written atomically), so they
survive a restart and a reload. Searches read an immutable snapshot: a boolean mask over the
matrix rows that `top_k` consults only for the candidates that pass its score threshold, so
10,000 hidden items cost a gather per candidate, not a longer scan. A change builds a new
snapshot and swaps it in whole: a search sees the old set or the new one, never half of one.

Rebuilds: `embedrec export-items` into the same output directory keeps the hidden ids of the
catalog's items (ids gone from the catalog are dropped), and a server that reloads a new
directory carries its hidden ids over to it (written into that directory).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embedrec.results import VisibilityResult
from embedrec.server.catalog.mmap.item_ids import ItemIds
from embedrec.server.errors import ConfigurationError
from embedrec.server.manifest import write_json_atomically

HIDDEN_FILE = "hidden_ids.json"

Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class HiddenSnapshot:
    """The hidden ids (sorted) and the mask of their rows; immutable."""

    ids: tuple[str, ...]
    mask: Mask | None  # None when nothing is hidden

    def __len__(self) -> int:
        return len(self.ids)


class HiddenItems:
    """The hidden set of one item directory: read at open, changed by `hide`/`restore` (blocking:
    id look-ups and the atomic file write; call them off the event loop, one at a time)."""

    def __init__(self, directory: Path, ids: ItemIds, count: int) -> None:
        self.directory = directory
        self._ids = ids
        self._count = count
        self.snapshot = HiddenSnapshot((), None)
        stored = read_hidden_ids(directory)
        if stored:
            self.snapshot = self._snapshot(self._known(stored))

    def hide(self, item_ids: Sequence[str]) -> VisibilityResult:
        """Hide `item_ids` (the known ones) from the next search on, and persist the set."""
        known, unknown = self._split(item_ids)
        current = set(self.snapshot.ids)
        added = [item_id for item_id in dict.fromkeys(known) if item_id not in current]
        if added:
            self._replace(current | set(added))
        return VisibilityResult(len(added), unknown, len(self.snapshot))

    def restore(self, item_ids: Sequence[str]) -> VisibilityResult:
        """Show `item_ids` again from the next search on, and persist the set."""
        known, unknown = self._split(item_ids)
        current = set(self.snapshot.ids)
        removed = [item_id for item_id in dict.fromkeys(known) if item_id in current]
        if removed:
            self._replace(current - set(removed))
        return VisibilityResult(len(removed), unknown, len(self.snapshot))

    def carry_over(self, item_ids: Iterable[str]) -> None:
        """Hide the ids of `item_ids` this directory has (a reload's previous set), persisting it."""
        known = self._known(list(item_ids))
        if set(known) != set(self.snapshot.ids):
            self._replace(set(known))

    def _replace(self, hidden: set[str]) -> None:
        snapshot = self._snapshot(sorted(hidden))
        try:
            write_json_atomically(list(snapshot.ids), self.directory / HIDDEN_FILE, ensure_ascii=False)
        except OSError as error:
            raise ConfigurationError(f"cannot write {self.directory / HIDDEN_FILE}: {error}") from None
        self.snapshot = snapshot

    def _snapshot(self, hidden: Sequence[str]) -> HiddenSnapshot:
        if not hidden:
            return HiddenSnapshot((), None)
        rows = self._ids.find(list(hidden))
        mask = np.zeros(self._count, dtype=np.bool_)
        mask[rows[rows >= 0]] = True
        return HiddenSnapshot(tuple(sorted(hidden)), mask)

    def _split(self, item_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        rows = self._ids.find(list(item_ids))
        known = [item_id for item_id, row in zip(item_ids, rows.tolist(), strict=True) if row >= 0]
        unknown = [item_id for item_id, row in zip(item_ids, rows.tolist(), strict=True) if row < 0]
        return known, unknown

    def _known(self, item_ids: list[str]) -> list[str]:
        return self._split(item_ids)[0] if item_ids else []


def read_hidden_ids(directory: Path) -> list[str]:
    """The ids in `directory`'s hidden_ids.json (none when it is absent). Raises
    ConfigurationError when it is unreadable."""
    path = directory / HIDDEN_FILE
    if not path.exists():
        return []
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"{path} unreadable: {error}") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigurationError(f"{path} must be a JSON list of item ids")
    return value
