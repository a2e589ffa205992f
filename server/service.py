"""The use cases behind every transport, composed: Embed and Similarity (`inference.embedding`),
Recommend (`catalog.recommendation` over `catalog.search`), live catalog changes
(`catalog.live`), and Info, over the served models (`models.ServedModels`). Holds the item store
served now (swapped whole by a reload), so each call runs on one snapshot."""

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
from embedrec.server.catalog.live_recall import RecallEstimate
from embedrec.server.catalog.recommendation import ProfileRequest, Recommender, RecommendResult
from embedrec.server.catalog.score_formula import ScoreFormulaSpec
from embedrec.server.catalog.search import SearchItem, SearchResult
from embedrec.server.catalog.store import ItemStore
from embedrec.server.errors import FailedPrecondition
from embedrec.server.limits import Limits
from embedrec.server.manifest import BuiltWith, ModelManifest, PoolingName, items_precision
from embedrec.server.models import ModelDescription, ServedModels

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
    items_index_loading: bool = False
    items_index_loading_detail: str = ""
    items_live_recall: float = 0.0
    items_live_recall_samples: int = 0
    items_live_recall_k: int = 0
    items_live_recall_error: float = 0.0
    models: list[ModelDescription] = field(default_factory=list)
    score_formula: str = ""
    model_variant: str = "fp32"
    int8_target: str = ""
    int8_agreement_fp32_items: float = 0.0
    int8_agreement_int8_items: float = 0.0
    items_precision: str = ""
    int8_host_warning: str = ""

    def fields(self) -> dict[str, Any]:
        """Every value by its InfoResponse field name, the limits flattened in."""
        values = {one.name: getattr(self, one.name) for one in dataclasses.fields(self) if one.name != "limits"}
        values["models"] = [dataclasses.asdict(model) for model in self.models]
        values.update(dataclasses.asdict(self.limits))
        return values


class EmbeddingService:
    """The use cases over the served models and optional items: `models` answers Embed,
    Similarity and Rerank by model name; Recommend and the live catalog changes run on the items
    served now, with the default model."""

    def __init__(
        self,
        models: ServedModels,
        items: ItemStore | None,
        limits: Limits,
        search_batcher: MicroBatcher[SearchItem, SearchResult],
        cpu: CpuPool,
        *,
        tuning: str = "none",
        score_formula: ScoreFormulaSpec | None = None,
        score_formula_text: str = "",
    ) -> None:
        """`cpu` runs the request-sized CPU work (tokenising, catalog id look-ups) off the loop.
        `score_formula` ranks the Recommends that bring none (`score_formula_text`: as
        configured, for Info)."""
        self.score_formula_text = score_formula_text if score_formula is not None else ""
        self.models = models
        self.items = items
        self.limits = limits
        self.search_batcher = search_batcher
        self.cpu = cpu
        self.tuning = tuning
        self.recommender = Recommender(
            models.default,
            search_batcher,
            limits,
            cpu,
            models.encoder.dim,
            reranker_for=models.reranker,
            default_formula=score_formula,
        )

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
        return await live.upsert_items(store, upserts, self.models.default, self.limits, timeout=timeout)

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

    def index_loading(self) -> bool:
        """Whether the served items' approximate index is still loading (store_health; cheap, no
        store call): Recommend flags its answers while it is."""
        items = self.items
        return items is not None and bool(items.describe().index_loading)

    def info(self) -> ServiceInfo:
        """The models (the top-level fields: the default's), the item matrix identity and the limits."""
        items = self.items.describe() if self.items is not None else None
        return ServiceInfo(
            **self.models.info_fields(),
            item_count=items.item_count if items is not None else 0,
            items_sha256=items.items_sha256 if items is not None else "",
            server_version=__version__,
            runtime_version=onnxruntime.__version__,
            server_instance=f"{socket.gethostname()}:{os.getpid()}",
            limits=self.limits,
            items_filter_field=items.filter_field if items is not None else "",
            tuning=self.tuning,
            items_prompt_name=items.prompt_name if items is not None else "",
            hidden_item_count=items.hidden_count if items is not None else 0,
            items_fields=dict(items.fields) if items is not None else {},
            items_scan=items.scan if items is not None else "",
            items_code_bytes=items.code_bytes if items is not None else 0,
            items_engine=items.engine_version if items is not None else "",
            items_index=items.index if items is not None else "",
            items_approximate=items.approximate if items is not None else False,
            items_store_error=items.store_error if items is not None else "",
            items_index_loading=bool(items.index_loading) if items is not None else False,
            items_index_loading_detail=items.index_loading if items is not None else "",
            **live_recall_fields(items.live_recall if items is not None else None),
            score_formula=self.score_formula_text,
            items_precision=_items_precision(items, self.models.encoder.manifest) if items is not None else "",
        )


def live_recall_fields(estimate: RecallEstimate | None) -> dict[str, Any]:
    """Info's items_live_recall* fields of `estimate` (zeros when none is measured)."""
    if estimate is None:
        return {}
    return {
        "items_live_recall": estimate.recall,
        "items_live_recall_samples": estimate.samples,
        "items_live_recall_k": estimate.k,
        "items_live_recall_error": estimate.error,
    }


def _items_precision(items: BuiltWith, manifest: ModelManifest) -> str:
    return manifest.variant if items_precision(items, manifest) == "same" else "fp32"
