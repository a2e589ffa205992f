"""The composition root: one server process built from its settings, NOT_SERVING until warm,
drained on SIGTERM.

Life cycle: `start()` binds the ports and answers at once (health NOT_SERVING, RPCs
UNAVAILABLE); `load()` loads the model and items, checks they belong together, warms up and
turns health SERVING; `stop()` turns health NOT_SERVING, stops accepting calls, lets in-flight
ones finish within the drain time, then stops the batchers. The rooms do the work: `edge` (gRPC
and HTTP), `inference`, `catalog`, `batching`; `operations` holds the admin operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path

from embedrec.server.batching.offload import CpuPool
from embedrec.server.catalog.live_recall import RecallEstimate
from embedrec.server.catalog.milvus.calls import MilvusUnreachableError
from embedrec.server.catalog.milvus.store import MilvusItems
from embedrec.server.catalog.rerank_stage import MAX_CANDIDATES
from embedrec.server.catalog.score_formula import check_formula
from embedrec.server.catalog.search import create_search_batcher
from embedrec.server.catalog.store import ItemStore
from embedrec.server.edge.auth import TokenGuard
from embedrec.server.edge.calls import ServingState
from embedrec.server.edge.grpc_server import GrpcEdge, security_summary
from embedrec.server.edge.http_server import HttpServer, start_http_edge
from embedrec.server.errors import ConfigurationError, InvalidArgument
from embedrec.server.inference.embedding import Embedder, create_batcher
from embedrec.server.inference.encoder import OnnxEncoder
from embedrec.server.inference.reranking import Reranker, create_rerank_batcher
from embedrec.server.loading import int8_host_warning, load_encoder, load_extra_encoders, open_items, resolve_tuning
from embedrec.server.models import ServedModels
from embedrec.server.observability.metrics import ModelMetrics, ServerMetrics
from embedrec.server.operations import Operations
from embedrec.server.service import EmbeddingService
from embedrec.server.settings import Settings

WARMUP_TEXTS = ("warm-up", "a slightly longer warm-up sentence for the runtime's first shapes")

logger = logging.getLogger(__name__)


class EmbedrecApp:
    """One server process: the gRPC and HTTP edges, health, and the embedding service once loaded."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = ServingState(access_log=settings.observability.access_log)
        self.tokens = TokenGuard(settings.security.token_sources)
        self.metrics = ServerMetrics()
        self.metrics.live_recall.source = self._live_recall
        self.state.metrics = self.metrics
        self.operations = Operations(settings, self.state, self.tokens, self.metrics)
        self.port = 0
        self.metrics_port: int | None = None
        self.http_port: int | None = None
        self._http: HttpServer | None = None
        self._grpc: GrpcEdge | None = None
        self._items_watch: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and start serving (NOT_SERVING until `load`); return the bound gRPC port.
        Raises ConfigurationError (ports released) when a port cannot be bound."""
        grpc_edge = GrpcEdge(self.settings, self.state, self.tokens, self.operations)
        self.port = await grpc_edge.start()
        self._grpc = grpc_edge
        self.metrics.serving.set(0)
        try:
            self._http = await start_http_edge(self.settings, self.state, self.tokens, self.metrics)
            self.http_port = self._http.port if self._http is not None else None
            self._serve_metrics()
        except BaseException:
            await self.stop(grace=0)
            raise
        logger.info(
            "listening on %s:%d (gRPC; %s; NOT_SERVING until the model is loaded)",
            self.settings.server.host,
            self.port,
            security_summary(self.settings, self.tokens),
        )
        return self.port

    def _serve_metrics(self) -> None:
        if self.settings.observability.metrics_port < 0:
            return
        host, port = self.settings.observability.metrics_host, self.settings.observability.metrics_port
        try:
            self.metrics_port = self.metrics.serve_http(host, port)
        except OSError as error:
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port} (--metrics-port): {error.strerror or error}"
            ) from None
        logger.info("metrics on http://%s:%d/metrics", host, self.metrics_port)

    async def load(self) -> None:
        """Load model and items, warm up, then turn SERVING.

        Raises ConfigurationError when they cannot be loaded or do not belong together.
        """
        settings, tuning = await asyncio.to_thread(resolve_tuning, self.settings)
        self.settings = settings
        encoder = await asyncio.to_thread(load_encoder, settings)
        extra = await asyncio.to_thread(load_extra_encoders, settings, encoder)
        items = await self._open_items_waiting(encoder)
        if items is not None:
            _check_default_formula(settings, items)
        search_batcher = create_search_batcher(
            settings.search.policy,
            threads=settings.search_thread_count,
            observer=self.metrics.search,
            niceness=settings.search.search_niceness,
        )
        await search_batcher.start()
        cpu = CpuPool(settings.server.cpu_threads)
        models = await self._serve_models(encoder, extra, cpu)
        service = EmbeddingService(
            models,
            items,
            settings.limits,
            search_batcher,
            cpu,
            tuning=tuning,
            score_formula=settings.default_score_formula,
            score_formula_text=settings.search.score_formula or _file_text(settings.search.score_formula_file),
        )
        await _warm_up(models)
        self.state.service = service
        described = items.describe() if items is not None else None
        self.metrics.items.set(described.item_count if described else 0)
        self.metrics.hidden_items.set(described.hidden_count if described else 0)
        await self._set_serving(True)
        if self._grpc is not None:
            await self._grpc.set_items_serving(items is not None and self.metrics.store_health.state().serving)
        if isinstance(items, MilvusItems):
            self._items_watch = asyncio.create_task(self._watch_items())
        logger.info(
            "SERVING %s (dim %d, %s, %d instance(s) on %d session(s) x %s threads) with %d items; tuning: %s",
            encoder.manifest.model_name,
            encoder.dim,
            encoder.provider,
            models.default.batcher.instances,
            encoder.session_count,
            settings.model.threads_per_session or "default",
            described.item_count if described else 0,
            tuning,
        )

    async def _serve_models(self, encoder: OnnxEncoder, extra: dict[str, OnnxEncoder], cpu: CpuPool) -> ServedModels:
        """The --model-dir model (the default) and each --model, each with a batcher of its own (started)."""
        settings = self.settings
        observer = ModelMetrics(
            self.metrics,
            encoder.manifest.model_name,
            "embed",
            also=self.metrics,
            int8_host_mismatch=bool(int8_host_warning(encoder.manifest)),
        )
        batcher = create_batcher(
            encoder,
            settings.batching,
            instances=settings.model.instances,
            quiet=self._one_call_in_flight,
            observer=observer,
        )
        await batcher.start()
        embedders, rerankers = await self._serve_extra_models(extra, cpu)
        return ServedModels(encoder, Embedder(encoder, batcher, settings.limits, cpu), embedders, rerankers)

    def _one_call_in_flight(self) -> bool:
        """True while the call asking is the only one in flight (the idle path's condition)."""
        return self.state.in_flight <= 1

    async def _serve_extra_models(
        self, encoders: dict[str, OnnxEncoder], cpu: CpuPool
    ) -> tuple[dict[str, Embedder], dict[str, Reranker]]:
        """Each --model with a batcher of its own (started), by task."""
        settings = self.settings
        embedders: dict[str, Embedder] = {}
        rerankers: dict[str, Reranker] = {}
        for name, encoder in encoders.items():
            task = encoder.manifest.task
            observer = ModelMetrics(
                self.metrics, name, task, int8_host_mismatch=bool(int8_host_warning(encoder.manifest))
            )
            if task == "rerank":
                # Its queue holds at least two of Recommend's largest rerank stages.
                policy = dataclasses.replace(
                    settings.batching,
                    max_queued_texts=max(settings.batching.max_queued_texts, 2 * MAX_CANDIDATES),
                )
                pairs = create_rerank_batcher(encoder, policy, instances=settings.model.instances, observer=observer)
                await pairs.start()
                rerankers[name] = Reranker(name, encoder, pairs, settings.limits, cpu)
            else:
                texts = create_batcher(
                    encoder, settings.batching, instances=settings.model.instances, observer=observer
                )
                await texts.start()
                embedders[name] = Embedder(encoder, texts, settings.limits, cpu)
            logger.info("serving model %s (%s, %s) from its own batcher", name, task, encoder.manifest.model_name)
        return embedders, rerankers

    async def _open_items_waiting(self, encoder: OnnxEncoder) -> ItemStore | None:
        """The configured items; while Milvus is unreachable, retry with backoff (health stays
        NOT_SERVING: a load balancer keeps traffic away, a restart would not help)."""
        pause = 1.0
        while True:
            try:
                return await asyncio.to_thread(
                    open_items, self.settings, encoder, self.metrics.scan_stats, self.metrics.store_health
                )
            except MilvusUnreachableError as error:
                logger.warning("NOT_SERVING: %s; retrying in %.0f s", error, pause)
                await asyncio.sleep(pause)
                pause = min(2 * pause, 30.0)

    def _live_recall(self) -> RecallEstimate | None:
        """The served store's live recall estimate (None: not measured)."""
        service = self.state.service
        return service.items.describe().live_recall if service is not None and service.items is not None else None

    async def _watch_items(self) -> None:
        """Probe the Milvus store every --milvus-probe-s (every second while it is down or its
        index is loading) and keep the items' health in step with the store's state (NOT_SERVING
        while down or not yet searching its built index); log each change."""
        was = self.metrics.store_health.state()
        while True:
            await asyncio.sleep(self.settings.milvus.milvus_probe_s if was.serving else 1.0)
            service = self.state.service
            items = service.items if service is not None else None
            if isinstance(items, MilvusItems):
                await asyncio.to_thread(items.probe, min(self.settings.milvus.milvus_timeout_s, 5.0))
            state = self.metrics.store_health.state()
            if state.up != was.up:
                if state.up:
                    logger.info("item store available again")
                else:
                    logger.warning("item store unavailable (Recommend answers UNAVAILABLE): %s", state.error)
            if bool(state.index_loading) != bool(was.index_loading):
                if state.index_loading:
                    logger.warning("item store index loading (answers flagged index_loading): %s", state.index_loading)
                else:
                    logger.info("item store searches its built index")
            if state.serving != was.serving and self._grpc is not None:
                await self._grpc.set_items_serving(state.serving)
            was = state

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, answer new calls UNAVAILABLE, let in-flight ones finish, then close.

        The listener stays open while draining (at least `drain_min_seconds`, at most `grace`,
        default `drain_seconds`) so that callers get a clean UNAVAILABLE, not a reset connection.
        """
        grace = self.settings.lifecycle.drain_seconds if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        earliest = loop.time() + min(self.settings.lifecycle.drain_min_seconds, grace)
        self.state.draining = True
        if self._items_watch is not None:
            self._items_watch.cancel()
            self._items_watch = None
        await self._set_serving(False)
        with contextlib.suppress(TimeoutError):  # past the grace period, stop() below cancels what is left
            await asyncio.wait_for(self.state.idle.wait(), max(0.0, deadline - loop.time()))
        await asyncio.sleep(max(0.0, earliest - loop.time()))
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._grpc is not None:
            await self._grpc.stop(max(0.0, deadline - loop.time()))
            self._grpc = None
        service = self.state.service
        if service is not None:
            for batcher in service.models.batchers():
                await batcher.stop()
            await service.search_batcher.stop()
            await asyncio.to_thread(service.cpu.close)

    async def _set_serving(self, serving: bool) -> None:
        if self._grpc is not None:
            await self._grpc.set_serving(serving)
        self.metrics.serving.set(1 if serving else 0)


async def _warm_up(models: ServedModels) -> None:
    """Run every served model once (the runtime's first calls are slow)."""
    for embedder in models.embedders.values():
        await embedder.embed(list(WARMUP_TEXTS))
    for reranker in models.rerankers.values():
        await reranker.rerank(WARMUP_TEXTS[0], list(WARMUP_TEXTS))


async def create_server(settings: Settings) -> EmbedrecApp:
    """Build, start and load a server; return it SERVING (port in `.port`).

    Raises ConfigurationError (after releasing the port) when the artefacts are unusable.
    """
    app = EmbedrecApp(settings)
    await app.start()
    try:
        await app.load()
    except BaseException:
        await app.stop(grace=0)
        raise
    return app


def _file_text(path: Path | None) -> str:
    """The stripped text of `path` ("" for None)."""
    return path.read_text(encoding="utf-8").strip() if path is not None else ""


def _check_default_formula(settings: Settings, items: ItemStore) -> None:
    """ConfigurationError naming the flag when the default score formula names a field the items
    lack or a categorical one (every Recommend would fail on it)."""
    spec = settings.default_score_formula
    if spec is None:
        return
    try:
        check_formula(spec, items.describe().fields, max_terms=settings.limits.max_score_terms, field="--score-formula")
    except InvalidArgument as error:
        raise ConfigurationError(f"{error}; the served items do not fit the default formula") from None
