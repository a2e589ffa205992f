"""Changing a catalog while it serves (UpsertItems, DeleteItems), on a store that can: the
Milvus store (`ItemStore.live()`). Texts are embedded with the served model and the items'
document prompt, vectors normalised, fields checked against the collection's."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from embedrec.results import DeleteResult, UpsertResult
from embedrec.server.catalog.fields import FieldKind
from embedrec.server.catalog.store import MAX_ID_BYTES, StoreDescription, check_distinct
from embedrec.server.errors import InvalidArgument, quoted
from embedrec.server.inference.embedding import Embedder
from embedrec.server.inference.pooling import FloatArray, l2_normalize
from embedrec.server.limits import Limits, check_count, check_texts, check_vector

# A live item's field values (Milvus's array capacity and string length: what every store holds).
MAX_FIELD_VALUES = 256  # values per item of a categorical field
MAX_FIELD_VALUE_LENGTH = 1024


@dataclass(frozen=True)
class ItemRow:
    """One item to upsert: id, unit vector, field values (categorical: a list of strings;
    numeric: a float or None), and its content hash (0 for items sent live)."""

    item_id: str
    vector: FloatArray
    fields: dict[str, Any]
    content_hash: int = 0
    text: str = ""


def check_item_id(item_id: str, *, field: str) -> None:
    """InvalidArgument naming `field` unless `item_id` is a non-blank id of at most
    MAX_ID_BYTES UTF-8 bytes."""
    if not item_id.strip():
        raise InvalidArgument(f"{field} is blank; give the item's id", field=field)
    if len(item_id.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidArgument(f"{field} is longer than {MAX_ID_BYTES} bytes", field=field)


def check_item_fields(
    categorical: Mapping[str, Sequence[str]],
    numeric: Mapping[str, float],
    kinds: Mapping[str, FieldKind],
    *,
    field: str,
) -> None:
    """InvalidArgument naming `field`.fields[NAME] unless every field is one of the items' with
    that kind, a categorical one has at most MAX_FIELD_VALUES values of at most
    MAX_FIELD_VALUE_LENGTH bytes, and a numeric one is finite."""
    known = ", ".join(f"{name} ({kind})" for name, kind in sorted(kinds.items())) or "none"
    for name, values in categorical.items():
        where = f"{field}.fields[{quoted(name)}]"
        if kinds.get(name) != "categorical":
            raise InvalidArgument(f"{where}: not a categorical field of the items (they have: {known})", field=where)
        if len(values) > MAX_FIELD_VALUES:
            raise InvalidArgument(f"{where} has {len(values)} values; the limit is {MAX_FIELD_VALUES}", field=where)
        if any(len(value.encode("utf-8")) > MAX_FIELD_VALUE_LENGTH for value in values):
            raise InvalidArgument(f"{where} has a value longer than {MAX_FIELD_VALUE_LENGTH} bytes", field=where)
    for name, number in numeric.items():
        where = f"{field}.fields[{quoted(name)}]"
        if kinds.get(name) != "numeric":
            raise InvalidArgument(f"{where}: not a numeric field of the items (they have: {known})", field=where)
        if not math.isfinite(number):
            raise InvalidArgument(f"{where} is {number}; give a finite number (leave it out for none)", field=where)


class LiveItemStore(Protocol):
    """An item store that takes changes while serving."""

    def describe(self) -> StoreDescription:
        """Its identity, size, fields and prompt."""
        ...

    def upsert(self, rows: Sequence[ItemRow], deadline: float | None) -> UpsertResult:
        """Insert or replace `rows`; blocking."""
        ...

    def delete(self, item_ids: list[str], deadline: float | None) -> DeleteResult:
        """Remove `item_ids` (unknown ones reported); blocking."""
        ...


@dataclass(frozen=True)
class ItemUpsert:
    """One item to insert or replace live: its id, a text (embedded with the items' document
    prompt) or a vector (normalised), and its field values by name (categorical: strings;
    numeric: one number)."""

    item_id: str
    text: str | None = None
    vector: Sequence[float] | None = None
    categorical: Mapping[str, Sequence[str]] = field(default_factory=dict)
    numeric: Mapping[str, float] = field(default_factory=dict)


async def upsert_items(
    store: LiveItemStore, upserts: Sequence[ItemUpsert], embedder: Embedder, limits: Limits, *, timeout: float | None
) -> UpsertResult:
    """Insert or replace `upserts` in the served collection: texts embedded with the served
    model and the items' document prompt, vectors normalised, fields checked against the
    collection's. Raises InvalidArgument naming items[i] on bad input."""
    described = store.describe()
    if not upserts:
        raise InvalidArgument(
            f"items is empty; send 1 to max_texts_per_request={limits.max_texts_per_request}", field="items"
        )
    check_count(len(upserts), limits.max_texts_per_request, field="items", limit_name="max_texts_per_request")
    check_distinct([one.item_id for one in upserts], "items")
    vectors: dict[int, FloatArray] = {}
    texts: list[tuple[int, str]] = []
    for index, one in enumerate(upserts):
        name = f"items[{index}]"
        check_item_id(one.item_id, field=f"{name}.id")
        if (one.text is None) == (one.vector is None):
            raise InvalidArgument(f"{name}: give exactly one of text and vector", field=name)
        if one.vector is not None:
            vectors[index] = l2_normalize(check_vector(one.vector, described.dim, field=f"{name}.vector")[None, :])[0]
        else:
            assert one.text is not None
            texts.append((index, one.text))
        check_item_fields(one.categorical, one.numeric, described.fields, field=name)
    if texts:
        for index, text in texts:
            check_texts([text], limits, field=f"items[{index}].text")
        embedded = await embedder.embed(
            [text for _, text in texts],
            normalize=True,
            prompt_name=described.prompt_name,
            timeout=timeout,
            field_name="items[].text",
        )
        vectors.update({index: vector for (index, _), vector in zip(texts, embedded.vectors, strict=True)})
    rows = [
        ItemRow(
            one.item_id,
            vectors[index],
            {**{k: list(v) for k, v in one.categorical.items()}, **one.numeric},
            text=one.text or "",
        )
        for index, one in enumerate(upserts)
    ]
    deadline = None if timeout is None else time.monotonic() + timeout
    return await asyncio.to_thread(store.upsert, rows, deadline)


async def delete_items(
    store: LiveItemStore, item_ids: Sequence[str], limits: Limits, *, timeout: float | None
) -> DeleteResult:
    """Remove `item_ids` from the served collection (unknown ids are reported). Raises InvalidArgument past
    max_exclude_ids ids or for an empty list."""
    if not item_ids:
        raise InvalidArgument(f"ids is empty; send 1 to max_exclude_ids={limits.max_exclude_ids} ids", field="ids")
    check_count(len(item_ids), limits.max_exclude_ids, field="ids", limit_name="max_exclude_ids")
    deadline = None if timeout is None else time.monotonic() + timeout
    return await asyncio.to_thread(store.delete, list(item_ids), deadline)
