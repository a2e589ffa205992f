"""The use cases behind every transport, composed: Embed and Similarity (`inference.embedding`),
Recommend (`catalog.recommendation` over `catalog.search`), live catalog changes
(`catalog.live`), and Info. Holds the item store served now (swapped whole by a reload), so each
call runs on one snapshot."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping, Sequence
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
from embedrec.server.errors import FailedPrecondition, NotFound, quoted
from embedrec.server.inference.embedding import BatchItem, Embedder, ServedModel
from embedrec.server.inference.pooling import FloatArray
from embedrec.server.inference.prompts import query_prompt_name
from embedrec.server.inference.reranking import Reranker
from embedrec.server.limits import Limits
from embedrec.server.loading import int8_host_warning
from embedrec.server.manifest import BuiltWith, ModelManifest, PoolingName, items_precision

NO_ITEMS = "this server runs without items (start it with --items-dir, or --items-store milvus)"
NO_RERANKER = (
    "this server serves no reranker (start it with --model NAME=DIR, a model exported with "
    "embedrec export-model --task rerank)"
)


@dataclass(frozen=True)
class ModelDescription:
    """One served model as Info lists it (InfoResponse.models)."""

    name: str
    task: str
    model_name: str
    dim: int
    max_length: int
    onnx_sha256: str
    activation: str = ""
    variant: str = "fp32"
    int8_target: str = ""
    int8_agreement: float = 0.0
    int8_host_warning: str = ""

    @classmethod
    def of(cls, name: str, manifest: ModelManifest) -> ModelDescription:
        """The description of the model `manifest` served as `name`."""
        agreement = manifest.agreement
        measured = agreement.get("top_n_agreement" if manifest.task == "rerank" else "variant_vs_fp32_items", 0.0)
        return cls(
            name,
            manifest.task,
            manifest.model_name,
            manifest.dim,
            manifest.max_length,
            manifest.onnx_sha256,
            manifest.activation,
            manifest.variant,
            manifest.int8_target,
            float(measured),
            int8_host_warning(manifest),
        )


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
        embedders: Mapping[str, Embedder] | None = None,
        rerankers: Mapping[str, Reranker] | None = None,
        score_formula: ScoreFormulaSpec | None = None,
        score_formula_text: str = "",
    ) -> None:
        """`cpu` runs the request-sized CPU work (tokenising, catalog id look-ups) off the loop.
        `embedders` and `rerankers`: the other models served (--model), by name; `encoder` is the
        first model, Recommend's. `score_formula` ranks the Recommends that bring none
        (`score_formula_text`: as configured, for Info)."""
        self.score_formula_text = score_formula_text if score_formula is not None else ""
        self.encoder = encoder
        self.batcher = batcher
        self.items = items
        self.limits = limits
        self.search_batcher = search_batcher
        self.cpu = cpu
        self.tuning = tuning
        self.embedder = Embedder(encoder, batcher, limits, cpu)
        self.embedders = {encoder.manifest.model_name: self.embedder, **(embedders or {})}
        self.rerankers = dict(rerankers or {})
        self.recommender = Recommender(
            self.embedder,
            search_batcher,
            limits,
            cpu,
            encoder.dim,
            reranker_for=self.reranker_for,
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

    def embedder_for(self, model: str, *, field: str = "model") -> Embedder:
        """The embedding model named `model` ("": the first; the first's name may also be given
        by its last path segment); NotFound naming `field` and the served models otherwise."""
        if not model:
            return self.embedder
        found = self.embedders.get(model)
        if found is None and model == self.encoder.manifest.model_name.rsplit("/", 1)[-1]:
            found = self.embedder
        if found is None:
            raise NotFound(
                f"{field} {quoted(model)} is not served here as an embedding model "
                f"(embedding models: {', '.join(self.embedders)}; rerankers: {', '.join(self.rerankers) or 'none'})"
            )
        return found

    def reranker_for(self, model: str, *, field: str = "model") -> Reranker:
        """The reranker named `model` ("": the first served); FailedPrecondition when none is
        served, NotFound naming `field` and the served rerankers for another name."""
        if not self.rerankers:
            raise FailedPrecondition(NO_RERANKER)
        if not model:
            return next(iter(self.rerankers.values()))
        found = self.rerankers.get(model)
        if found is None:
            raise NotFound(
                f"{field} {quoted(model)} is not served here as a reranker (rerankers: {', '.join(self.rerankers)})"
            )
        return found

    def batchers(self) -> list[MicroBatcher[Any, Any]]:
        """Every model's inference batcher, the first model's first (to start and stop them)."""
        others: list[MicroBatcher[Any, Any]] = [one.batcher for one in self.embedders.values()]
        others += [one.batcher for one in self.rerankers.values()]
        return [self.batcher] + [batcher for batcher in others if batcher is not self.batcher]

    def models(self) -> list[ModelDescription]:
        """Every model served, the first first."""
        described = [ModelDescription.of(name, embedder.encoder.manifest) for name, embedder in self.embedders.items()]
        described += [ModelDescription.of(name, reranker.encoder.manifest) for name, reranker in self.rerankers.items()]
        return described

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
            max_batch_tokens=self.batcher.policy.max_batch_tokens,
            max_queued_texts=self.batcher.policy.max_queued_texts,
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
            items_index_loading=bool(items.index_loading) if items is not None else False,
            items_index_loading_detail=items.index_loading if items is not None else "",
            **live_recall_fields(items.live_recall if items is not None else None),
            models=self.models(),
            score_formula=self.score_formula_text,
            model_variant=manifest.variant,
            int8_target=manifest.int8_target,
            int8_agreement_fp32_items=float(manifest.agreement.get("variant_vs_fp32_items", 0.0)),
            int8_agreement_int8_items=float(manifest.agreement.get("variant_vs_variant", 0.0)),
            items_precision=_items_precision(items, manifest) if items is not None else "",
            int8_host_warning=int8_host_warning(manifest),
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
