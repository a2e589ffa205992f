"""The embedrec server, in rooms that show its architecture:

- `edge/`: the transports (gRPC and HTTP), auth, the call life cycle, the request limits checked on
  the wire formats. The only room that imports grpc or the HTTP stack.
- `inference/`: the model (ONNX Runtime sessions, tokenisation, pooling, prompts).
- `catalog/`: the items (store protocol, memory-mapped and Milvus stores, fields, top-k, profiles).
- `batching/`: micro-batching of queued work and the CPU pool.
- `observability/`: metrics, tracing, logs.

At the top: the composition root (`app`), settings, the use cases (`service`), and what every room
shares (`errors`, `limits`, `manifest`). Nothing here imports torch or transformers.
"""
