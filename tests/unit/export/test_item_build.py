"""Item build's id index without a build: lookups hold when every id hashes alike.
(The builds themselves: tests/e2e/test_item_build.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedrec.server.catalog.mmap.item_ids import ItemIds


def test_id_lookups_survive_hash_collisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import embedrec.server.catalog.mmap.item_ids as item_ids

    monkeypatch.setattr(item_ids, "id_hash", lambda item_id: len(item_id) % 2)  # nearly everything collides
    ids = ["a", "bb", "ccc", "dddd", "e", "ffffff", "ümlaut", "中文"]
    (tmp_path / "ids.txt").write_text("".join(f"{item_id}\n" for item_id in ids), encoding="utf-8")
    item_ids.write_id_index(tmp_path, len(ids))
    index = ItemIds(tmp_path, len(ids))
    np.testing.assert_array_equal(index.find(ids[::-1]), np.arange(len(ids))[::-1])
    np.testing.assert_array_equal(index.find(["zz", "a", "x"]), [-1, 0, -1])
    assert index.ids_at([6, 7]) == ["ümlaut", "中文"]
