"""Channel construction shared by the synchronous and asyncio clients, and the health check.

The health check speaks grpc.health.v1 with a hand-written two-field codec, so the client needs
no package beyond grpcio, protobuf and numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def channel_options(max_message_bytes: int, extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """gRPC channel options: message size limits plus `extra` (later entries win)."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *extra,
    ]


def encode_health_request(service: str) -> bytes:
    """Wire bytes of HealthCheckRequest{service} (field 1, length-delimited)."""
    payload = service.encode()
    return b"\x0a" + _varint(len(payload)) + payload if payload else b""


def decode_health_status(data: bytes) -> str:
    """The status name in HealthCheckResponse wire bytes (field 1, varint); UNKNOWN if absent."""
    position = 0
    while position < len(data):
        key, position = _read_varint(data, position)
        if key == 0x08:
            value, position = _read_varint(data, position)
            return HEALTH_STATUS.get(value, str(value))
        if key & 7 == 2:
            length, position = _read_varint(data, position)
            position += length
        else:
            _, position = _read_varint(data, position)
    return HEALTH_STATUS[0]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, position
