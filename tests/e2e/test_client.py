"""The client library against real in-process servers: methods, errors, deadlines, retries,
load balancing, TLS and tokens."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from embedrec.client import (
    AsyncEmbedrecClient,
    ChannelConfig,
    DeadlineExceeded,
    EmbedrecClient,
    NotFound,
    Overloaded,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
)
from embedrec.ports import free_port
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server
from tests.support.certificates import make_certificates


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class TestMethods:
    def test_sync_and_async_clients_answer_alike(self, tiny_server: ServerThread) -> None:
        async def async_results() -> tuple:  # type: ignore[type-arg]
            async with AsyncEmbedrecClient(tiny_server.target) as client:
                return (
                    await client.embed(["hello", "world"]),
                    await client.similarity("hello", ["world", "hello"]),
                    await client.similarity_pairs([("a", "b")]),
                    await client.recommend(3, texts=["coffee"]),
                    await client.info(),
                    await client.health(),
                )

        with EmbedrecClient(tiny_server.target) as client:
            sync = (
                client.embed(["hello", "world"]),
                client.similarity("hello", ["world", "hello"]),
                client.similarity_pairs([("a", "b")]),
                client.recommend(3, texts=["coffee"]),
                client.info(),
                client.health(),
            )
        asynchronous = asyncio.run(async_results())
        for mine, theirs in zip(sync[:3], asynchronous[:3], strict=True):
            np.testing.assert_allclose(mine, theirs, atol=1e-6)
        assert [r.id for r in sync[3]] == [r.id for r in asynchronous[3]]
        assert sync[4] == asynchronous[4]
        assert sync[5] == asynchronous[5] == "SERVING"

    def test_a_string_instead_of_a_list_of_texts_is_refused_before_sending(self, client: EmbedrecClient) -> None:
        with pytest.raises(TypeError, match="not one string"):
            client.embed("hello")  # type: ignore[arg-type]

    def test_the_per_call_deadline_overrides_the_default(self, tiny_server: ServerThread) -> None:
        with EmbedrecClient(tiny_server.target, timeout=30) as client:
            with pytest.raises(DeadlineExceeded):
                client.embed(["hello"] * 64, timeout=1e-6)
            assert client.embed(["hello"], timeout=30).shape == (1, 32)

    def test_async_errors_are_mapped_too(self, tiny_server: ServerThread) -> None:
        async def call() -> None:
            async with AsyncEmbedrecClient(tiny_server.target) as client:
                await client.recommend(2, item_ids=["nope"])

        with pytest.raises(NotFound, match="nope"):
            asyncio.run(call())


def test_overload_is_resource_exhausted_at_once(tiny_model_dir: Path) -> None:
    server = start_server(server_settings(tiny_model_dir, None, max_queued_texts=8))
    try:
        with EmbedrecClient(server.target) as client, pytest.raises(Overloaded, match="max_queued_texts=8"):
            client.embed(["hello"] * 9)
    finally:
        server.close()


class TestAvailability:
    def test_wait_for_ready_waits_for_a_server_that_starts_late(self, tiny_model_dir: Path) -> None:
        port = free_port()
        result: list[object] = []

        def call() -> None:
            config = ChannelConfig(wait_for_ready=True)
            with EmbedrecClient(f"127.0.0.1:{port}", timeout=60, channel=config) as client:
                result.append(client.info().dim)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)
        assert result == []
        server = start_server(server_settings(tiny_model_dir, None, port=port))
        try:
            caller.join(60)
            assert result == [32]
        finally:
            server.close()

    def test_unavailable_is_retried_until_the_server_serves(self, tiny_model_dir: Path) -> None:
        server = start_server(server_settings(tiny_model_dir, None))
        server.app.state.draining = True
        try:
            retry = RetryPolicy(max_attempts=5, initial_backoff_s=0.5, max_backoff_s=0.5, multiplier=1.0)
            result: list[object] = []

            def call() -> None:
                with EmbedrecClient(server.target, timeout=30, channel=ChannelConfig(retry=retry)) as client:
                    result.append(client.info().dim)

            caller = threading.Thread(target=call)
            caller.start()
            deadline = time.monotonic() + 10
            while server.app.state.calls[("Info", "UNAVAILABLE")] == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            server.app.state.draining = False
            caller.join(30)
            assert result == [32]
            assert server.app.state.calls[("Info", "UNAVAILABLE")] >= 1
        finally:
            server.close()

    def test_without_retries_unavailable_reaches_the_caller(self, tiny_model_dir: Path) -> None:
        with EmbedrecClient(f"127.0.0.1:{free_port()}", channel=ChannelConfig(retry=None)) as client:
            with pytest.raises(Unavailable):
                client.info(timeout=5)

    def test_round_robin_spreads_calls_over_replicas(self, tiny_model_dir: Path) -> None:
        first = start_server(server_settings(tiny_model_dir, None))
        second = start_server(server_settings(tiny_model_dir, None))
        try:
            with EmbedrecClient([first.target, second.target]) as client:
                for _ in range(20):
                    client.info()
            served = [server.app.state.calls[("Info", "OK")] for server in (first, second)]
            assert sum(served) == 20
            assert min(served) >= 5, served
        finally:
            first.close()
            second.close()


class TestSecurity:
    def test_a_bearer_token_is_required_when_configured(self, tiny_model_dir: Path, tmp_path: Path) -> None:
        tokens = tmp_path / "tokens"
        tokens.write_text("# service tokens\nsecret-one\nsecret-two\n")
        server = start_server(server_settings(tiny_model_dir, None, auth_tokens_file=tokens))
        try:
            with EmbedrecClient(server.target) as anonymous:
                assert anonymous.health() == "SERVING"
                with pytest.raises(Unauthenticated, match="bearer token"):
                    anonymous.info()
            with EmbedrecClient(server.target, channel=ChannelConfig(bearer_token="wrong")) as impostor:
                with pytest.raises(Unauthenticated):
                    impostor.info()
            with EmbedrecClient(server.target, channel=ChannelConfig(bearer_token="secret-two")) as member:
                assert member.info().dim == 32
        finally:
            server.close()

    def test_tokens_from_the_environment_can_guard_health_too(self, tiny_model_dir: Path) -> None:
        from embedrec.server.settings import Settings

        settings = Settings.from_args(
            [
                "--model-dir",
                str(tiny_model_dir),
                "--port",
                "0",
                "--provider",
                "cpu",
                "--metrics-port",
                "-1",
                "--http-port",
                "-1",
            ],
            environ={"EMBEDREC_AUTH_TOKENS": "alpha, beta", "EMBEDREC_AUTH_EXEMPT_HEALTH": "false"},
        )
        server = start_server(settings)
        try:
            with EmbedrecClient(server.target, channel=ChannelConfig(health_check=False)) as anonymous:
                with pytest.raises(Unauthenticated):
                    anonymous.health()
            # gRPC's client-side health checks carry no per-call token: off when health is guarded.
            member_config = ChannelConfig(bearer_token="beta", health_check=False)
            with EmbedrecClient(server.target, channel=member_config) as member:
                assert member.health() == "SERVING"
                assert member.info().dim == 32
        finally:
            server.close()

    def test_mutual_tls(self, tiny_model_dir: Path, certificates: dict[str, Path]) -> None:
        server = start_server(
            server_settings(
                tiny_model_dir,
                None,
                tls_cert=certificates["server.crt"],
                tls_key=certificates["server.key"],
                tls_client_ca=certificates["ca.crt"],
            )
        )
        try:
            mutual = ChannelConfig(
                root_certificates=certificates["ca.crt"],
                client_certificate=certificates["client.crt"],
                client_key=certificates["client.key"],
            )
            with EmbedrecClient(server.target, channel=mutual) as client:
                assert client.info().dim == 32
            without_certificate = ChannelConfig(root_certificates=certificates["ca.crt"], retry=None)
            with EmbedrecClient(server.target, channel=without_certificate) as client:
                with pytest.raises(Unavailable):
                    client.info(timeout=5)
            with EmbedrecClient(server.target, channel=ChannelConfig(retry=None)) as plaintext:
                with pytest.raises(Unavailable):
                    plaintext.info(timeout=5)
        finally:
            server.close()


def test_tls_on_one_side_only_says_what_to_change(
    tiny_model_dir: Path, certificates: dict[str, Path], tiny_server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    """Plaintext to a TLS port names --tls and --ca, TLS to a plaintext port says to drop it, an
    unknown CA names --ca, nothing listening names the target; both start-up lines say TLS and
    tokens are on."""
    caplog.set_level("INFO")
    tls = {"tls_cert": certificates["server.crt"], "tls_key": certificates["server.key"]}
    server = start_server(server_settings(tiny_model_dir, None, auth_tokens="secret", **tls))
    try:
        lines = [record.getMessage() for record in caplog.records]
        assert any(line.startswith("listening on") and "TLS, bearer tokens required" in line for line in lines)
        assert any(line.startswith("HTTP on https") and "TLS, bearer tokens required" in line for line in lines)
        cases = [
            (server.target, ChannelConfig(retry=None), "connect with TLS: the CLI's --tls (--ca CA.pem"),
            (server.target, ChannelConfig(tls=True, retry=None), "pass that CA with --ca CA.pem"),
            (tiny_server.target, ChannelConfig(tls=True, retry=None), "speaks plaintext on this port: drop --tls"),
            (f"127.0.0.1:{free_port()}", ChannelConfig(retry=None), "check the target (the CLI's --target"),
        ]
        for target, config, hint in cases:
            with EmbedrecClient(target, channel=config) as client, pytest.raises(Unavailable) as error:
                client.info(timeout=5)
            assert hint in error.value.message, error.value.message
    finally:
        server.close()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    return make_certificates(tmp_path_factory.mktemp("certificates"))


def test_recommend_takes_a_profile_or_keywords_alike_on_both_clients(tiny_server: ServerThread) -> None:
    from embedrec.client.models import UserProfile

    profile = UserProfile(3, texts=["air conditioner"], exclude_ids=["ac-1"])
    with EmbedrecClient(tiny_server.target, timeout=30) as client:
        by_keywords = client.recommend(3, texts=["air conditioner"], exclude_ids=["ac-1"])
        assert client.recommend(profile=profile) == by_keywords
        with pytest.raises(TypeError, match="either profile"):
            client.recommend(profile=profile, explain=True)

    async def asynchronous() -> list[object]:
        async with AsyncEmbedrecClient(tiny_server.target, timeout=30) as aclient:
            return [
                await aclient.recommend(profile=profile),
                await aclient.recommend(3, texts=["air conditioner"], exclude_ids=["ac-1"]),
            ]

    assert asyncio.run(asynchronous()) == [by_keywords, by_keywords]
