"""The server: built by a factory, NOT_SERVING until warm, drained on SIGTERM.

Life cycle: `start()` binds the port and answers at once (health NOT_SERVING, RPCs
UNAVAILABLE); `load()` loads the model and items, checks they belong together, warms up and
turns health SERVING; `stop()` turns health NOT_SERVING, stops accepting calls, lets in-flight
ones finish within the drain time, then stops the batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from embedrec.server.batching.offload import CpuPool
from embedrec.server.catalog.hidden import HideResult
from embedrec.server.catalog.milvus_store import DeleteResult, MilvusUnreachableError, UpsertResult
from embedrec.server.catalog.mmap_store import ItemIndex
from embedrec.server.catalog.store import ItemStore
from embedrec.server.edge.auth import TokenGuard
from embedrec.server.edge.calls import ServingState
from embedrec.server.edge.grpc_handlers import ADMIN_SERVICE, register_embedrec_service
from embedrec.server.edge.grpc_servicer import EmbedRecAdminServicer, EmbedRecServicer
from embedrec.server.edge.http_api import HttpApi, HttpServer
from embedrec.server.edge.http_protocol import ConnectionLimits
from embedrec.server.edge.interceptors import TokenAuthInterceptor
from embedrec.server.errors import ConfigurationError, FailedPrecondition, Unavailable
from embedrec.server.inference.encoder import OnnxEncoder
from embedrec.server.inference.providers import expected_provider
from embedrec.server.limits import check_count
from embedrec.server.manifest import check_items_match_model, read_model_manifest
from embedrec.server.observability import tracing
from embedrec.server.observability.logs import configure_logging
from embedrec.server.observability.metrics import ServerMetrics
from embedrec.server.service import (
    NO_ITEMS,
    EmbeddingService,
    ItemUpsert,
    ReloadResult,
    create_batcher,
    create_search_batcher,
)
from embedrec.server.settings import Settings
from embedrec.server.tuning import TUNING_FILE, Machine, mismatch, read_tuning, tuned_values
from embedrec.v1 import embedrec_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EmbedRec"].full_name
# Health name for liveness probes: SERVING from start to exit (the process and its event loop
# answer), unlike SERVICE_NAME and "", which are SERVING only while calls can be served.
LIVENESS_SERVICE = "embedrec.liveness"
WARMUP_TEXTS = ("warm-up", "a slightly longer warm-up sentence for the runtime's first shapes")

logger = logging.getLogger(__name__)


class EmbedrecApp:
    """One server process: the gRPC server, health, and the embedding service once loaded."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = ServingState(access_log=settings.access_log)
        self.tokens = TokenGuard(settings.token_sources)
        self.health = health.aio.HealthServicer()
        self.metrics = ServerMetrics()
        self.state.metrics = self.metrics
        self.port = 0
        self.metrics_port: int | None = None
        self.http_port: int | None = None
        self._http: HttpServer | None = None
        self._server: grpc.aio.Server | None = None
        self._reload_lock = asyncio.Lock()

    async def start(self) -> int:
        """Bind and start serving (NOT_SERVING until `load`); return the bound port."""
        message_limit = self.settings.max_message_bytes
        interceptors = []
        if self.tokens.policy.enabled:
            interceptors.append(
                TokenAuthInterceptor(self.tokens, exempt_health=self.settings.auth_exempt_health, state=self.state)
            )
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", message_limit),
                ("grpc.max_send_message_length", message_limit),
                # Workers of one host share the port; otherwise a second server on it is an error.
                ("grpc.so_reuseport", 1 if self.settings.reuse_port else 0),
            ],
        )
        register_embedrec_service(EmbedRecServicer(self.state), server)
        register_embedrec_service(EmbedRecAdminServicer(self.state, self), server, ADMIN_SERVICE)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                ADMIN_SERVICE.full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        address = f"{self.settings.host}:{self.settings.port}"
        credentials = _server_credentials(self.settings)
        try:
            if credentials is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, credentials)
        except RuntimeError:  # grpc's "Failed to bind"
            self.port = 0
        if self.port == 0:
            raise ConfigurationError(f"cannot listen for gRPC on {address} (--port): in use or not allowed")
        await server.start()
        self._server = server
        try:
            await self._start_http()
        except BaseException:
            await server.stop(0)
            self._server = None
            raise
        if self.settings.metrics_port >= 0:
            host, port = self.settings.metrics_host, self.settings.metrics_port
            try:
                self.metrics_port = self.metrics.serve_http(host, port)
            except OSError as error:
                await self.stop(grace=0)
                raise ConfigurationError(
                    f"cannot serve metrics on {host}:{port} (--metrics-port): {error.strerror or error}"
                ) from None
            logger.info("metrics on http://%s:%d/metrics", self.settings.metrics_host, self.metrics_port)
        logger.info("listening on %s:%d (NOT_SERVING until the model is loaded)", self.settings.host, self.port)
        return self.port

    async def _start_http(self) -> None:
        """The HTTP/JSON edge on --http-port (unless -1), same host, tokens and TLS as gRPC."""
        settings = self.settings
        if settings.http_port < 0:
            return
        _server_credentials(settings)  # the same checks of the TLS settings as gRPC's
        tls = None
        if settings.tls_cert is not None and settings.tls_key is not None:
            client_ca = str(settings.tls_client_ca) if settings.tls_client_ca is not None else None
            tls = (str(settings.tls_cert), str(settings.tls_key), client_ca)
        api = HttpApi(
            self.state,
            self.tokens,
            max_body_bytes=settings.max_message_bytes,
            exempt_health=settings.auth_exempt_health,
            body_timeout_s=settings.http_body_timeout_s,
            request_timeout_s=settings.http_request_timeout_s,
        )
        refused = self.metrics.http_connections_refused
        limits = ConnectionLimits(
            max_header_bytes=settings.http_max_header_bytes,
            header_timeout_s=settings.http_header_timeout_s,
            max_connections=connection_cap(settings.http_max_connections),
            refused=lambda reason: refused.labels(reason=reason).inc(),
        )
        http = HttpServer(api, limits, keep_alive_s=settings.http_keep_alive_s)
        try:
            self.http_port = await http.start(
                settings.host, settings.http_port, reuse_port=settings.reuse_port, tls=tls
            )
        except OSError as error:
            raise ConfigurationError(
                f"cannot listen for HTTP on {settings.host}:{settings.http_port} (--http-port): "
                f"{error.strerror or error}"
            ) from None
        self._http = http
        scheme = "https" if tls else "http"
        logger.info("HTTP on %s://%s:%d (/v1/embeddings, /v1/recommend, ...)", scheme, settings.host, self.http_port)

    async def load(self) -> None:
        """Load model and items, warm up, then turn SERVING.

        Raises ConfigurationError when they cannot be loaded or do not belong together.
        """
        settings, tuning = await asyncio.to_thread(resolve_tuning, self.settings)
        self.settings = settings
        encoder = await asyncio.to_thread(_load_encoder, settings)
        items = await self._open_items_waiting(encoder)
        batcher = create_batcher(encoder, settings.batch_policy, instances=settings.instances, observer=self.metrics)
        await batcher.start()
        search_batcher = create_search_batcher(
            settings.search_policy,
            threads=settings.search_thread_count,
            observer=self.metrics.search,
            niceness=settings.search_niceness,
        )
        await search_batcher.start()
        cpu = CpuPool(settings.cpu_threads)
        service = EmbeddingService(encoder, batcher, items, settings.limits, search_batcher, cpu, tuning=tuning)
        await service.embed(list(WARMUP_TEXTS))
        self.state.service = service
        described = items.describe() if items is not None else None
        self.metrics.items.set(described.item_count if described else 0)
        self.metrics.hidden_items.set(described.hidden_count if described else 0)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "SERVING %s (dim %d, %s, %d instance(s) on %d session(s) x %s threads) with %d items; tuning: %s",
            encoder.manifest.model_name,
            encoder.dim,
            encoder.provider,
            batcher.instances,
            encoder.session_count,
            settings.threads_per_session or "default",
            described.item_count if described else 0,
            tuning,
        )

    async def _open_items(self, encoder: OnnxEncoder) -> ItemStore | None:
        return await asyncio.to_thread(open_items, self.settings, encoder)

    async def _open_items_waiting(self, encoder: OnnxEncoder) -> ItemStore | None:
        """The configured items; while Milvus is unreachable, retry with backoff (health stays
        NOT_SERVING: a load balancer keeps traffic away, a restart would not help)."""
        pause = 1.0
        while True:
            try:
                return await self._open_items(encoder)
            except MilvusUnreachableError as error:
                logger.warning("NOT_SERVING: %s; retrying in %.0f s", error, pause)
                await asyncio.sleep(pause)
                pause = min(2 * pause, 30.0)

    async def reload_items(self) -> ReloadResult:
        """Re-open --items-dir (re-resolving a symlink), or the Milvus collection, and serve it
        from now on.

        Calls already running finish on the old matrix. Raises FailedPrecondition, keeping the old
        matrix, when the directory is unusable or belongs to another model.
        """
        service = self.state.service
        if service is None:
            raise FailedPrecondition("the server is still starting; reload once it is SERVING")
        if self.settings.items_dir is None and self.settings.items_store != "milvus":
            raise FailedPrecondition(NO_ITEMS)
        async with self._reload_lock:
            previous = service.items
            try:
                items = await self._open_items(service.encoder)
            except ConfigurationError as error:
                self.metrics.items_reloads.labels(result="refused").inc()
                logger.error("items reload refused, still serving the previous items: %s", error)
                raise FailedPrecondition(f"items reload refused, still serving the previous items: {error}") from None
            assert items is not None
            new = items.describe()
            previous_sha = previous.describe().items_sha256 if previous is not None else ""
            # A collection changes in place: reopening it is always "changed" (new counts, properties).
            changed = new.items_sha256 != previous_sha or new.kind == "milvus"
            if changed:
                # The serving hidden set wins over the new directory's file (Milvus keeps its own flags).
                if isinstance(previous, ItemIndex) and isinstance(items, ItemIndex):
                    try:
                        await asyncio.to_thread(items.hidden.carry_over, previous.hidden.snapshot.ids)
                    except ConfigurationError as error:  # e.g. a read-only directory: keep serving the old one
                        self.metrics.items_reloads.labels(result="refused").inc()
                        logger.error("items reload refused, still serving the previous items: %s", error)
                        raise FailedPrecondition(
                            f"items reload refused, still serving the previous items: {error}"
                        ) from None
                    new = items.describe()  # the carried-over hidden count
                service.replace_items(items)
                self.metrics.items.set(new.item_count)
                self.metrics.hidden_items.set(new.hidden_count)
            result = "swapped" if changed else "unchanged"
            self.metrics.items_reloads.labels(result=result).inc()
            logger.info(
                "items reload from %s: %s (%d items, sha256 %s…)",
                new.location,
                result,
                new.item_count,
                new.items_sha256[:12],
            )
            return ReloadResult(new.items_sha256, new.item_count, previous_sha, changed)

    async def change_visibility(self, item_ids: Sequence[str], *, hide: bool) -> HideResult:
        """Hide (or restore) `item_ids` in the served catalog from the next Recommend on, and
        persist the hidden set beside the items. Raises FailedPrecondition without items,
        InvalidArgument past max_exclude_ids ids."""
        service = self._service_with_items()
        check_count(len(item_ids), service.limits.max_exclude_ids, field="ids", limit_name="max_exclude_ids")
        async with self._reload_lock:  # one change at a time, never during a reload's swap
            items = service.items
            assert items is not None
            change = items.hide if hide else items.restore
            try:
                result = await asyncio.to_thread(change, list(item_ids))
            except ConfigurationError as error:
                raise FailedPrecondition(f"hidden items not changed: {error}") from None
        self.metrics.hidden_items.set(result.hidden_count)
        logger.info("%s %d item(s); %d hidden now", "hid" if hide else "restored", result.changed, result.hidden_count)
        return result

    async def hidden_ids(self) -> Sequence[str]:
        """The ids hidden now, sorted."""
        items = self._service_with_items().items
        return await asyncio.to_thread(items.hidden_ids) if items is not None else ()

    async def upsert_items(self, upserts: Sequence[ItemUpsert], *, timeout: float | None) -> UpsertResult:
        """Embed (texts, with the items' document prompt) or take (vectors) each item and
        insert or replace it in the served Milvus collection. FailedPrecondition on the mmap
        store (read-only: rebuild it) or without items."""
        service = self._service_with_items()
        async with self._reload_lock:
            result = await service.upsert_items(upserts, timeout=timeout)
        self._count_items(service)
        logger.info("upserted %d item(s): %d new, %d replaced", len(upserts), result.inserted, result.updated)
        return result

    async def delete_items(self, item_ids: Sequence[str], *, timeout: float | None) -> DeleteResult:
        """Remove `item_ids` from the served Milvus collection (unknown ids reported).
        FailedPrecondition on the mmap store or without items."""
        service = self._service_with_items()
        async with self._reload_lock:
            result = await service.delete_items(item_ids, timeout=timeout)
        self._count_items(service)
        logger.info("deleted %d item(s)", result.deleted)
        return result

    def _count_items(self, service: EmbeddingService) -> None:
        if service.items is not None:
            described = service.items.describe()
            self.metrics.items.set(described.item_count)
            self.metrics.hidden_items.set(described.hidden_count)

    def _service_with_items(self) -> EmbeddingService:
        service = self.state.service
        if service is None:
            raise Unavailable("the server is still starting; retry once it is SERVING")
        if service.items is None:
            raise FailedPrecondition(NO_ITEMS)
        return service

    async def reload_tokens(self) -> bool:
        """Re-read the token files (off the event loop) and put them in force for the next call;
        calls already admitted are not affected. False, keeping the old tokens, when a file is
        unreadable or empty."""
        if self.settings.auth_tokens_file is None and self.settings.admin_tokens_file is None:
            return True
        try:
            await asyncio.to_thread(self.tokens.reload)
        except ConfigurationError as error:
            logger.error("token reload refused, the previous tokens stay in force: %s", error)
            return False
        logger.info("bearer tokens reloaded")
        return True

    async def reload_on_signal(self) -> None:
        """SIGHUP: reload the token files and the items (each failure logged; the old ones stay)."""
        await self.reload_tokens()
        with contextlib.suppress(FailedPrecondition):  # logged by reload_items; the old matrix serves on
            await self.reload_items()

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, answer new calls UNAVAILABLE, let in-flight ones finish, then close.

        The listener stays open while draining (at least `drain_min_seconds`, at most `grace`,
        default `drain_seconds`) so that callers get a clean UNAVAILABLE, not a reset connection.
        """
        grace = self.settings.drain_seconds if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        earliest = loop.time() + min(self.settings.drain_min_seconds, grace)
        self.state.draining = True
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        with contextlib.suppress(TimeoutError):  # past the grace period, stop() below cancels what is left
            await asyncio.wait_for(self.state.idle.wait(), max(0.0, deadline - loop.time()))
        await asyncio.sleep(max(0.0, earliest - loop.time()))
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._server is not None:
            await self._server.stop(max(0.0, deadline - loop.time()))
            self._server = None
        service = self.state.service
        if service is not None:
            await service.batcher.stop()
            await service.search_batcher.stop()
            await asyncio.to_thread(service.cpu.close)

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)
        self.metrics.serving.set(1 if status == health_pb2.HealthCheckResponse.SERVING else 0)


# Descriptors kept for everything but HTTP connections: gRPC's, the model's and items' files, logs.
RESERVED_DESCRIPTORS = 256


def connection_cap(wanted: int) -> int:
    """`wanted`, or the open-file limit less RESERVED_DESCRIPTORS when that is smaller (logged):
    past the limit, accept() fails instead of the cap answering 503."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or wanted <= soft - RESERVED_DESCRIPTORS:
        return wanted
    cap = max(1, soft - RESERVED_DESCRIPTORS)
    logger.warning("--http-max-connections %d lowered to %d: the open-file limit is %d", wanted, cap, soft)
    return cap


