"""The layout of an embedrec collection in Milvus, shared by the store (`milvus_store`) and the
build that syncs a catalog into it (`embedrec.export.milvus_sync`): field names, limits, the
collection properties that record the model, the entity of one item, and the checks of a live
item's id and fields."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedrec.server.catalog.fields import FieldKind
from embedrec.server.catalog.item_ids import MAX_ID_BYTES
from embedrec.server.catalog.topk import FloatArray
from embedrec.server.errors import ConfigurationError, InvalidArgument, quoted

# 2: a numeric field without a value holds NaN (layout 1 used a nullable field, which Milvus
# servers before 2.5 cannot hold; NaN never satisfies a comparison, on every version).
LAYOUT = "2"
ID = "id"
VECTOR = "vector"
POSITION = "position"
HIDDEN = "hidden"
CONTENT_HASH = "content_hash"
# The item's text, for a rerank stage: its first MAX_TEXT_BYTES bytes (a cross-encoder reads far
# fewer tokens). Collections built before it was stored lack the field: a sync rebuilds them.
TEXT = "text"
MAX_TEXT_BYTES = 65_535
FIELD_PREFIX = "f_"
MAX_ID_LENGTH = MAX_ID_BYTES
MAX_FIELD_VALUES = 256  # values per item of a categorical field
MAX_FIELD_VALUE_LENGTH = 1024
# Collection properties (all strings).
PROPERTY_PREFIX = "embedrec."
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")


def milvus_field(name: str) -> str:
    """The Milvus field holding the catalog field `name`; ValueError for a name Milvus cannot
    hold (letters, digits and underscores, not starting with a digit)."""
    if not _FIELD_NAME.match(name):
        raise ValueError(
            f"field name {name!r} cannot be a Milvus field: use letters, digits and underscores, "
            "not starting with a digit"
        )
    return FIELD_PREFIX + name


def check_item_id(item_id: str, *, field: str) -> None:
    """InvalidArgument naming `field` unless `item_id` is a non-blank id of at most
    MAX_ID_LENGTH UTF-8 bytes."""
    if not item_id.strip():
        raise InvalidArgument(f"{field} is blank; give the item's id", field=field)
    if len(item_id.encode("utf-8")) > MAX_ID_LENGTH:
        raise InvalidArgument(f"{field} is longer than {MAX_ID_LENGTH} bytes", field=field)


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


@dataclass(frozen=True)
class CollectionInfo:
    """What a collection's properties say about its items."""

    layout: str
    model_onnx_sha256: str
    model_name: str
    dim: int
    prompt_name: str
    prompt: str
    filter_field: str
    fields: dict[str, FieldKind]
    items_sha256: str
    next_position: int

    def properties(self) -> dict[str, str]:
        """The collection properties recording this."""
        return {
            PROPERTY_PREFIX + "layout": self.layout,
            PROPERTY_PREFIX + "model_onnx_sha256": self.model_onnx_sha256,
            PROPERTY_PREFIX + "model_name": self.model_name,
            PROPERTY_PREFIX + "dim": str(self.dim),
            PROPERTY_PREFIX + "prompt_name": self.prompt_name,
            PROPERTY_PREFIX + "prompt": self.prompt,
            PROPERTY_PREFIX + "filter_field": self.filter_field,
            PROPERTY_PREFIX + "fields": json.dumps(self.fields, sort_keys=True),
            PROPERTY_PREFIX + "items_sha256": self.items_sha256,
            PROPERTY_PREFIX + "next_position": str(self.next_position),
        }

    @classmethod
    def from_properties(cls, properties: dict[str, str], where: str) -> CollectionInfo:
        """Read the properties; ConfigurationError naming `where` when they are not embedrec's."""
        values = {
            key[len(PROPERTY_PREFIX) :]: value for key, value in properties.items() if key.startswith(PROPERTY_PREFIX)
        }
        try:
            fields = json.loads(values["fields"])
            return cls(
                layout=values["layout"],
                model_onnx_sha256=values["model_onnx_sha256"],
                model_name=values["model_name"],
                dim=int(values["dim"]),
                prompt_name=values["prompt_name"],
                prompt=values["prompt"],
                filter_field=values["filter_field"],
                fields={str(name): kind for name, kind in fields.items()},
                items_sha256=values["items_sha256"],
                next_position=int(values["next_position"]),
            )
        except (KeyError, ValueError, AttributeError) as error:
            raise ConfigurationError(
                f"{where} was not built by embedrec (its properties lack {error}); "
                "build it with embedrec export-items --store milvus"
            ) from None


def clipped_text(text: str) -> str:
    """`text` cut to at most MAX_TEXT_BYTES UTF-8 bytes, on a character boundary."""
    data = text.encode("utf-8")
    return text if len(data) <= MAX_TEXT_BYTES else data[:MAX_TEXT_BYTES].decode("utf-8", errors="ignore")


def alter_properties(client: Any, collection: str, properties: dict[str, str], timeout: float | None) -> None:
    """Set `properties` on `collection`, durably. Sent twice: Milvus 2.3.5 persists an alter's
    previous properties, so after a restart the last alter was lost (milvus-io/milvus#30144,
    fixed in 2.3.6; measured here with the `milvus` package's 2.3.5). The same values twice make
    the persisted ones right on every version."""
    for _ in range(2):
        client.alter_collection_properties(collection, properties=properties, timeout=timeout)


@dataclass(frozen=True)
class ItemRow:
    """One item to upsert: id, unit vector, field values (categorical: a list of strings;
    numeric: a float or None), and its content hash (0 for items sent live)."""

    item_id: str
    vector: FloatArray
    fields: dict[str, Any]
    content_hash: int = 0
    text: str = ""


def entity(row: ItemRow, position: int, hidden: bool, kinds: Mapping[str, FieldKind]) -> dict[str, Any]:
    """The Milvus entity of `row` in a collection with the fields `kinds` (a categorical field
    without values holds an empty list, a numeric one NaN)."""
    record: dict[str, Any] = {
        ID: row.item_id,
        VECTOR: np.asarray(row.vector, dtype=np.float32).tolist(),
        POSITION: position,
        HIDDEN: hidden,
        CONTENT_HASH: row.content_hash,
        TEXT: clipped_text(row.text),
    }
    for name, kind in kinds.items():
        value = row.fields.get(name)
        if kind == "categorical":
            record[milvus_field(name)] = list(value or ())
        else:
            record[milvus_field(name)] = math.nan if value is None else float(value)
    return record
