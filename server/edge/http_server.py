"""The HTTP server: uvicorn serving the ASGI app (`http_api.HttpApi`) on the server's own event
loop, behind the connection guard (`http_protocol`), with the settings' limits, tokens and TLS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
from typing import Any

from embedrec.server.edge.auth import TokenGuard
from embedrec.server.edge.calls import ServingState
from embedrec.server.edge.grpc_server import security_summary, server_credentials
from embedrec.server.edge.http_api import HttpApi
from embedrec.server.edge.http_protocol import ConnectionLimits, guarded_protocol, rate_limited_accept_errors
from embedrec.server.edge.http_routes import ROUTES
from embedrec.server.errors import ConfigurationError
from embedrec.server.observability.metrics import ServerMetrics
from embedrec.server.settings import Settings

logger = logging.getLogger(__name__)


async def start_http_edge(
    settings: Settings, state: ServingState, tokens: TokenGuard, metrics: ServerMetrics
) -> HttpServer | None:
    """The HTTP/JSON edge on --http-port (None with -1), same host, tokens and TLS as gRPC,
    started. Raises ConfigurationError naming the port when it cannot listen."""
    if settings.http.http_port < 0:
        return None
    server_credentials(settings)  # the same checks of the TLS settings as gRPC's
    tls = None
    if settings.security.tls_cert is not None and settings.security.tls_key is not None:
        client_ca = str(settings.security.tls_client_ca) if settings.security.tls_client_ca is not None else None
        tls = (str(settings.security.tls_cert), str(settings.security.tls_key), client_ca)
    api = HttpApi(
        state,
        tokens,
        routes=ROUTES,
        max_body_bytes=settings.server.max_message_bytes,
        exempt_health=settings.security.auth_exempt_health,
        body_timeout_s=settings.http.http_body_timeout_s,
        request_timeout_s=settings.http.http_request_timeout_s,
    )
    refused = metrics.http_connections_refused
    limits = ConnectionLimits(
        max_header_bytes=settings.http.http_max_header_bytes,
        header_timeout_s=settings.http.http_header_timeout_s,
        max_connections=connection_cap(settings.http.http_max_connections),
        refused=lambda reason: refused.labels(reason=reason).inc(),
    )
    http = HttpServer(api, limits, keep_alive_s=settings.http.http_keep_alive_s)
    try:
        port = await http.start(
            settings.server.host, settings.http.http_port, reuse_port=settings.server.reuse_port, tls=tls
        )
    except OSError as error:
        raise ConfigurationError(
            f"cannot listen for HTTP on {settings.server.host}:{settings.http.http_port} (--http-port): "
            f"{error.strerror or error}"
        ) from None
    scheme = "https" if tls else "http"
    logger.info(
        "HTTP on %s://%s:%d (%s; /v1/embeddings, /v1/recommend, ...)",
        scheme,
        settings.server.host,
        port,
        security_summary(settings, tokens),
    )
    return http


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


class HttpServer:
    """uvicorn serving `app` on the caller's event loop (no signal handlers of its own: the
    server's drain decides when it stops)."""

    def __init__(self, app: HttpApi, limits: ConnectionLimits | None = None, *, keep_alive_s: int = 5) -> None:
        """`limits`: what a connection may cost before its request reaches `app`;
        `keep_alive_s`: idle time before a kept-alive connection is closed."""
        self.app = app
        self.limits = limits or ConnectionLimits()
        self.keep_alive_s = keep_alive_s
        self.port = 0
        self._server: Any = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(
        self, host: str, port: int, *, reuse_port: bool = False, tls: tuple[str, str, str | None] | None = None
    ) -> int:
        """Listen on host:port (0: a free port) and return the bound port. `tls`: (certificate
        chain, key, client CA or None) paths; with a client CA, clients must present certificates."""
        import uvicorn

        options: dict[str, Any] = {}
        if tls is not None:
            certificate, key, client_ca = tls
            options = {"ssl_certfile": certificate, "ssl_keyfile": key}
            if client_ca is not None:
                options.update(ssl_ca_certs=client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            http=guarded_protocol(self.limits),
            timeout_keep_alive=self.keep_alive_s,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=1,
            **options,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        rate_limited_accept_errors(asyncio.get_running_loop())
        listener = _listen(host, port, reuse_port)
        await server.startup(sockets=[listener])
        self._server = server
        self.port = listener.getsockname()[1]
        self._ticker = asyncio.get_running_loop().create_task(server.main_loop(), name="http-ticker")
        return self.port

    async def stop(self) -> None:
        """Stop accepting, finish the responses in flight (1 s at most), close."""
        if self._server is None:
            return
        self._server.should_exit = True
        if self._ticker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self._server.shutdown()
        self._server = None


def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP, and
    # accepted sockets inherit the listener's protocol. With 0, a response's head and body leave
    # in two segments the second of which waits for the client's delayed ACK: +40 ms per call.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener
