"""The floor any serving machinery must pay for: a minimal batching gRPC server.

An asyncio queue whose one worker drains up to 32 texts into one executor call of tokenise + ONNX
Runtime + mean pool + normalise, and a grpc.aio servicer that puts each text on the queue and
awaits its future. No limits, metrics, auth, fairness or deadlines. It speaks embedrec.v1's Embed,
so the same load tool drives it and embedrec.

Usage: python -m bench.naive_server MODEL_DIR PORT
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from embedrec.server.inference.encoder import OnnxEncoder
from embedrec.v1 import embedrec_pb2 as pb
from embedrec.v1 import embedrec_pb2_grpc as pb_grpc

MAX_BATCH = 32


class NaiveEmbed(pb_grpc.EmbedRecServicer):  # type: ignore[misc]
    def __init__(self, encoder: OnnxEncoder) -> None:
        self.encoder = encoder
        self.queue: asyncio.Queue[tuple[str, asyncio.Future[Any]]] = asyncio.Queue()

    async def worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            vectors = await loop.run_in_executor(None, self.encoder.encode, [text for text, _ in batch])
            for (_, future), vector in zip(batch, vectors, strict=True):
                future.set_result(vector)

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        futures = []
        for text in request.texts:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            await self.queue.put((text, future))
            futures.append(future)
        vectors = np.stack(await asyncio.gather(*futures))
        return pb.EmbedResponse(values=vectors.ravel().tolist(), dim=vectors.shape[1])


async def serve(model_dir: Path, port: int) -> None:
    """Serve Embed on 127.0.0.1:`port` until killed."""
    # The same intra-op spinning as embedrec serve runs with by default (in runs only).
    servicer = NaiveEmbed(OnnxEncoder(model_dir, provider="cpu", spinning=False, spinning_in_runs=True))
    server = grpc.aio.server()
    pb_grpc.add_EmbedRecServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    worker = asyncio.create_task(servicer.worker())
    await server.wait_for_termination()
    worker.cancel()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), int(sys.argv[2])))
