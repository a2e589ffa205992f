"""The request limits checked on protobuf's wire format, before a request is decoded.

Decoding a hostile message is itself the cost (4 million empty `users` in 8 MB: ~280 ms of C
that holds the GIL), so `check_wire` walks the encoded records, counting each repeated field and
measuring each string, and stops at the first one past its limit (`request_limits.LimitTable`).
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from embedrec.server.edge.request_limits import CountLimit, LimitTable, too_long, too_many

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
        else:
            position = _skip_value(data, position, end, wire_type, tag >> 3)
            if wire_type == 3:  # a group (only as an unknown field here): skipped, or the walk would end
                continue
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
    a message to walk are listed. Built once per table and message type."""
    key = "wire:" + descriptor.full_name
    cached: dict[int, _Plan] | None = table.derived.get(key)
    if cached is not None:
        return cached
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
    table.derived[key] = plans
    return plans


def _packed_entries(data: bytes, start: int, stop: int, element_size: int) -> int:
    """Elements in a packed run: fixed-size ones by length, varints by their last bytes (the
    ones without the continuation bit, counted at C speed)."""
    if element_size:
        return (stop - start) // element_size
    return len(data[start:stop].translate(None, _VARINT_CONTINUATION))


def _skip_value(data: bytes, position: int, end: int, wire_type: int, number: int) -> int:
    """The position after the value of field `number` of `wire_type` that starts at `position`."""
    if wire_type == 0:
        return _varint(data, position, end)[1]
    if wire_type == 1:
        return position + 8
    if wire_type == 5:
        return position + 4
    if wire_type == 2:
        length, position = _varint(data, position, end)
        return position + length
    if wire_type == 3:
        return _skip_group(data, position, end, number)
    raise _Malformed


def _skip_group(data: bytes, position: int, end: int, number: int) -> int:
    """The position after the end-group tag of group `number` whose start tag ends at `position`."""
    while position < end:
        tag, position = _varint(data, position, end)
        if tag & 7 == 4:
            if tag >> 3 != number:
                raise _Malformed
            return position
        position = _skip_value(data, position, end, tag & 7, tag >> 3)
    raise _Malformed


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
