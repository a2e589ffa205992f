"""The request limits checked on JSON bodies: on the raw bytes before parsing, then on the
parsed document before json_format walks it (the limits: `request_limits`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from embedrec.server.edge.request_limits import LimitTable, too_long, too_many
from embedrec.server.errors import InvalidArgument, quoted

# Deeper than any request of the proto needs (RecommendBatchRequest.users[].where[].any_of[] is 5).
MAX_JSON_DEPTH = 32


def check_json_structure(body: bytes, *, max_entries: int, max_values: int) -> None:
    """Raise InvalidArgument when the JSON text `body` nests deeper than MAX_JSON_DEPTH, has an
    array or object of more than `max_entries` entries, or more than `max_values` values in
    all; vectorised over the bytes (numpy releases the GIL), before any parsing. Malformed JSON
    may pass or be refused here: either way it gets INVALID_ARGUMENT."""
    if len(body) <= min(max_entries, max_values) and body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return  # every value takes a byte and every level an opener: no bound can be exceeded
    data = np.frombuffer(body, dtype=np.uint8)
    structural = ~_inside_strings(data)
    opens = ((data == ord("[")) | (data == ord("{"))) & structural
    closes = ((data == ord("]")) | (data == ord("}"))) & structural
    commas = (data == ord(",")) & structural
    values = int(np.count_nonzero(commas)) + int(np.count_nonzero(opens)) + 1
    if values > max_values:
        raise InvalidArgument(
            f"request body holds about {values} JSON values, past the {max_values} checked before parsing "
            "(far more than any valid request of this route holds)"
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
            f"request body has a JSON array or object of {widest} entries, past the {max_entries} checked before "
            "parsing (far more than any field takes)"
        )


def _inside_strings(data: np.ndarray) -> np.ndarray:
    """True for each byte inside a JSON string (from its opening quote to before its closing)."""
    quotes = np.flatnonzero(data == ord('"'))
    if quotes.size == 0:
        return np.zeros(data.size, dtype=np.bool_)
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
    return (toggles & 1).astype(np.bool_)


def max_json_values(descriptor: Descriptor, table: LimitTable) -> tuple[int, int]:
    """(entries of the widest array or object, values in all) that a valid request of
    `descriptor` can hold under `table`: the bounds for `check_json_structure`. Computed once
    per table and message type."""
    key = "json-bounds:" + descriptor.full_name
    cached: tuple[int, int] | None = table.derived.get(key)
    if cached is None:
        cached = table.derived[key] = _max_json_values(descriptor, table)
    return cached


def _max_json_values(descriptor: Descriptor, table: LimitTable) -> tuple[int, int]:
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
    by_name = _fields_by_json_name(descriptor, table)
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


def _fields_by_json_name(descriptor: Descriptor, table: LimitTable) -> dict[str, FieldDescriptor]:
    """`descriptor`'s fields by their proto and their JSON names (built once per table)."""
    key = "json-names:" + descriptor.full_name
    cached: dict[str, FieldDescriptor] | None = table.derived.get(key)
    if cached is None:
        fields = {**descriptor.fields_by_name, **{field.json_name: field for field in descriptor.fields}}
        cached = table.derived[key] = fields
    return cached


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
