"""Registering the embedrec service on a gRPC server with request decoding that cannot crash.

The generated `add_EmbedRecServicer_to_server` decodes requests with `FromString`, and a
request that fails to decode (invalid UTF-8 in a string field, a broken message) becomes
INTERNAL before any of our code runs. Here every method gets a decoder that hands such a
request to the servicer as `UndecodableRequest`, which answers INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from embedrec.v1 import embedrec_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["EmbedRec"]
ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["EmbedRecAdmin"]


@dataclass(frozen=True)
class UndecodableRequest:
    """A request whose bytes are not a valid message of the method's request type."""

    type_name: str
    reason: str


def _decoder(message_class: type[Message]) -> Callable[[bytes], Message | UndecodableRequest]:
    def decode(data: bytes) -> Message | UndecodableRequest:
        try:
            return message_class.FromString(data)
        except (DecodeError, ValueError) as error:
            return UndecodableRequest(message_class.DESCRIPTOR.name, str(error).split(":")[-1].strip())

    return decode


def register_embedrec_service(servicer: Any, server: grpc.aio.Server, service: Any = SERVICE) -> None:
    """Add every method of `service` (default: EmbedRec), implemented by `servicer`'s same-named
    coroutines."""
    handlers = {}
    for method in service.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_decoder(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
