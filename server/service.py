"""The use cases behind every transport, composed: Embed and Similarity (`inference.embedding`),
Recommend (`catalog.recommendation` over `catalog.search`), live catalog changes
(`catalog.live`), and Info. Holds the item store served now (swapped whole by a reload), so each
call runs on one snapshot."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import onnxruntime

from embedrec import __version__
from embedrec.results import DeleteResult, UpsertResult
from embedrec.server.batching.batcher import MicroBatcher
from embedrec.server.batching.offload import CpuPool
from embedrec.server.catalog import live
from embedrec.server.catalog.live import ItemUpsert, LiveItemStore
from embedrec.server.catalog.recommendation import ProfileRequest, Recommender, RecommendResult
from embedrec.server.catalog.search import SearchItem, SearchResult
from embedrec.server.catalog.store import ItemStore
from embedrec.server.errors import FailedPrecondition
from embedrec.server.inference.embedding import BatchItem, Embedder, ServedModel
from embedrec.server.inference.pooling import FloatArray
from embedrec.server.inference.prompts import query_prompt_name
from embedrec.server.limits import Limits
from embedrec.server.manifest import PoolingName

NO_ITEMS = "this server runs without items (start it with --items-dir, or --items-store milvus)"


@dataclass(frozen=True)
class ServiceInfo:
    """What Info reports. Field names are InfoResponse's (the proto is the one field list);
    `fields()` flattens the limits into it, and a test checks the names against the proto."""

    model_name: str
    dim: int
    max_length: int
    pooling: PoolingName
    normalize: bool
    provider: str
    model_sha256: str
    item_count: int
    items_sha256: str
    server_version: str
    runtime_version: str
    server_instance: str
    max_batch_size: int
    max_batch_tokens: int
    max_queued_texts: int
    limits: Limits = field(default_factory=Limits)
    items_filter_field: str = ""
    instances: int = 1
    tuning: str = "none"
    sessions: int = 1
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str = ""
    query_prompt_name: str = ""
    items_prompt_name: str = ""
    hidden_item_count: int = 0
    items_fields: dict[str, str] = field(default_factory=dict)
    items_scan: str = ""
    items_code_bytes: int = 0
    items_engine: str = ""
    items_index: str = ""
    items_approximate: bool = False
    items_store_error: str = ""

    def fields(self) -> dict[str, Any]:
        """Every value by its InfoResponse field name, the limits flattened in."""
        values = {one.name: getattr(self, one.name) for one in dataclasses.fields(self) if one.name != "limits"}
        values.update(dataclasses.asdict(self.limits))
        return values


class EmbeddingService:
    """The use cases over an encoder, its batcher and optional items: `embedder` answers Embed and
    Similarity; Recommend and the live catalog changes run on the items served now."""

    def __init__(
        self,
        encoder: ServedModel,
        batcher: MicroBatcher[BatchItem, FloatArray],
        items: ItemStore | None,
        limits: Limits,
        search_batcher: MicroBatcher[SearchItem, SearchResult],
        cpu: CpuPool,
        *,
        tuning: str = "none",
    ) -> None:
        """`cpu` runs the request-sized CPU work (tokenising, catalog id look-ups) off the loop."""
        self.encoder = encoder
        self.batcher = batcher
        self.items = items
        self.limits = limits
        self.search_batcher = search_batcher
        self.cpu = cpu
        self.tuning = tuning
        self.embedder = Embedder(encoder, batcher, limits, cpu)
        self.recommender = Recommender(self.embedder, search_batcher, limits, cpu, encoder.dim)

    async def recommend(self, request: ProfileRequest, *, timeout: float | None) -> RecommendResult:
        """`Recommender.recommend` on the items served now; FailedPrecondition without items."""
        return await self.recommender.recommend(self._items(), request, timeout=timeout)

    async def recommend_many(
        self, requests: Sequence[ProfileRequest], *, timeout: float | None
    ) -> list[RecommendResult]:
        """`Recommender.recommend_many` on the items served now; FailedPrecondition without items."""
        return await self.recommender.recommend_many(self._items(), requests, timeout=timeout)

    async def upsert_items(self, upserts: Sequence[ItemUpsert], *, timeout: float | None) -> UpsertResult:
        """`live.upsert_items` on the store served now; FailedPrecondition (naming the store) when
        it cannot change live."""
        store = self._live_store("UpsertItems")
        return await live.upsert_items(store, upserts, self.embedder, self.limits, timeout=timeout)

    async def delete_items(self, item_ids: Sequence[str], *, timeout: float | None) -> DeleteResult:
        """`live.delete_items` on the store served now; FailedPrecondition when it cannot change live."""
        return await live.delete_items(self._live_store("DeleteItems"), item_ids, self.limits, timeout=timeout)

    def _items(self) -> ItemStore:
        items = self.items  # one snapshot: a hot reload during the call does not affect it
        if items is None:
            raise FailedPrecondition(NO_ITEMS)
        return items

    def _live_store(self, operation: str) -> LiveItemStore:
        items = self._items()
        store = items.live()
        if store is None:
            raise FailedPrecondition(
                f"{operation} needs the milvus item store; this server serves the {items.describe().kind} store "
                "(read-only: rebuild it with embedrec export-items, or serve a Milvus collection with "
                "--items-store milvus)"
            )
        return store

    def replace_items(self, items: ItemStore) -> None:
        """Serve `items` from now on (calls already running finish on the old store). The caller
        checks that `items` belongs to this model."""
        self.items = items

    def info(self) -> ServiceInfo:
        """The model, the provider in use, the item matrix identity and the limits."""
        manifest = self.encoder.manifest
        items = self.items.describe() if self.items is not None else None
        return ServiceInfo(
            model_name=manifest.model_name,
            dim=manifest.dim,
            max_length=manifest.max_length,
            pooling=manifest.pooling,
            normalize=manifest.normalize,
            provider=self.encoder.provider,
            model_sha256=manifest.onnx_sha256,
            item_count=items.item_count if items is not None else 0,
            items_sha256=items.items_sha256 if items is not None else "",
            server_version=__version__,
            runtime_version=onnxruntime.__version__,
            server_instance=f"{socket.gethostname()}:{os.getpid()}",
            max_batch_size=self.batcher.policy.max_batch_size,
            max_batch_tokens=self.batcher.policy.max_batch_cost,
            max_queued_texts=self.batcher.policy.max_queued_items,
            limits=self.limits,
            items_filter_field=items.filter_field if items is not None else "",
            instances=self.batcher.instances,
            sessions=self.encoder.session_count,
            tuning=self.tuning,
            prompts=dict(manifest.prompts),
            default_prompt_name=manifest.default_prompt_name,
            query_prompt_name=query_prompt_name(manifest),
            items_prompt_name=items.prompt_name if items is not None else "",
            hidden_item_count=items.hidden_count if items is not None else 0,
            items_fields=dict(items.fields) if items is not None else {},
            items_scan=items.scan if items is not None else "",
            items_code_bytes=items.code_bytes if items is not None else 0,
            items_engine=items.engine_version if items is not None else "",
            items_index=items.index if items is not None else "",
            items_approximate=items.approximate if items is not None else False,
            items_store_error=items.store_error if items is not None else "",
        )
