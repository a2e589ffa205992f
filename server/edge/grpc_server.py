"""The gRPC server: built from the settings with its services (embedrec, admin, health,
reflection), token interceptor, message limits and TLS; bound, started, its health switched and
stopped by the composition root (`embedrec.server.app`)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from embedrec.server.catalog.store_health import ITEMS_HEALTH_SERVICE
from embedrec.server.edge.auth import TokenGuard
from embedrec.server.edge.calls import ServingState
from embedrec.server.edge.grpc_handlers import ADMIN_SERVICE, SERVICE, register_embedrec_service
from embedrec.server.edge.grpc_servicer import AdminOperations, EmbedRecAdminServicer, EmbedRecServicer
from embedrec.server.edge.interceptors import TokenAuthInterceptor
from embedrec.server.errors import ConfigurationError
from embedrec.server.settings import Settings

# Health name for liveness probes: SERVING from start to exit (the process and its event loop
# answer), unlike the service's name and "", which are SERVING only while calls can be served.
LIVENESS_SERVICE = "embedrec.liveness"


class GrpcEdge:
    """The gRPC server of one process and its health service."""

    def __init__(
        self, settings: Settings, state: ServingState, tokens: TokenGuard, operations: AdminOperations
    ) -> None:
        self.settings = settings
        self.health = health.aio.HealthServicer()
        interceptors = []
        if tokens.policy.enabled:
            interceptors.append(
                TokenAuthInterceptor(tokens, exempt_health=settings.security.auth_exempt_health, state=state)
            )
        message_limit = settings.server.max_message_bytes
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", message_limit),
                ("grpc.max_send_message_length", message_limit),
                # Workers of one host share the port; otherwise a second server on it is an error.
                ("grpc.so_reuseport", 1 if settings.server.reuse_port else 0),
            ],
        )
        register_embedrec_service(EmbedRecServicer(state), self.server)
        register_embedrec_service(EmbedRecAdminServicer(state, operations), self.server, ADMIN_SERVICE)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                SERVICE.full_name,
                ADMIN_SERVICE.full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )

    async def start(self) -> int:
        """Health NOT_SERVING (liveness SERVING), bind --host:--port, start; the bound port.
        Raises ConfigurationError when the port cannot be bound or TLS is misconfigured."""
        await self.set_serving(False)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        address = f"{self.settings.server.host}:{self.settings.server.port}"
        credentials = server_credentials(self.settings)
        try:
            if credentials is None:
                port = self.server.add_insecure_port(address)
            else:
                port = self.server.add_secure_port(address, credentials)
        except RuntimeError:  # grpc's "Failed to bind"
            port = 0
        if port == 0:
            raise ConfigurationError(f"cannot listen for gRPC on {address} (--port): in use or not allowed")
        await self.server.start()
        return int(port)

    async def set_serving(self, serving: bool) -> None:
        """Health of the service (and of "") SERVING or NOT_SERVING; not serving, the items'
        health too (set_items_serving turns it SERVING once the items are open)."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE.full_name, *(() if serving else (ITEMS_HEALTH_SERVICE,))):
            await self.health.set(name, status)

    async def set_items_serving(self, serving: bool) -> None:
        """Health of the item store (service ITEMS_HEALTH_SERVICE) SERVING or NOT_SERVING."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set(ITEMS_HEALTH_SERVICE, status)

    async def stop(self, grace: float) -> None:
        """Stop accepting calls; cancel what is still running after `grace` seconds."""
        await self.server.stop(grace)


def security_summary(settings: Settings, tokens: TokenGuard) -> str:
    """How both edges' start-up lines say what a client needs: "TLS, bearer tokens required"."""
    if settings.security.tls_client_ca is not None:
        transport = "mTLS (client certificates required)"
    else:
        transport = "TLS" if settings.security.tls_cert is not None else "plaintext"
    if not tokens.policy.enabled:
        return f"{transport}, no tokens"
    health = ", health exempt" if settings.security.auth_exempt_health else ""
    return f"{transport}, bearer tokens required{health}"


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings (mTLS when a client CA is set); None for plaintext."""
    if settings.security.tls_cert is None and settings.security.tls_key is None:
        if settings.security.tls_client_ca is not None:
            raise ConfigurationError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if settings.security.tls_cert is None or settings.security.tls_key is None:
        raise ConfigurationError("--tls-cert and --tls-key go together")
    try:
        pair = (settings.security.tls_key.read_bytes(), settings.security.tls_cert.read_bytes())
        client_ca = settings.security.tls_client_ca.read_bytes() if settings.security.tls_client_ca else None
    except OSError as error:
        raise ConfigurationError(f"TLS files unreadable: {error}") from None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)
