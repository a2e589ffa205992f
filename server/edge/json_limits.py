"""The request limits checked on JSON bodies: on the raw bytes before parsing, then on the
parsed document before json_format walks it (the limits: `request_limits`)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from embedrec.server.edge.request_limits import IntegerRange, LimitTable, too_long, too_many
from embedrec.server.errors import MAX_QUOTED_CHARS, InvalidArgument, quoted
from embedrec.server.limits import integer_range

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


# Numbers must be JSON numbers on every route: the proto's JSON mapping would also take "3",
# "NaN" or "Infinity" in quotes, but no request field has a use for them (no 64-bit integers, no
# non-finite weights), and one rule for every route is easier to get right than two.
_JSON_SCALARS: dict[int, tuple[type, ...]] = {
    FieldDescriptor.CPPTYPE_STRING: (str,),
    FieldDescriptor.CPPTYPE_BOOL: (bool,),
    FieldDescriptor.CPPTYPE_FLOAT: (int, float),
    FieldDescriptor.CPPTYPE_DOUBLE: (int, float),
    FieldDescriptor.CPPTYPE_INT32: (int, float),  # a float only when integral (2.0), as json_format
    FieldDescriptor.CPPTYPE_INT64: (int, float),
    FieldDescriptor.CPPTYPE_UINT32: (int, float),
    FieldDescriptor.CPPTYPE_UINT64: (int, float),
    FieldDescriptor.CPPTYPE_ENUM: (str, int),
}
_INTEGER_TYPES = {
    FieldDescriptor.CPPTYPE_INT32: IntegerRange(-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: IntegerRange(-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: IntegerRange(0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: IntegerRange(0, 2**64 - 1),
}
# A message field given a bare string: the object it takes, for the message to show.
_OBJECT_OF_STRING = {"WeightedText": "text", "WeightedItem": "id"}


def check_json(document: Any, descriptor: Descriptor, table: LimitTable, path: str = "") -> None:
    """Raise InvalidArgument naming the first field of `document` (a parsed JSON object in the
    proto's JSON mapping of `descriptor`) that is unknown, of the wrong JSON type, or holds more
    entries than `table` allows. Counts are checked before any entry is looked at; the walk goes
    no deeper than the message's own fields."""
    if not isinstance(document, dict):
        raise InvalidArgument(_not_an_object(document, descriptor, path), field=path.rstrip(".") or None)
    by_name = _fields_by_json_name(descriptor, table)
    for owner, name in table.required:
        field = descriptor.fields_by_name[name] if owner == descriptor.name else None
        if field is not None and document.get(name, document.get(field.json_name)) is None:
            raise InvalidArgument(
                f"{path}{name} is missing: {_json_kind(field, table.ranges.get((owner, name)))}", field=f"{path}{name}"
            )
    for key, value in document.items():
        field = by_name.get(key)
        if field is None:
            raise InvalidArgument(f"{path}{quoted(key)} is not a field of {descriptor.name}", field=f"{path}{key}")
        if value is None:
            continue
        name = f"{path}{field.name}"
        if not field.is_repeated:
            _check_json_value(value, field, table, name, descriptor)
            continue
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if not isinstance(value, dict if is_map else list):
            kind = "object" if is_map else "array"
            example = "" if is_map else _array_example(value, field)
            raise InvalidArgument(f"{name} must be a JSON {kind}{example}, got {quoted(value)}", field=name)
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
    integers = _INTEGER_TYPES.get(field.cpp_type)
    wrong_type = not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)
    if integers is not None and not wrong_type:
        wrong_type = isinstance(value, float) and not value.is_integer()
        if not wrong_type and not integers.low <= value <= integers.high:
            wrong_type = True  # json_format would refuse it past the type's range
    if wrong_type:
        kind = _json_kind(field, table.ranges.get((owner.name, field.name)))
        raise InvalidArgument(f"{name} must be {kind}, got {quoted(value)}{quoted_number_hint(value)}", field=name)
    if isinstance(value, str) and field.enum_type is not None and value not in field.enum_type.values_by_name:
        known = ", ".join(field.enum_type.values_by_name)
        raise InvalidArgument(f"{name} has unknown value {quoted(value)}; use one of {known}", field=name)
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


def _json_kind(field: FieldDescriptor, valid: IntegerRange | None = None) -> str:
    """What `field` takes, as a message says it ("an integer from 1 to 1000 (max_k)")."""
    if field.message_type is not None:
        return f"a JSON object ({field.message_type.name})"
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return "a string"
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return "true or false"
    if field.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        return f"one of {', '.join(field.enum_type.values_by_name)}"
    integers = valid or _INTEGER_TYPES.get(field.cpp_type)
    if integers is not None:
        return integer_range(integers.low, integers.high, integers.name)
    return "a number"


def quoted_number_hint(value: Any) -> str:
    """What to change when `value` is a number in quotes (which no route accepts)."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return " (a string: send the number without quotes)"


def _array_example(value: Any, field: FieldDescriptor) -> str:
    """ " such as [...]": the array a lone `value` of the repeated `field` belongs in, if clear."""
    if isinstance(value, str):
        value = value[:MAX_QUOTED_CHARS]
        key = _OBJECT_OF_STRING.get(field.message_type.name) if field.message_type is not None else None
        entry: Any = {key: value} if key is not None else (value if field.message_type is None else None)
    else:
        numeric = isinstance(value, int | float) and not isinstance(value, bool) and field.message_type is None
        entry = value if numeric else None
    return "" if entry is None else f" such as [{json.dumps(entry, ensure_ascii=False)}]"


def _not_an_object(value: Any, descriptor: Descriptor, path: str) -> str:
    """The message for `value` where a JSON object of `descriptor` belongs, with the object a
    bare string should have been (texts: [{"text": "mouse"}], not ["mouse"])."""
    where = path.rstrip(".") or "request body"
    key = _OBJECT_OF_STRING.get(descriptor.name)
    if key is not None and isinstance(value, str):
        example = json.dumps({key: value[:MAX_QUOTED_CHARS]}, ensure_ascii=False)
        return f"{where} must be a JSON object such as {example}, got {quoted(value)}"
    return f"{where} must be a JSON object ({descriptor.name}), got {quoted(value)}"
