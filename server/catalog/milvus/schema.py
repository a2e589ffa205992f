"""The layout of an embedrec collection in Milvus, shared by the store (`milvus.store`) and the
build that syncs a catalog into it (`embedrec.export.milvus_sync`): field names, limits, the
collection properties that record the model and the entity of one item."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedrec.server.catalog.fields import FieldKind
from embedrec.server.catalog.live import MAX_FIELD_VALUE_LENGTH, MAX_FIELD_VALUES, ItemRow
from embedrec.server.catalog.milvus.index import VectorIndex
from embedrec.server.catalog.store import MAX_ID_BYTES
from embedrec.server.errors import ConfigurationError

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


def create_collection(
    client: Any, collection: str, dim: int, kinds: dict[str, FieldKind], vector_index: VectorIndex, timeout: float
) -> None:
    """Create `collection` in embedrec's layout: the vector of `dim`, the catalog's fields
    `kinds`, indexed by `vector_index`."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(ID, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_LENGTH)
    schema.add_field(POSITION, DataType.INT64)
    schema.add_field(HIDDEN, DataType.BOOL)
    schema.add_field(CONTENT_HASH, DataType.INT64)
    schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field(TEXT, DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
    for name, kind in kinds.items():
        if kind == "numeric":
            schema.add_field(milvus_field(name), DataType.DOUBLE)  # NaN: no value (LAYOUT)
        else:
            schema.add_field(
                milvus_field(name),
                DataType.ARRAY,
                element_type=DataType.VARCHAR,
                max_capacity=MAX_FIELD_VALUES,
                max_length=MAX_FIELD_VALUE_LENGTH,
            )
    index_params = client.prepare_index_params()
    # Inner product on unit rows is the cosine; FLAT (the default) scores every row: exact.
    vector_index.add_to(index_params, VECTOR)
    client.create_collection(collection, schema=schema, index_params=index_params, timeout=timeout)
