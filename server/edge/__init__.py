"""The transports: gRPC (servicer, handlers, interceptors) and HTTP (the ASGI app and its
connection guard), bearer-token auth, one call life cycle for both, and the request limits checked
on the wire formats. The only room that imports grpc or the HTTP stack."""
