"""Count and size limits of every request message, checked before any per-element work.

One table (`request_limits`) says how many entries each repeated field of a request may hold
and how many bytes each string field. It is enforced as early as each format allows:

- protobuf (gRPC): `check_wire` walks the encoded request's records *before* it is decoded and
  stops at the first field past its limit, so a request of 4 million empty `users` costs 65
  records of work, not 4 million decoded messages (~280 ms of GIL-holding C here).
- JSON (HTTP): `check_json_structure` bounds nesting depth, the entries of any one array or
  object, and the values in all (vectorised over the raw bytes, before the parser allocates a
  single object); `check_json` then checks the parsed document against the message's fields
  (types, names, counts) before json_format walks it, so nothing downstream recurses into or
  echoes what the schema does not allow.

Transport-free beyond protobuf descriptors: both edges call these with the same limits, and the
messages name the field (with its path) and the limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from embedrec.server.errors import InvalidArgument, quoted
from embedrec.server.item_ids import MAX_ID_BYTES
from embedrec.server.limits import Limits

# Deeper than any request of the proto needs (RecommendBatchRequest.users[].where[].any_of[] is 5).
MAX_JSON_DEPTH = 32
FIELDS_PER_ITEM = 256  # ItemUpsert.fields entries


@dataclass(frozen=True)
class CountLimit:
    """At most `limit` entries (or bytes), named `name` in messages (a setting or what it
    derives from)."""

    limit: int
    name: str


# Names and values (prompt_name, where[].field, filter values...) are short; texts and ids have
# their own limits.
DEFAULT_STRING_BYTES = CountLimit(1024, "names and values")


@dataclass(frozen=True)
class LimitTable:
    """The limits of the request messages, keyed by (message name, field name): `counts` for
    repeated fields, `string_bytes` for string fields (UTF-8 bytes; None: texts, whose limit in
    characters the service checks with its own message; any string field not listed holds at
    most DEFAULT_STRING_BYTES)."""

    counts: Mapping[tuple[str, str], CountLimit]
    string_bytes: Mapping[tuple[str, str], CountLimit | None]

    def count(self, message: str, field: str) -> CountLimit | None:
        """The count limit of `message`.`field`, if it has one."""
        return self.counts.get((message, field))

    def string(self, message: str, field: str) -> CountLimit | None:
        """The byte limit of the string field `message`.`field` (None: none on the wire)."""
        return self.string_bytes.get((message, field), DEFAULT_STRING_BYTES)


def request_limits(limits: Limits, dim: int) -> LimitTable:
    """The limits of every request message under `limits`; `dim` bounds the vectors."""
    return LimitTable(_count_limits(limits, dim), _string_limits())


def _string_limits() -> Mapping[tuple[str, str], CountLimit | None]:
    # Texts are bounded by the message size here; max_chars_per_text is checked in characters later.
    text = None
    item_id = CountLimit(MAX_ID_BYTES, "item ids")
    return {
        ("EmbedRequest", "texts"): text,
        ("SimilarityRequest", "query"): text,
        ("SimilarityRequest", "candidates"): text,
        ("TextPair", "a"): text,
        ("TextPair", "b"): text,
        ("WeightedText", "text"): text,
        ("ItemUpsert", "text"): text,
        ("WeightedItem", "id"): item_id,
        ("RecommendRequest", "exclude_ids"): item_id,
        ("ItemUpsert", "id"): item_id,
        ("DeleteItemsRequest", "ids"): item_id,
        ("HideItemsRequest", "ids"): item_id,
        ("RestoreItemsRequest", "ids"): item_id,
    }


def _count_limits(limits: Limits, dim: int) -> Mapping[tuple[str, str], CountLimit]:
    texts = CountLimit(limits.max_texts_per_request, "max_texts_per_request")
    values = CountLimit(limits.max_filter_values, "max_filter_values")
    ids = CountLimit(limits.max_exclude_ids, "max_exclude_ids")
    vector = CountLimit(dim, "the model's dim")
    return {
        ("EmbedRequest", "texts"): texts,
        ("SimilarityRequest", "candidates"): CountLimit(limits.max_texts_per_request - 1, "max_texts_per_request - 1"),
        ("SimilarityRequest", "pairs"): CountLimit(limits.max_texts_per_request // 2, "max_texts_per_request / 2"),
        ("RecommendRequest", "user_vector"): vector,
        ("RecommendRequest", "texts"): texts,
        ("RecommendRequest", "items"): CountLimit(limits.max_history_items, "max_history_items"),
        ("RecommendRequest", "exclude_ids"): ids,
        ("RecommendRequest", "filter_values"): values,
        ("RecommendRequest", "where"): CountLimit(limits.max_conditions, "max_conditions"),
        ("Condition", "any_of"): values,
        ("Condition", "none_of"): values,
        ("RecommendBatchRequest", "users"): CountLimit(limits.max_batch_users, "max_batch_users"),
        ("UpsertItemsRequest", "items"): texts,
        ("ItemUpsert", "fields"): CountLimit(FIELDS_PER_ITEM, "fields per item"),
        ("StringList", "values"): values,
        ("FloatList", "values"): vector,
        ("DeleteItemsRequest", "ids"): ids,
        ("HideItemsRequest", "ids"): ids,
        ("RestoreItemsRequest", "ids"): ids,
    }


def too_long(path: str, limit: CountLimit) -> InvalidArgument:
    """The error for the string at `path` longer than `limit` UTF-8 bytes."""
    return InvalidArgument(f"{path} is longer than {limit.limit} bytes (the limit of {limit.name})")


def too_many(path: str, limit: CountLimit, count: int | None = None) -> InvalidArgument:
    """The error for `path` holding more than `limit` entries (`count` when known)."""
    has = f"{count} entries" if count is not None else f"more than {limit.limit} entries"
    return InvalidArgument(f"{path} has {has}; the limit is {limit.name}={limit.limit}")


# --- protobuf wire format -------------------------------------------------------------------

_FIXED_SIZE = {
    FieldDescriptor.TYPE_FLOAT: 4,
    FieldDescriptor.TYPE_FIXED32: 4,
    FieldDescriptor.TYPE_SFIXED32: 4,
    FieldDescriptor.TYPE_DOUBLE: 8,
    FieldDescriptor.TYPE_FIXED64: 8,
    FieldDescriptor.TYPE_SFIXED64: 8,
}
_VARINT_CONTINUATION = bytes(range(128, 256))


class _Malformed(Exception):
    """The bytes are not a protobuf message: left to the decoder to report."""


def check_wire(data: bytes, descriptor: Descriptor, table: LimitTable) -> None:
    """Raise InvalidArgument naming the first repeated field of the encoded message `data` that
    holds more entries than `table` allows, without decoding it. The walk stops at that
    field's (limit + 1)-th record; malformed bytes end it silently (the decoder reports them).
    Cost: one step per record up to the limits, whatever the message's size."""
    try:
        _walk(data, 0, len(data), descriptor, table, "")
    except (_Malformed, IndexError):
        return


