"""The asyncio client: typed methods, numpy out, a deadline on every call; awaitable.

The source of both clients: `client/sync.py` is generated from this file (`make clients`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar, Unpack

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedrec.client import models
from embedrec.client.channel import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, ChannelConfig, health_status, open_channel
from embedrec.client.errors import from_rpc_error
from embedrec.v1 import embedrec_pb2 as pb
from embedrec.v1 import embedrec_pb2_grpc as pb_grpc

Reply = TypeVar("Reply")


class AsyncEmbedrecClient:
    """An asyncio connection to an embedrec server. Use `async with`, or await `close()`; create it
    inside the event loop that will use it."""

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        channel: ChannelConfig | None = None,
    ) -> None:
        """Open a channel to `target`: "host:port", any gRPC target string, or a list of
        "host:port" replicas (balanced by `channel.load_balancing`, round_robin by default).

        `timeout` (seconds) is the default deadline of every call; each method takes its own
        `timeout` too. `channel` sets retries, keepalive, TLS, a bearer token and the rest.
        """
        self.config = dataclasses.replace(channel or ChannelConfig(), target=target)
        self._channel = open_channel(self.config, asyncio=True)
        self._stub = pb_grpc.EmbedRecStub(self._channel)
        self._admin = pb_grpc.EmbedRecAdminStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = self.config.metadata()
        self.timeout = timeout

    async def __aenter__(self) -> AsyncEmbedrecClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def embed(
        self,
        texts: Sequence[str],
        *,
        normalize: bool | None = None,
        truncate: bool | None = None,
        pooling: str | None = None,
        prompt_name: str | None = None,
        dimensions: int | None = None,
        model: str = "",
        timeout: float | None = None,
    ) -> npt.NDArray[np.float32]:
        """Embed `texts`: float32 (len(texts), dim), in order. Options default to the model's:
        `prompt_name` picks one of its prompts (ServerInfo.prompts; "" for none), `dimensions`
        shortens the vectors (Matryoshka models only); `model` one of the embedding models served
        (ServerInfo.models; "": the first)."""
        request = models.embed_request(texts, normalize, truncate, pooling, prompt_name, dimensions, model)
        return models.embeddings_of(await self._call(self._stub.Embed, request, timeout))

    async def similarity(
        self, query: str, candidates: Sequence[str], *, model: str = "", timeout: float | None = None
    ) -> npt.NDArray[np.float32]:
        """Cosine similarity of `query` with each candidate: float32 (len(candidates),)."""
        request = models.similarity_request(query, candidates, None, model)
        return np.asarray((await self._call(self._stub.Similarity, request, timeout)).scores, dtype=np.float32)

    async def similarity_pairs(
        self, pairs: Sequence[tuple[str, str]], *, model: str = "", timeout: float | None = None
    ) -> npt.NDArray[np.float32]:
        """Cosine similarity of each (a, b) pair: float32 (len(pairs),)."""
        request = models.similarity_request(None, None, pairs, model)
        return np.asarray((await self._call(self._stub.Similarity, request, timeout)).scores, dtype=np.float32)

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        return_documents: bool = False,
        model: str = "",
        timeout: float | None = None,
    ) -> list[models.RerankHit]:
        """Score `documents` against `query` with a served reranker (`model`; "": the first):
        the `top_n` best (None: all), best first, equal scores in document order."""
        request = models.rerank_request(query, documents, top_n, return_documents, model)
        return models.rerank_hits_of(await self._call(self._stub.Rerank, request, timeout), return_documents)

    async def recommend(
        self,
        k: int = 10,
        *,
        profile: models.UserProfile | None = None,
        timeout: float | None = None,
        **options: Unpack[models.ProfileOptions],
    ) -> models.Recommendations:
        """Top-k items for a user, best first: `profile=UserProfile(...)`, or k and its options
        by keyword (`texts`, `item_ids`, `vector`, `where`, ...: see UserProfile).

        `texts` and `item_ids` are sequences (weight 1 each) or {value: weight} mappings.
        """
        request = models.profile_of(k, profile, options).to_request()
        return models.recommendations_of(await self._call(self._stub.Recommend, request, timeout))

    async def recommend_batch(
        self, users: Sequence[models.UserProfile | Mapping[str, Any]], *, timeout: float | None = None
    ) -> list[models.Recommendations]:
        """`recommend` for several users in one call (one pass over the item matrix on the server).

        Each user is a UserProfile (or a mapping of its fields: k, vector, texts, item_ids,
        exclude_ids, exclude_history, filter_values, explain); results in user order.
        """
        request = models.recommend_batch_request(users)
        return [
            models.recommendations_of(r)
            for r in (await self._call(self._stub.RecommendBatch, request, timeout)).results
        ]

    async def reload_items(self, *, timeout: float | None = None) -> models.ReloadResult:
        """Ask the server to re-open its --items-dir and serve the matrix there (EmbedRecAdmin)."""
        return models.reload_result_of(await self._call(self._admin.ReloadItems, pb.ReloadItemsRequest(), timeout))

    async def hide_items(self, item_ids: Sequence[str], *, timeout: float | None = None) -> models.VisibilityResult:
        """Hide items from every Recommend from now on, until restored (admin token)."""
        request = pb.HideItemsRequest(ids=list(item_ids))
        return models.visibility_of(await self._call(self._admin.HideItems, request, timeout))

    async def restore_items(self, item_ids: Sequence[str], *, timeout: float | None = None) -> models.VisibilityResult:
        """Show hidden items again (admin token)."""
        request = pb.RestoreItemsRequest(ids=list(item_ids))
        return models.visibility_of(await self._call(self._admin.RestoreItems, request, timeout))

    async def hidden_items(self, *, timeout: float | None = None) -> list[str]:
        """The ids hidden now, sorted (admin token)."""
        return list((await self._call(self._admin.ListHiddenItems, pb.ListHiddenItemsRequest(), timeout)).ids)

    async def upsert_items(
        self, items: Sequence[models.NewItem | Mapping[str, Any]], *, timeout: float | None = None
    ) -> models.UpsertResult:
        """Insert or replace items in the served Milvus collection (admin token): NewItems or
        mappings with id, text or vector, and fields. FailedPrecondition on the mmap store."""
        request = models.upsert_request_of(items)
        return models.upsert_result_of(await self._call(self._admin.UpsertItems, request, timeout))

    async def delete_items(self, item_ids: Sequence[str], *, timeout: float | None = None) -> models.DeleteResult:
        """Remove items from the served Milvus collection (admin token); unknown ids are listed."""
        request = pb.DeleteItemsRequest(ids=list(item_ids))
        return models.delete_result_of(await self._call(self._admin.DeleteItems, request, timeout))

    async def info(self, *, timeout: float | None = None) -> models.ServerInfo:
        """The model, provider, item matrix and limits the server runs with."""
        return models.info_of(await self._call(self._stub.Info, pb.InfoRequest(), timeout))

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status of `service` ("" is the whole server): SERVING, NOT_SERVING, …"""
        request = health_pb2.HealthCheckRequest(service=service)
        return health_status(await self._call(self._health.Check, request, timeout))

    async def _call(self, method: Callable[..., Awaitable[Reply]], request: Any, timeout: float | None) -> Reply:
        try:
            return await method(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._metadata,
                wait_for_ready=self.config.wait_for_ready,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error, uses_tls=self.config.uses_tls) from None