def raise_descriptor_limit() -> None:
    """Raise this process's open-file limit to its hard limit: every connection costs a
    descriptor, and the soft limit (often 1,024) would be reached long before the HTTP
    connection cap or gRPC's own limits apply."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as error:  # e.g. an unlimited hard limit some kernels refuse
        logger.warning("open-file limit left as it is: %s", error)


def resolve_tuning(settings: Settings) -> tuple[Settings, str]:
    """`settings` with the model's tuning file applied (for the settings not given explicitly)
    when it was measured on this machine with this model, and a line saying what happened (for
    the log and Info). A file that is unreadable or measured elsewhere is ignored, with a warning."""
    if settings.tuning == "off":
        return settings, "off"
    path = settings.model_dir / TUNING_FILE
    try:
        tuning = read_tuning(settings.model_dir)
    except ConfigurationError as error:
        logger.warning("tuning file ignored: %s", error)
        return settings, f"ignored {path}: unreadable"
    if tuning is None:
        return settings, "none"
    try:
        model_sha256 = read_model_manifest(settings.model_dir).onnx_sha256
    except ConfigurationError:
        return settings, "none"  # the model loader reports the broken manifest itself
    reason = mismatch(tuning, Machine.here(expected_provider(settings.provider)), model_sha256)
    if reason:
        logger.warning("tuning file %s ignored: %s (re-run embedrec tune on this machine)", path, reason)
        return settings, f"ignored {path}: {reason}"
    values = tuned_values(tuning, settings.explicitly_set())
    overridden = sorted(set(tuning.settings) - set(values))
    note = tuning.describe(path) + (f"; overridden by flags: {', '.join(overridden)}" if overridden else "")
    tuned: Settings = dataclasses.replace(settings, **values)  # type: ignore[arg-type]
    return tuned, note


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings (mTLS when a client CA is set); None for plaintext."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise ConfigurationError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ConfigurationError("--tls-cert and --tls-key go together")
    try:
        pair = (settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())
        client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    except OSError as error:
        raise ConfigurationError(f"TLS files unreadable: {error}") from None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


def _load_encoder(settings: Settings) -> OnnxEncoder:
    return OnnxEncoder(
        settings.model_dir,
        provider=settings.provider,  # type: ignore[arg-type]
        intra_op_threads=settings.threads_per_session,
        sessions=settings.session_count,
        device_id=settings.device_id,
        spinning=settings.intra_op_spinning,
        cuda_memory_limit_mb=settings.cuda_memory_limit_mb,
        io_binding=None if settings.io_binding == "auto" else settings.io_binding == "on",
    )


def open_items(settings: Settings, encoder: OnnxEncoder) -> ItemStore | None:
    """The item store `settings` name (None without items), checked to be built with
    `encoder`'s model; ConfigurationError otherwise (MilvusUnreachableError when Milvus does not
    answer). An --items-dir symlink is resolved once, so every file comes from one build."""
    items: ItemStore
    if settings.items_store == "milvus":
        from embedrec.server.catalog.milvus_store import MilvusItems

        items = MilvusItems(
            settings.milvus_uri,
            settings.milvus_collection,
            token=settings.milvus_token,
            timeout=settings.milvus_timeout_s,
        )
    elif settings.items_dir is not None:
        items = ItemIndex(settings.items_dir.resolve())
    else:
        return None
    check_items_match_model(items.describe(), encoder.manifest)
    return items


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


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then drain; return the process exit code."""
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)
    try:
        logger.info("tracing %s", tracing.configure(os.environ))
    except ConfigurationError as error:
        logger.error("cannot start: %s", error)
        return 2
    app = EmbedrecApp(settings)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop_requested.set)
    reloads: set[asyncio.Task[None]] = set()

    def reload_on_sighup() -> None:
        task = loop.create_task(app.reload_on_signal())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_sighup)
    raise_descriptor_limit()
    try:
        await app.start()
    except ConfigurationError as error:
        logger.error("cannot start: %s", error)
        return 2
    # Loading may wait (e.g. for Milvus to answer): a stop request meanwhile ends it.
    loading = asyncio.create_task(app.load())
    stopping = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
        logger.info("stopped before the server was loaded")
        await app.stop(grace=0)
        return 0
    try:
        loading.result()
    except ConfigurationError as error:
        logger.error("cannot start: %s", error)
        stopping.cancel()
        await app.stop(grace=0)
        return 2
    await stopping
    logger.info("stopping: draining in-flight calls for up to %.1f s", settings.drain_seconds)
    await app.stop()
    logger.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`embedrec serve`: parse settings, configure logging, serve until told to stop."""
    settings = Settings.from_args(argv)
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        from embedrec.server.workers import supervise

        return supervise(settings, list(argv if argv is not None else sys.argv[2:]))
    return asyncio.run(serve(settings))
