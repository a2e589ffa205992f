"""Registering the embedrec services on a gRPC server with requests left undecoded.

The generated `add_EmbedRecServicer_to_server` decodes every request with `FromString` on the
event loop before any of our code runs: a request that fails to decode becomes INTERNAL, and a
hostile one (millions of tiny repeated entries) costs hundreds of milliseconds of GIL-holding C
before a limit can refuse it. Here every method receives the request's bytes; the servicer checks
admission first, then the count limits on the wire (`embedrec.server.edge.wire_limits.check_wire`), and
decodes only what passed (`embedrec.server.edge.messages.decode`).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import Message

from embedrec.v1 import embedrec_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["EmbedRec"]
ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["EmbedRecAdmin"]
# Request message class by method name (the two services' method names are distinct).
REQUEST_TYPES: dict[str, type[Message]] = {
    method.name: getattr(pb, method.input_type.name)
    for service in (SERVICE, ADMIN_SERVICE)
    for method in service.methods
}


def register_embedrec_service(servicer: Any, server: grpc.aio.Server, service: Any = SERVICE) -> None:
    """Add every method of `service` (default: EmbedRec), implemented by `servicer`'s same-named
    coroutines, which receive the request's bytes."""
    handlers = {}
    for method in service.methods:
        response_class = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=None,
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