def _walk(
    data: bytes,
    position: int,
    end: int,
    descriptor: Descriptor,
    table: LimitTable,
    path: str,
) -> None:
    plans = _plans(descriptor, table)
    counts: dict[int, int] = {}
    while position < end:
        tag = data[position]  # one-byte varints inline: a long run of small records is the hot path
        if tag < 0x80:
            position += 1
        else:
            tag, position = _varint(data, position, end)
        wire_type = tag & 7
        start = position
        if wire_type == 2:
            length = data[position]
            if length < 0x80:
                start = position + 1
            else:
                length, start = _varint(data, position, end)
            position = start + length
        elif wire_type == 0:
            _, position = _varint(data, position, end)
        elif wire_type == 1:
            position += 8
        elif wire_type == 5:
            position += 4
        else:
            raise _Malformed
        if position > end:
            raise _Malformed
        plan = plans.get(tag >> 3)
        if plan is None:
            continue
        field, limit, element_size, sub, string_limit = plan
        number = tag >> 3
        if field.is_repeated:
            count = counts[number] = counts.get(number, 0) + (
                1 if wire_type != 2 or element_size == 1 else _packed_entries(data, start, position, element_size)
            )
            if limit is not None and count > limit.limit:
                raise too_many(f"{path}{field.name}", limit)
        if wire_type != 2:
            continue
        if string_limit is not None and position - start > string_limit.limit:
            index = f"[{counts[number] - 1}]" if field.is_repeated else ""
            raise too_long(f"{path}{field.name}{index}", string_limit)
        if sub is not None:
            index = f"[{counts[number] - 1}]" if field.is_repeated else ""
            _walk(data, start, position, sub, table, f"{path}{field.name}{index}.")


# (field, its count limit, bytes per packed element (1: not packable, 0: varints), message to
# walk, its byte limit when a string)
_Plan = tuple[FieldDescriptor, CountLimit | None, int, Descriptor | None, CountLimit | None]


