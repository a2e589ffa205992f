"""Item build into Milvus: a built item directory → a Milvus collection, kept in sync.

`embedrec export-items --store milvus` first builds (or incrementally refreshes) the item
directory as for the memory-mapped store: that step owns catalog validation, embedding with the
server's encoder, resumability and change detection. This module then makes the collection equal
to that build:

- a new collection gets every row, in catalog order (`position` = the row, which orders equal
  scores as the matrix does), the build's hidden ids flagged;
- an existing one built with the same model, prompt and fields is updated in place: rows whose
  sync hash (over the row's vector and field values) differs, and new rows, are upserted; ids
  gone from the catalog are deleted. A kept item keeps its position and hidden flag; a new one
  goes to the end of the catalog order. The catalog is the truth: ids upserted live
  (UpsertItems) that it lacks are deleted too, and live changes to its items are overwritten;
- a collection built with another model, prompt or field set is dropped and rebuilt (its vectors
  would not be comparable).

The vectors are indexed as asked (milvus.index: FLAT, exact, by default; HNSW or IVF_FLAT); an
existing collection with another index keeps its rows and gets the new index after the rows are
synced (Milvus drops an index only from a released collection: searches fail until it is loaded
again). Then flush (sealed segments search ~30x faster than growing ones), wait for the index and
load; the collection's properties record the model (the server refuses another model's
collection), the index and the build. With an approximate index the sync returns only once Milvus
searches the index it built for every row (milvus.readiness: until then Milvus 2.3 answers from an
interim index whose recall no effort setting raises), printing a progress line meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedrec.server.catalog.fields import CategoricalColumn, FieldKind, NumericColumn
from embedrec.server.catalog.live import MAX_FIELD_VALUE_LENGTH, MAX_FIELD_VALUES, ItemRow
from embedrec.server.catalog.milvus.calls import connect, milvus_errors
from embedrec.server.catalog.milvus.index import FLAT, INDEX_PROPERTY, VectorIndex
from embedrec.server.catalog.milvus.readiness import IndexReadiness, is_milvus_server, wait_until_serving
from embedrec.server.catalog.milvus.schema import (
    CONTENT_HASH,
    HIDDEN,
    ID,
    LAYOUT,
    MAX_ID_LENGTH,
    POSITION,
    TEXT,
    VECTOR,
    CollectionInfo,
    alter_properties,
    create_collection,
    entity,
    milvus_field,
)
from embedrec.server.catalog.mmap.store import ItemIndex
from embedrec.server.errors import ConfigurationError

UPSERT_ROWS = 2_000
SCAN_ROWS = 10_000
PROGRESS_EVERY_S = 5.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncResult:
    """What a sync did: rows unchanged, upserted (new or changed), deleted; the count now."""

    unchanged: int
    upserted: int
    deleted: int
    item_count: int
    recreated: bool
    index: str  # the collection's vector index now (VectorIndex.describe)
    # Seconds the sync waited for Milvus to search the built index (0 for FLAT or Milvus Lite),
    # and whether it does now (False: the wait ran out; the server reports the index loading).
    index_wait_s: float = 0.0
    index_serving: bool = True


def sync_to_milvus(
    items_dir: Path,
    uri: str,
    collection: str,
    *,
    token: str = "",
    timeout: float = 120.0,
    progress: bool = True,
    vector_index: VectorIndex = FLAT,
    wait_serving: bool = True,
) -> SyncResult:
    """Make `collection` at `uri` hold exactly the items of the build in `items_dir`, its vectors
    indexed by `vector_index` (see the module docstring); with an approximate index, return once
    Milvus searches it for every row (at most `timeout` more seconds; `wait_serving` False: at
    once, as syncs did before). Raises ConfigurationError when Milvus is unreachable or refuses."""
    # One sync reads top to bottom (open or create, diff and upsert, delete, record, index), each
    # step a named helper.
    items = ItemIndex(items_dir.resolve(), scan="float32")  # reads rows only: no codes needed
    kinds = {name: column.kind for name, column in items.columns.items()}
    for name in kinds:
        milvus_field(name)  # a name Milvus cannot hold fails before anything is written
    client = connect(uri, token, timeout)
    where = f"milvus {uri} collection {collection}"
    try:
        existing, recreated, next_position, index_changes = _prepare(
            client, collection, items, kinds, vector_index, timeout, where
        )
        hidden = set(items.hidden.snapshot.ids) if recreated else set()
        upsert = _upsert_changed(client, collection, items, kinds, existing, hidden, next_position, timeout, progress)
        unchanged, upserted, next_position = upsert
        removed = list(existing)
        _delete(client, collection, removed, timeout)
        _record(client, collection, items, kinds, next_position, vector_index, timeout)
        client.flush(collection, timeout=timeout)
        if index_changes:
            _replace_index(client, collection, vector_index, timeout, where)
        _wait_for_index(client, collection, timeout)
        client.load_collection(collection, timeout=timeout)
        waited, serving = 0.0, not vector_index.approximate
        if wait_serving:
            waited, serving = _wait_until_searched(client, uri, collection, vector_index, timeout, progress)
        count = int(client.query(collection, filter="", output_fields=["count(*)"], timeout=timeout)[0]["count(*)"])
    except milvus_errors() as error:
        raise ConfigurationError(f"{where}: {error}") from None
    logger.info(
        "%s: %d items (%d unchanged, %d upserted, %d deleted%s)",
        where,
        count,
        unchanged,
        upserted,
        len(removed),
        ", collection created" if recreated else "",
    )
    return SyncResult(
        unchanged, upserted, len(removed), count, recreated, vector_index.describe(), round(waited, 1), serving
    )


def _upsert_changed(
    client: Any,
    collection: str,
    items: ItemIndex,
    kinds: dict[str, FieldKind],
    existing: dict[str, tuple[int, int, bool]],
    hidden: set[str],
    next_position: int,
    timeout: float,
    progress: bool,
) -> tuple[int, int, int]:
    """Upsert every row of `items` whose sync hash differs from its row in `existing` (popping the
    ids it sees, so what is left there is to delete), in batches of UPSERT_ROWS; a new row takes the
    next position and is hidden when its id is in `hidden`. Rows unchanged, rows upserted, the next
    free position."""
    texts = items.texts
    unchanged = upserted = 0
    batch: list[dict[str, Any]] = []
    bar = _progress_bar(len(items), progress)
    for row, item_id in enumerate(_ids(items)):
        fields = _field_values(items, row)
        vector = np.asarray(items.matrix[row], dtype=np.float32)
        text = texts.texts_at([row])[0] if texts is not None else ""
        sync_hash = _sync_hash(vector, fields, text)
        previous = existing.pop(item_id, None)
        if previous is not None and previous[0] == sync_hash:
            unchanged += 1
        else:
            if previous is not None:
                position, is_hidden = previous[1], previous[2]
            else:
                position, is_hidden = next_position, item_id in hidden
                next_position += 1
            _check_id(item_id)
            batch.append(entity(ItemRow(item_id, vector, fields, sync_hash, text), position, is_hidden, kinds))
            if len(batch) == UPSERT_ROWS:
                client.upsert(collection, batch, timeout=timeout)
                upserted += len(batch)
                batch = []
        bar.update(1)
    if batch:
        client.upsert(collection, batch, timeout=timeout)
        upserted += len(batch)
    bar.close()
    return unchanged, upserted, next_position


def _delete(client: Any, collection: str, removed: list[str], timeout: float) -> None:
    """Delete the ids `removed` from `collection`, SCAN_ROWS at a time."""
    for start in range(0, len(removed), SCAN_ROWS):
        client.delete(collection, ids=removed[start : start + SCAN_ROWS], timeout=timeout)


def _record(
    client: Any,
    collection: str,
    items: ItemIndex,
    kinds: dict[str, FieldKind],
    next_position: int,
    vector_index: VectorIndex,
    timeout: float,
) -> None:
    """Record the build `items` came from (model, prompt, fields, next position) and the vector
    index in `collection`'s properties."""
    manifest = items.manifest
    info = CollectionInfo(
        layout=LAYOUT,
        model_onnx_sha256=manifest.model_onnx_sha256,
        model_name=manifest.model_name,
        dim=manifest.dim,
        prompt_name=manifest.prompt_name,
        prompt=manifest.prompt,
        filter_field=manifest.filter_field,
        fields=kinds,
        items_sha256=manifest.items_sha256,
        next_position=next_position,
    )
    properties = {**info.properties(), INDEX_PROPERTY: vector_index.property_value()}
    alter_properties(client, collection, properties, timeout)


