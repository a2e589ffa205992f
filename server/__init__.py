"""The embedrec server: encoder, batcher, item index and the gRPC edge.

Only `server.servicer` and `server.app` import grpc; the rest is transport-free. Nothing here
imports torch or transformers.
"""
