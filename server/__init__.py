"""The embedrec server: encoder, batcher, item index and the gRPC edge.

Only `embedrec.server.servicer`, `interceptors`, `handlers` and `app` import grpc; the rest is
transport-free. Nothing here imports torch or transformers.
"""