def _prepare(
    client: Any,
    collection: str,
    items: ItemIndex,
    kinds: dict[str, FieldKind],
    vector_index: VectorIndex,
    timeout: float,
    where: str,
) -> tuple[dict[str, tuple[int, int, bool]], bool, int, bool]:
    """The existing rows (id -> (sync hash, position, hidden)) of a collection this build can
    update in place, else a fresh collection; whether it was (re)created; its next position;
    whether its index is not `vector_index` (replaced once the rows are synced)."""
    manifest = items.manifest
    if client.has_collection(collection, timeout=timeout):
        described = client.describe_collection(collection, timeout=timeout)
        try:
            info = CollectionInfo.from_properties(dict(described.get("properties") or {}), where)
        except ConfigurationError:
            info = None
        has_texts = any(field.get("name") == TEXT for field in described.get("fields", []))
        compatible = info is not None and (
            has_texts  # collections built before texts were stored cannot gain the field: rebuilt
            and info.layout == LAYOUT
            and info.model_onnx_sha256 == manifest.model_onnx_sha256
            and info.prompt == manifest.prompt
            and info.dim == manifest.dim
            and info.fields == kinds
            and info.filter_field == manifest.filter_field
        )
        if compatible and info is not None:
            index_changes = VectorIndex.from_properties(dict(described.get("properties") or {}), where) != vector_index
            return _existing_rows(client, collection, timeout), False, info.next_position, index_changes
        logger.warning(
            "%s was built with another model, prompt or fields, or without item texts: dropping and rebuilding it",
            where,
        )
        client.drop_collection(collection, timeout=timeout)
    create_collection(client, collection, manifest.dim, kinds, vector_index, timeout)
    return {}, True, 0, False


