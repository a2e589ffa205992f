"""Least privilege: client tokens call the service, only admin tokens call EmbedRecAdmin;
reflection is guarded like the service; token files rotate on SIGHUP without dropping a call."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from embedrec.client import ChannelConfig, EmbedrecClient, EmbedrecClientError, PermissionDenied, Unauthenticated
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server
from tests.e2e.test_scale_out import free_port, serve, stop


def as_caller(server: ServerThread, token: str | None) -> EmbedrecClient:
    return EmbedrecClient(server.target, timeout=30, channel=ChannelConfig(bearer_token=token))


@pytest.fixture()
def guarded_server(tiny_model_dir: Path, tiny_items_dir: Path, tmp_path: Path) -> Iterator[ServerThread]:
    (tmp_path / "clients").write_text("client-token\n")
    (tmp_path / "admins").write_text("# operators\nadmin-token\n")
    server = start_server(
        server_settings(
            tiny_model_dir,
            tiny_items_dir,
            auth_tokens_file=tmp_path / "clients",
            admin_tokens_file=tmp_path / "admins",
        )
    )
    yield server
    server.close()


def test_a_client_token_may_not_call_admin_rpcs(guarded_server: ServerThread) -> None:
    with as_caller(guarded_server, "client-token") as client:
        assert client.info().item_count == 12
        with pytest.raises(PermissionDenied, match="needs an admin token") as error:
            client.reload_items()
    assert "--admin-tokens-file or EMBEDREC_ADMIN_TOKENS" in error.value.message  # both ways to set one


def test_an_admin_token_calls_admin_rpcs_and_everything_else(guarded_server: ServerThread) -> None:
    with as_caller(guarded_server, "admin-token") as admin:
        assert admin.reload_items().item_count == 12
        assert admin.info().item_count == 12


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_no_token_or_an_unknown_one_is_unauthenticated_everywhere(
    guarded_server: ServerThread, token: str | None
) -> None:
    with as_caller(guarded_server, token) as stranger:
        with pytest.raises(Unauthenticated, match="bearer token") as refused:
            stranger.reload_items()
        assert not isinstance(refused.value, PermissionDenied)
        with pytest.raises(Unauthenticated):
            stranger.info()


def test_with_client_tokens_but_no_admin_token_admin_rpcs_are_refused(
    tiny_model_dir: Path, tiny_items_dir: Path
) -> None:
    server = start_server(server_settings(tiny_model_dir, tiny_items_dir, auth_tokens="only-client"))
    try:
        with as_caller(server, "only-client") as client:
            assert client.info().dim == 32
            with pytest.raises(PermissionDenied):
                client.reload_items()
    finally:
        server.close()


def list_services(target: str, token: str | None) -> list[str]:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=30))
        return [service.name for service in response.list_services_response.service]


def test_reflection_is_guarded_by_the_tokens(guarded_server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        list_services(guarded_server.target, None)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "embedrec.v1.EmbedRec" in list_services(guarded_server.target, "client-token")


def test_reflection_is_open_on_a_server_without_tokens(tiny_server: ServerThread) -> None:
    assert "embedrec.v1.EmbedRecAdmin" in list_services(tiny_server.target, None)


def test_token_files_rotate_on_sighup_without_dropping_a_call(
    tiny_model_dir: Path, tiny_items_dir: Path, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token\n")
    port = free_port()
    process = serve(tiny_model_dir, tiny_items_dir, port, "--auth-tokens-file", str(tokens))
    target = f"127.0.0.1:{port}"
    current = {"token": "old-token"}
    outcomes: Counter[str] = Counter()
    stopping = threading.Event()

    def load() -> None:  # a caller that always uses the token it was last given
        while not stopping.is_set():
            with EmbedrecClient(target, timeout=30, channel=ChannelConfig(bearer_token=current["token"])) as caller:
                try:
                    caller.embed(["rotation under load"])
                    outcomes["OK"] += 1
                except EmbedrecClientError as error:
                    outcomes[error.code.name] += 1

    def accepted(token: str) -> bool:
        with EmbedrecClient(target, timeout=30, channel=ChannelConfig(bearer_token=token)) as caller:
            try:
                caller.info()
                return True
            except Unauthenticated:
                return False

    def eventually(*, token: str, expected: bool) -> None:
        deadline = time.monotonic() + 30
        while accepted(token) != expected:
            assert time.monotonic() < deadline, f"{token} accepted={not expected} 30 s after SIGHUP"
            time.sleep(0.1)

    try:
        with EmbedrecClient(target, channel=ChannelConfig(bearer_token="old-token", wait_for_ready=True)) as first:
            first.info(timeout=120)
        worker = threading.Thread(target=load)
        worker.start()
        tokens.write_text("old-token\nnew-token\n")  # step 1: both valid
        process.send_signal(signal.SIGHUP)
        eventually(token="new-token", expected=True)
        current["token"] = "new-token"  # the caller switches
        time.sleep(0.3)
        tokens.write_text("new-token\n")  # step 2: the old one retired
        process.send_signal(signal.SIGHUP)
        eventually(token="old-token", expected=False)
        time.sleep(0.3)
        stopping.set()
        worker.join(30)
        assert accepted("new-token")
    finally:
        stopping.set()
        code, stderr = stop(process)
    assert code == 0, stderr
    assert set(outcomes) == {"OK"} and outcomes["OK"] > 5, outcomes
