"""Channel construction shared by the synchronous and asyncio clients, and the health codec.

`ChannelConfig` holds what a production caller sets once: several targets with round_robin,
retries of idempotent calls on UNAVAILABLE through the gRPC service config, keepalive, message
size limits, wait_for_ready, TLS or mTLS, and a bearer token. Health checks use the generated
grpc.health.v1 stubs of grpcio-health-checking (a small pure-Python package of gRPC's own).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 10.0  # seconds: the default deadline of every call

SERVICE_NAME = "embedrec.v1.EmbedRec"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC retry policy for the (all idempotent) embedrec RPCs; see gRFC A6.

    Each backoff is drawn uniformly from [0, current], current growing by `multiplier` from
    `initial_backoff_s` up to `max_backoff_s`. gRPC caps `max_attempts` at 5.
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    retryable_codes: tuple[str, ...] = ("UNAVAILABLE",)


@dataclass(frozen=True)
class ChannelConfig:
    """How to reach one or more embedrec servers.

    `target` is one gRPC target string ("host:port", "dns:///name:port",
    "ipv4:10.0.0.1:50051,10.0.0.2:50051") or a sequence of "host:port" replicas, which becomes
    an `ipv4:`/`ipv6:` list. `load_balancing` "round_robin" spreads calls over every resolved
    address; `retry` None disables retries. With `health_check`, the balancer skips replicas
    whose grpc.health.v1 status is not SERVING (starting, draining), so calls move to healthy
    ones before they fail (those checks carry no bearer token: turn `health_check` off when the
    server guards health with tokens). `separate_connection` gives this channel its own TCP connection
    instead of sharing one with other channels to the same target (load tests, workers that
    share a port). TLS is used when `tls` or any certificate is given.
    """

    target: str | Sequence[str] = "127.0.0.1:50051"
    load_balancing: str = "round_robin"
    retry: RetryPolicy | None = field(default_factory=RetryPolicy)
    wait_for_ready: bool = False
    health_check: bool = True
    separate_connection: bool = False
    keepalive_time_ms: int = 30_000
    keepalive_timeout_ms: int = 10_000
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    tls: bool = False
    root_certificates: Path | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None
    server_name_override: str | None = None
    bearer_token: str | None = None
    extra_options: Sequence[tuple[str, Any]] = ()

    @property
    def uses_tls(self) -> bool:
        """True when the channel must be secure."""
        return self.tls or any((self.root_certificates, self.client_certificate, self.client_key))

    def target_string(self) -> str:
        """The gRPC target string for `target`."""
        if isinstance(self.target, str):
            return self.target
        addresses = list(self.target)
        if not addresses:
            raise ValueError("target: give at least one address")
        if len(addresses) == 1:
            return addresses[0]
        scheme = "ipv6" if all(address.startswith("[") for address in addresses) else "ipv4"
        return f"{scheme}:{','.join(addresses)}"

    def service_config(self) -> dict[str, Any]:
        """The gRPC service config: load balancing, retries and wait_for_ready for the service."""
        method: dict[str, Any] = {"name": [{"service": SERVICE_NAME}], "waitForReady": self.wait_for_ready}
        if self.retry is not None:
            method["retryPolicy"] = {
                "maxAttempts": self.retry.max_attempts,
                "initialBackoff": f"{self.retry.initial_backoff_s}s",
                "maxBackoff": f"{self.retry.max_backoff_s}s",
                "backoffMultiplier": self.retry.multiplier,
                "retryableStatusCodes": list(self.retry.retryable_codes),
            }
        config: dict[str, Any] = {"loadBalancingConfig": [{self.load_balancing: {}}], "methodConfig": [method]}
        if self.health_check:
            config["healthCheckConfig"] = {"serviceName": SERVICE_NAME}
        return config

    def options(self) -> list[tuple[str, Any]]:
        """Channel options; `extra_options` come last and win."""
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.enable_retries", 1 if self.retry is not None else 0),
            ("grpc.service_config", json.dumps(self.service_config())),
        ]
        if self.separate_connection:
            options.append(("grpc.use_local_subchannel_pool", 1))
        if self.server_name_override:
            options.append(("grpc.ssl_target_name_override", self.server_name_override))
        return options + list(self.extra_options)

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials (mTLS with a client certificate and key), or None for plaintext."""
        if not self.uses_tls:
            return None
        if (self.client_certificate is None) != (self.client_key is None):
            raise ValueError("client_certificate and client_key go together (mTLS)")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.root_certificates),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_certificate),
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Per-call metadata: the bearer token, when set."""
        return (("authorization", f"Bearer {self.bearer_token}"),) if self.bearer_token else ()


def _read(path: Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def health_status(response: health_pb2.HealthCheckResponse) -> str:
    """The status name of a grpc.health.v1 response: SERVING, NOT_SERVING, SERVICE_UNKNOWN, …"""
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def open_channel(config: ChannelConfig, *, asyncio: bool) -> Any:
    """A grpc (or grpc.aio, when `asyncio`) channel for `config`: secure when TLS is set."""
    module: Any = grpc.aio if asyncio else grpc
    target, options = config.target_string(), config.options()
    credentials = config.credentials()
    if credentials is None:
        return module.insecure_channel(target, options=options)
    return module.secure_channel(target, credentials, options=options)
