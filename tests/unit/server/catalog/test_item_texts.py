"""The items' texts beside the matrix (server/catalog/mmap/item_texts.py): what a rerank stage reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedrec.server.catalog.mmap.item_texts import ITEM_TEXT_OFFSETS, ITEM_TEXTS, ItemTexts, write_item_texts
from embedrec.server.errors import ConfigurationError

TEXTS = ["energy saving air conditioner", "", "这是一款高效节能的空调", "emoji 🏃‍♀️ and\nnewlines"]


def test_texts_come_back_by_row_in_any_order(tmp_path: Path) -> None:
    write_item_texts(tmp_path, iter(TEXTS), len(TEXTS))
    texts = ItemTexts.open(tmp_path, len(TEXTS))
    assert texts is not None
    assert texts.texts_at([3, 0, 1, 2, 0]) == [TEXTS[3], TEXTS[0], TEXTS[1], TEXTS[2], TEXTS[0]]


def test_a_directory_without_texts_has_none(tmp_path: Path) -> None:
    assert ItemTexts.open(tmp_path, 3) is None


def test_texts_that_do_not_match_the_rows_are_refused(tmp_path: Path) -> None:
    write_item_texts(tmp_path, iter(TEXTS), len(TEXTS))
    with pytest.raises(ConfigurationError, match=f"{ITEM_TEXT_OFFSETS} does not match the items"):
        ItemTexts.open(tmp_path, len(TEXTS) + 1)
    (tmp_path / ITEM_TEXTS).write_bytes(b"truncated")  # a blob from another build
    with pytest.raises(ConfigurationError, match="does not match the items: rebuild them"):
        ItemTexts.open(tmp_path, len(TEXTS))


def test_the_writer_counts_the_rows(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="3 item texts for 4 rows"):
        write_item_texts(tmp_path, iter(TEXTS[:3]), 4)
    with pytest.raises(ConfigurationError, match="more than 2 item texts for 2 rows"):
        write_item_texts(tmp_path, iter(TEXTS), 2)
    write_item_texts(tmp_path, iter([]), 0)
    empty = ItemTexts.open(tmp_path, 0)
    assert empty is not None and empty.texts_at([]) == []