def _plans(descriptor: Descriptor, table: LimitTable) -> dict[int, _Plan]:
    """What the walk does with each field number of `descriptor`: only fields with a limit or
    a message to walk are listed."""
    plans: dict[int, _Plan] = {}
    for field in descriptor.fields:
        limit = table.count(descriptor.name, field.name)
        sub = field.message_type
        is_string = field.type == FieldDescriptor.TYPE_STRING
        string_limit = table.string(descriptor.name, field.name) if is_string else None
        if limit is None and sub is None and string_limit is None:
            continue
        if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_MESSAGE):
            element_size = 1
        else:
            element_size = _FIXED_SIZE.get(field.type, 0)
        plans[field.number] = (field, limit, element_size, sub, string_limit)
    return plans


def _packed_entries(data: bytes, start: int, stop: int, element_size: int) -> int:
    """Elements in a packed run: fixed-size ones by length, varints by their last bytes (the
    ones without the continuation bit, counted at C speed)."""
    if element_size:
        return (stop - start) // element_size
    return len(data[start:stop].translate(None, _VARINT_CONTINUATION))


def _varint(data: bytes, position: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= end or shift > 63:
            raise _Malformed
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


# --- JSON ----------------------------------------------------------------------------------


def check_json_structure(body: bytes, *, max_entries: int, max_values: int) -> None:
    """Raise InvalidArgument when the JSON text `body` nests deeper than MAX_JSON_DEPTH, has an
    array or object of more than `max_entries` entries, or more than `max_values` values in
    all; vectorised over the bytes (numpy releases the GIL), before any parsing. Malformed JSON
    may pass or be refused here: either way it gets INVALID_ARGUMENT."""
    data = np.frombuffer(body, dtype=np.uint8)
    if data.size == 0:
        return
    structural = ~_inside_strings(data)
    opens = ((data == ord("[")) | (data == ord("{"))) & structural
    closes = ((data == ord("]")) | (data == ord("}"))) & structural
    commas = (data == ord(",")) & structural
    values = int(np.count_nonzero(commas)) + int(np.count_nonzero(opens)) + 1
    if values > max_values:
        raise InvalidArgument(
            f"request body holds about {values} JSON values; no request of this route takes more than {max_values}"
        )
    depth = np.cumsum(opens.astype(np.int32) - closes.astype(np.int32), dtype=np.int32)
    deepest = int(depth.max())
    if deepest > MAX_JSON_DEPTH:
        raise InvalidArgument(f"request body nests {deepest} levels deep; the limit is {MAX_JSON_DEPTH}")
    # Entries of each container = commas at its level before the next opener of that level + 1:
    # order openers and commas by (level, position) and count commas per opener.
    positions = np.flatnonzero(opens | commas)
    if positions.size == 0:
        return
    levels = depth[positions]  # an opener: the level of its entries; a comma: the level it separates
    order = np.argsort(levels, kind="stable")
    is_opener = opens[positions][order]
    container = np.cumsum(is_opener) - 1
    comma_containers = container[~is_opener]
    if comma_containers.size == 0:
        return
    widest = int(np.bincount(comma_containers[comma_containers >= 0]).max(initial=0)) + 1
    if widest > max_entries:
        raise InvalidArgument(
            f"request body has a JSON array or object of {widest} entries; no field takes more than {max_entries}"
        )


def _inside_strings(data: np.ndarray) -> np.ndarray:
    """True for each byte inside a JSON string (from its opening quote to before its closing)."""
    quotes = np.flatnonzero(data == ord('"'))
    inside = np.zeros(data.size, dtype=np.bool_)
    if quotes.size == 0:
        return inside
    backslash = data == ord("\\")
    if backslash.any():
        # A quote is escaped when an odd run of backslashes precedes it.
        indices = np.arange(data.size, dtype=np.int32)
        last_other = np.maximum.accumulate(np.where(backslash, -1, indices))
        before = quotes - 1
        run = np.where(before >= 0, before - last_other[np.maximum(before, 0)], 0)
        quotes = quotes[run % 2 == 0]
    toggles = np.zeros(data.size, dtype=np.uint8)
    toggles[quotes] = 1
    np.cumsum(toggles, dtype=np.uint8, out=toggles)  # parity survives uint8 wrap-around
    inside = (toggles & 1).astype(np.bool_)
    return inside


def max_json_values(descriptor: Descriptor, table: LimitTable) -> tuple[int, int]:
    """(entries of the widest array or object, values in all) that a valid request of
    `descriptor` can hold under `table`: the bounds for `check_json_structure`."""
    widest = len(descriptor.fields)

    def values(message: Descriptor) -> int:
        nonlocal widest
        widest = max(widest, len(message.fields))
        total = 1
        for field in message.fields:
            one = values(field.message_type) + 1 if field.message_type is not None else 1
            if field.is_repeated:
                limit = table.count(message.name, field.name)
                count = limit.limit if limit is not None else 1
                widest = max(widest, count)
                total += count * one + 1
            else:
                total += one
        return total

    total = values(descriptor)
    return widest, total


_JSON_SCALARS: dict[int, tuple[type, ...]] = {
    FieldDescriptor.CPPTYPE_STRING: (str,),
    FieldDescriptor.CPPTYPE_BOOL: (bool,),
    FieldDescriptor.CPPTYPE_FLOAT: (int, float, str),  # "NaN", "Infinity" are the proto's JSON
    FieldDescriptor.CPPTYPE_DOUBLE: (int, float, str),
    FieldDescriptor.CPPTYPE_INT32: (int, str),  # 64-bit integers travel as strings
    FieldDescriptor.CPPTYPE_INT64: (int, str),
    FieldDescriptor.CPPTYPE_UINT32: (int, str),
    FieldDescriptor.CPPTYPE_UINT64: (int, str),
    FieldDescriptor.CPPTYPE_ENUM: (str, int),
}


def check_json(document: Any, descriptor: Descriptor, table: LimitTable, path: str = "") -> None:
    """Raise InvalidArgument naming the first field of `document` (a parsed JSON object in the
    proto's JSON mapping of `descriptor`) that is unknown, of the wrong JSON type, or holds more
    entries than `table` allows. Counts are checked before any entry is looked at; the walk goes
    no deeper than the message's own fields."""
    if not isinstance(document, dict):
        raise InvalidArgument(f"{path.rstrip('.') or 'request body'} must be a JSON object, got {quoted(document)}")
    by_name = {**descriptor.fields_by_name, **{field.json_name: field for field in descriptor.fields}}
    for key, value in document.items():
        field = by_name.get(key)
        if field is None:
            raise InvalidArgument(f"{path}{quoted(key)} is not a field of {descriptor.name}")
        if value is None:
            continue
        name = f"{path}{field.name}"
        if not field.is_repeated:
            _check_json_value(value, field, table, name, descriptor)
            continue
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if not isinstance(value, dict if is_map else list):
            raise InvalidArgument(f"{name} must be a JSON {'object' if is_map else 'array'}, got {quoted(value)}")
        limit = table.count(descriptor.name, field.name)
        if limit is not None and len(value) > limit.limit:
            raise too_many(name, limit, len(value))
        if isinstance(value, dict):
            entry_type = field.message_type
            for map_key, entry in value.items():
                entry_name = f"{name}[{quoted(map_key)}]"
                _check_json_value(map_key, entry_type.fields_by_name["key"], table, entry_name, entry_type)
                _check_json_value(entry, entry_type.fields_by_name["value"], table, entry_name, entry_type)
        else:
            for index, entry in enumerate(value):
                _check_json_value(entry, field, table, f"{name}[{index}]", descriptor)


def _check_json_value(value: Any, field: FieldDescriptor, table: LimitTable, name: str, owner: Descriptor) -> None:
    if field.message_type is not None:
        check_json(value, field.message_type, table, f"{name}.")
        return
    allowed = _JSON_SCALARS.get(field.cpp_type, ())
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise InvalidArgument(f"{name} must be a {_json_kind(field)}, got {quoted(value)}")
    if isinstance(value, str) and field.enum_type is not None and value not in field.enum_type.values_by_name:
        known = ", ".join(field.enum_type.values_by_name)
        raise InvalidArgument(f"{name} has unknown value {quoted(value)}; use one of {known}")
    if isinstance(value, str) and field.type == FieldDescriptor.TYPE_STRING:
        limit = table.string(owner.name, field.name)
        if limit is not None and _utf8_longer(value, limit.limit):
            raise too_long(name, limit)


def _utf8_longer(text: str, limit: int) -> bool:
    """Whether `text` takes more than `limit` UTF-8 bytes (1 to 4 per character: encoded only
    when its length alone cannot tell)."""
    if len(text) > limit:
        return True
    if 4 * len(text) <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def _json_kind(field: FieldDescriptor) -> str:
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return "string"
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return "boolean"
    if field.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        return "enum name or number"
    return "number"