def _replace_index(client: Any, collection: str, vector_index: VectorIndex, timeout: float, where: str) -> None:
    """Drop the vector index of `collection` and create `vector_index` (the rows stay). Milvus
    drops an index only from a released collection: searches fail until the load that follows."""
    logger.info("%s: replacing its vector index with %s", where, vector_index.describe())
    client.release_collection(collection, timeout=timeout)
    for name in client.list_indexes(collection, field_name=VECTOR, timeout=timeout):
        client.drop_index(collection, name, timeout=timeout)
    index_params = client.prepare_index_params()
    vector_index.add_to(index_params, VECTOR)
    client.create_index(collection, index_params, timeout=timeout)


def _wait_for_index(client: Any, collection: str, timeout: float) -> None:
    """Wait (up to `timeout`) until the vector index covers every flushed row, so the first
    searches after the sync use it."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        described = client.describe_index(collection, VECTOR, timeout=timeout)
        if int(described.get("pending_index_rows", 0) or 0) == 0:
            return
        time.sleep(0.5)
    logger.warning(
        "collection %s: its index was still building after %.0f s; searches use it once built", collection, timeout
    )


def _wait_until_searched(
    client: Any, uri: str, collection: str, vector_index: VectorIndex, timeout: float, progress: bool
) -> tuple[float, bool]:
    """Wait (up to `timeout`) until Milvus searches `vector_index` for every row; the seconds
    waited and whether it does. An exact index (and Milvus Lite, which cannot tell) waits for
    nothing: a growing segment's rows are scanned exactly under FLAT."""
    if not vector_index.approximate or not is_milvus_server(uri):
        return 0.0, True
    started = time.monotonic()
    last_line = [0.0]

    def report(readiness: IndexReadiness, waited: float) -> None:
        if progress and waited - last_line[0] >= PROGRESS_EVERY_S:
            last_line[0] = waited
            line = f"waiting for Milvus to search the built index: {readiness.describe()} ({waited:.0f} s)"
            print(line, file=sys.stderr)

    readiness = wait_until_serving(client, collection, timeout, on_progress=report)
    waited = time.monotonic() - started
    if readiness is not None and not readiness.serving:
        logger.warning("%s: after %.0f s %s; searches are worse until then", collection, waited, readiness.describe())
        return waited, False
    if progress and waited >= 1.0:
        print(f"Milvus searches the built index ({waited:.0f} s after loading)", file=sys.stderr)
    return waited, True


def _existing_rows(client: Any, collection: str, timeout: float) -> dict[str, tuple[int, int, bool]]:
    iterator = client.query_iterator(
        collection, batch_size=SCAN_ROWS, filter="", output_fields=[ID, CONTENT_HASH, POSITION, HIDDEN], timeout=timeout
    )
    rows: dict[str, tuple[int, int, bool]] = {}
    while batch := iterator.next():
        rows.update({row[ID]: (int(row[CONTENT_HASH]), int(row[POSITION]), bool(row[HIDDEN])) for row in batch})
    iterator.close()
    return rows


def _ids(index: ItemIndex) -> Iterator[str]:
    for start in range(0, len(index), SCAN_ROWS):
        yield from index.ids.ids_at(np.arange(start, min(start + SCAN_ROWS, len(index)), dtype=np.int64))


def _field_values(index: ItemIndex, row: int) -> dict[str, Any]:
    """The row's field values as Milvus holds them: categorical -> list of strings (checked
    against Milvus's limits), numeric -> float (NaN: none)."""
    values: dict[str, Any] = {}
    for name, column in index.columns.items():
        if isinstance(column, NumericColumn):
            values[name] = float(column.values[row])
        elif isinstance(column, CategoricalColumn):
            labels = [column.values[code] for code in column.value_codes(row).tolist() if code >= 0]
            labels = [label for label in labels if label]
            if len(labels) > MAX_FIELD_VALUES or any(len(label.encode()) > MAX_FIELD_VALUE_LENGTH for label in labels):
                raise ConfigurationError(
                    f"item at row {row}: field {name!r} has more than {MAX_FIELD_VALUES} values or one longer "
                    f"than {MAX_FIELD_VALUE_LENGTH} bytes (Milvus's limits)"
                )
            values[name] = labels
    return values


def _sync_hash(vector: np.ndarray, fields: dict[str, Any], text: str) -> int:
    """64 bits (signed, as Milvus's INT64) over the row's vector bytes, field values and text."""
    digest = hashlib.blake2b(vector.tobytes(), digest_size=8)
    digest.update(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    digest.update(b"\0" + text.encode("utf-8"))
    return int.from_bytes(digest.digest(), "little", signed=True)


def _check_id(item_id: str) -> None:
    if len(item_id.encode("utf-8")) > MAX_ID_LENGTH:
        raise ConfigurationError(f"item id {item_id[:64]!r}… is longer than {MAX_ID_LENGTH} bytes (Milvus's limit)")


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="item", desc="syncing Milvus", disable=not enabled, file=sys.stderr)
