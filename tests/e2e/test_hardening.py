"""Hardening: every bad input gets a clear status, overload and deadlines are answers, faults
stay contained, and the server can be watched (metrics, logs) without leaking request text."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedrec.client import AsyncEmbedrecClient, ChannelConfig, EmbedrecClient, Unavailable
from embedrec.server.errors import ConfigurationError
from embedrec.server.observability.logs import JsonFormatter
from embedrec.v1 import embedrec_pb2 as pb
from embedrec.v1 import embedrec_pb2_grpc as pb_grpc
from tests.e2e.conftest import CATALOG_ROWS, server_settings
from tests.e2e.server_thread import ServerThread, serve_command, start_server
from tests.support.paths import REPO_ROOT

DOCUMENTED = {"INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION"}
ITEM_IDS = [row["id"] for row in CATALOG_ROWS]


def call_raw(target: str, method: str, request_bytes: bytes, timeout: float = 10) -> grpc.RpcError | bytes:
    """Send raw bytes as the request of /embedrec.v1.EmbedRec/<method>; the reply or the error."""
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.unary_unary(
            f"/embedrec.v1.EmbedRec/{method}", request_serializer=None, response_deserializer=None
        )
        try:
            return call(request_bytes, timeout=timeout)  # type: ignore[no-any-return]
        except grpc.RpcError as error:
            return error


def status_of(target: str, method: str, request: Any) -> tuple[str, str]:
    reply = call_raw(target, method, request.SerializeToString())
    if isinstance(reply, grpc.RpcError):
        return reply.code().name, reply.details() or ""  # type: ignore[attr-defined]
    return "OK", ""


V = [0.1] * 32
BAD_INPUTS: list[tuple[str, str, Any, str, str]] = [
    ("no texts", "Embed", pb.EmbedRequest(), "INVALID_ARGUMENT", "texts is empty"),
    ("an empty string", "Embed", pb.EmbedRequest(texts=[""]), "INVALID_ARGUMENT", r"texts\[0\] is empty"),
    (
        "whitespace only",
        "Embed",
        pb.EmbedRequest(texts=[" \t\n "]),
        "INVALID_ARGUMENT",
        r"texts\[0\] is empty or blank",
    ),
    (
        "a text of 1 MB",
        "Embed",
        pb.EmbedRequest(texts=["a" * 1_000_000]),
        "INVALID_ARGUMENT",
        "1000000 characters.*max_chars_per_text=10000",
    ),
    (
        "more texts than the limit",
        "Embed",
        pb.EmbedRequest(texts=["x"] * 65),
        "INVALID_ARGUMENT",
        "the limit is max_texts_per_request=64",
    ),
    (
        "total characters over the limit",
        "Embed",
        pb.EmbedRequest(texts=["y" * 9_000] * 30),
        "INVALID_ARGUMENT",
        "max_total_chars=200000",
    ),
    (
        "too long with truncate=false",
        "Embed",
        pb.EmbedRequest(texts=["air " * 100], truncate=False),
        "INVALID_ARGUMENT",
        "max length of 48 tokens and truncate is false",
    ),
    ("an unknown pooling value", "Embed", pb.EmbedRequest(texts=["x"], pooling=9), "INVALID_ARGUMENT", "pooling"),
    (
        "similarity with both forms",
        "Similarity",
        pb.SimilarityRequest(query="a", candidates=["b"], pairs=[pb.TextPair(a="a", b="b")]),
        "INVALID_ARGUMENT",
        "either query",
    ),
    (
        "a vector of the wrong dim",
        "Recommend",
        pb.RecommendRequest(k=3, user_vector=[0.1] * 5),
        "INVALID_ARGUMENT",
        "user_vector has 5 values; the model's dim is 32",
    ),
    (
        "NaN in a vector",
        "Recommend",
        pb.RecommendRequest(k=3, user_vector=[float("nan"), *V[1:]]),
        "INVALID_ARGUMENT",
        "NaN or Inf",
    ),
    (
        "Inf in a vector",
        "Recommend",
        pb.RecommendRequest(k=3, user_vector=[float("inf"), *V[1:]]),
        "INVALID_ARGUMENT",
        "NaN or Inf",
    ),
    (
        "an all-zero vector",
        "Recommend",
        pb.RecommendRequest(k=3, user_vector=[0.0] * 32),
        "INVALID_ARGUMENT",
        "all zeros",
    ),
    (
        "k = 0",
        "Recommend",
        pb.RecommendRequest(k=0, user_vector=V),
        "INVALID_ARGUMENT",
        "k must be an integer from 1 to 1000 .* unset k reads as 0",
    ),
    ("negative k", "Recommend", pb.RecommendRequest(k=-5, user_vector=V), "INVALID_ARGUMENT", "got -5"),
    (
        "k over the limit",
        "Recommend",
        pb.RecommendRequest(k=1001, user_vector=V),
        "INVALID_ARGUMENT",
        r"1000 \(max_k\), got 1001",
    ),
    (
        "unknown item ids",
        "Recommend",
        pb.RecommendRequest(k=3, items=[pb.WeightedItem(id="nope")]),
        "NOT_FOUND",
        "items: unknown item id.*'nope'",
    ),
    (
        "duplicate item ids",
        "Recommend",
        pb.RecommendRequest(k=3, items=[pb.WeightedItem(id="ac-1"), pb.WeightedItem(id="ac-1")]),
        "INVALID_ARGUMENT",
        "items has duplicate id 'ac-1'",
    ),
    (
        "a non-finite weight",
        "Recommend",
        pb.RecommendRequest(k=3, texts=[pb.WeightedText(text="x", weight=float("inf"))]),
        "INVALID_ARGUMENT",
        r"texts\[0\].weight must be finite",
    ),
    (
        "dislikes only (negative weights)",
        "Recommend",
        pb.RecommendRequest(k=3, texts=[pb.WeightedText(text="x", weight=-1)]),
        "INVALID_ARGUMENT",
        "no part with a positive weight",
    ),
    ("no profile at all", "Recommend", pb.RecommendRequest(k=3), "INVALID_ARGUMENT", "profile is empty"),
]


@pytest.mark.parametrize(
    ("case", "method", "request_message", "code", "message"), BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_gets_a_clear_status_naming_the_field(
    tiny_server: ServerThread, case: str, method: str, request_message: Any, code: str, message: str
) -> None:
    import re

    answered_code, details = status_of(tiny_server.target, method, request_message)
    assert answered_code == code, details
    assert re.search(message, details), details


def test_excluding_everything_returns_no_items_not_an_error(tiny_server: ServerThread) -> None:
    code, _ = status_of(tiny_server.target, "Recommend", pb.RecommendRequest(k=3, user_vector=V, exclude_ids=ITEM_IDS))
    assert code == "OK"
    with EmbedrecClient(tiny_server.target) as client:
        assert client.recommend(3, vector=V, exclude_ids=ITEM_IDS) == []


def test_invalid_utf8_is_invalid_argument_not_internal(tiny_server: ServerThread) -> None:
    # EmbedRequest field 1 (texts), length 2, bytes that are not UTF-8.
    reply = call_raw(tiny_server.target, "Embed", b"\x0a\x02\xff\xfe")
    assert isinstance(reply, grpc.RpcError)
    assert reply.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "not a valid EmbedRequest" in reply.details()  # type: ignore[attr-defined]


def test_an_oversized_message_is_resource_exhausted(tiny_model_dir: Path) -> None:
    server = start_server(server_settings(tiny_model_dir, None, max_message_bytes=64 * 1024))
    try:
        reply = call_raw(server.target, "Embed", pb.EmbedRequest(texts=["z" * 100_000]).SerializeToString())
        assert isinstance(reply, grpc.RpcError)
        assert reply.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    finally:
        server.close()


texts_strategy = st.lists(st.text(max_size=60), max_size=70)
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=texts_strategy,
    normalize=st.none() | st.booleans(),
    truncate=st.none() | st.booleans(),
    pooling=st.integers(min_value=-3, max_value=5),
    k=st.integers(min_value=-10, max_value=2000),
    vector=st.lists(floats, max_size=40),
    item_ids=st.lists(st.sampled_from([*ITEM_IDS, "missing", ""]), max_size=5),
    weights=st.lists(floats, max_size=5),
    exclude=st.lists(st.text(max_size=10), max_size=5),
)
def test_random_requests_get_ok_or_a_documented_status(
    tiny_server: ServerThread,
    texts: list[str],
    normalize: bool | None,
    truncate: bool | None,
    pooling: int,
    k: int,
    vector: list[float],
    item_ids: list[str],
    weights: list[float],
    exclude: list[str],
) -> None:
    embed = pb.EmbedRequest(texts=texts, pooling=pooling)
    if normalize is not None:
        embed.normalize = normalize
    if truncate is not None:
        embed.truncate = truncate
    similarity = pb.SimilarityRequest(query=texts[0] if texts else "", candidates=texts[1:])
    pairs = pb.SimilarityRequest(pairs=[pb.TextPair(a=a, b=b) for a, b in itertools.pairwise(texts)])
    recommend = pb.RecommendRequest(
        k=k,
        user_vector=vector,
        exclude_ids=exclude,
        texts=[pb.WeightedText(text=text, weight=w) for text, w in zip(texts[:3], weights, strict=False)],
        items=[pb.WeightedItem(id=item_id, weight=w) for item_id, w in zip(item_ids, weights, strict=False)],
    )
    for method, request in (
        ("Embed", embed),
        ("Similarity", similarity),
        ("Similarity", pairs),
        ("Recommend", recommend),
        ("Info", pb.InfoRequest()),
    ):
        code, details = status_of(tiny_server.target, method, request)
        assert code == "OK" or code in DOCUMENTED, f"{method}: {code} {details}"


class GatedInference:
    """Wraps the batcher's inference so the test decides when each batch may run."""

    def __init__(self, server: ServerThread, *, fail_on: str | None = None) -> None:
        self.batcher = server.app.state.service.models.default.batcher  # type: ignore[union-attr]
        self.original = self.batcher._infers[0]
        self.gate = threading.Event()
        self.started = threading.Event()
        self.fail_on = fail_on
        self.batches: list[list[str]] = []
        self.tokenizer = server.app.state.service.models.encoder.tokenizer._tokenizer  # type: ignore[union-attr]
        self.batcher._infers[0] = self
        if self.batcher._idle_path is not None:  # a lone call's batch too (it would run on the idle twin)
            self.batcher._idle_path = dataclasses.replace(self.batcher._idle_path, infers=[self])

    def __call__(self, items: list[Any]) -> Any:
        texts = [self.tokenizer.decode(tokens.input_ids.tolist()) for tokens, _ in items]
        self.batches.append(texts)
        self.started.set()
        assert self.gate.wait(30)
        if self.fail_on is not None and any(self.fail_on in text for text in texts):
            raise RuntimeError("injected fault")
        return self.original(items)


@pytest.fixture()
def private_server(tiny_model_dir: Path, tiny_items_dir: Path) -> Iterator[ServerThread]:
    """A server of the test's own, so it may break it."""
    server = start_server(server_settings(tiny_model_dir, tiny_items_dir, max_queued_texts=16, max_batch_size=4))
    yield server
    server.close()


def test_saturated_embed_leaves_health_and_info_responsive_and_recovers(private_server: ServerThread) -> None:
    gated = GatedInference(private_server)

    async def scenario() -> tuple[list[str], float]:
        async with AsyncEmbedrecClient(private_server.target, timeout=30) as client:
            flood = [asyncio.ensure_future(client.embed([f"hello {i}"])) for i in range(40)]
            await asyncio.sleep(0.5)
            started = time.perf_counter()
            assert await client.health() == "SERVING"
            assert (await client.info()).dim == 32
            responsive_s = time.perf_counter() - started
            gated.gate.set()
            outcomes = []
            for call in flood:
                try:
                    await call
                    outcomes.append("OK")
                except Exception as error:  # noqa: BLE001
                    outcomes.append(type(error).__name__)
            assert (await client.embed(["after the storm"])).shape == (1, 32)
            return outcomes, responsive_s

    outcomes, responsive_s = asyncio.run(scenario())
    assert set(outcomes) == {"OK", "Overloaded"}
    assert outcomes.count("OK") >= 16
    assert responsive_s < 5  # generous: it must not wait for the queue (which is frozen)


def test_expired_and_cancelled_calls_are_dropped_before_inference(private_server: ServerThread) -> None:
    gated = GatedInference(private_server)
    batcher = gated.batcher

    async def scenario() -> None:
        async with AsyncEmbedrecClient(private_server.target, timeout=30) as client:
            blocker = asyncio.ensure_future(client.embed(["blocker"]))
            await asyncio.to_thread(gated.started.wait, 10)
            with pytest.raises(Exception, match="DEADLINE_EXCEEDED"):
                await client.embed(["expires while queued"], timeout=0.3)
            abandoned = asyncio.ensure_future(client.embed(["cancelled while queued"]))
            await asyncio.sleep(0.3)
            abandoned.cancel()
            await asyncio.sleep(0.3)
            gated.gate.set()
            await blocker
            await client.embed(["next"])

    asyncio.run(scenario())
    computed = [text for batch in gated.batches for text in batch]
    assert "expires while queued" not in computed and "cancelled while queued" not in computed
    assert batcher.stats.items_expired == 1
    assert batcher.stats.items_cancelled == 1


def test_an_exception_in_a_batch_fails_only_that_batch(private_server: ServerThread) -> None:
    gated = GatedInference(private_server, fail_on="boom")
    gated.gate.set()
    with EmbedrecClient(private_server.target) as client:
        with pytest.raises(Exception, match="INTERNAL: internal error; the details are in the server log"):
            client.embed(["boom"])
        assert client.embed(["fine"]).shape == (1, 32)
    assert gated.batcher.stats.batches_failed == 1


def test_a_dead_worker_is_restarted_and_nobody_waits_forever(private_server: ServerThread) -> None:
    batcher = private_server.app.state.service.models.default.batcher  # type: ignore[union-attr]
    original = batcher._form_batch
    crashes = [True]

    def crash_once() -> Any:
        if crashes:
            crashes.pop()
            raise RuntimeError("injected worker bug")
        return original()

    batcher._form_batch = crash_once
    no_retries = ChannelConfig(retry=None, health_check=False)  # the server's own answers, unfiltered
    with EmbedrecClient(private_server.target, timeout=10, channel=no_retries) as client:
        with pytest.raises(Unavailable, match="worker restarted"):
            client.embed(["first"])
        assert client.embed(["second"]).shape == (1, 32)
        assert client.health() == "SERVING"
    assert batcher.stats.worker_restarts == 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "items.npy").write_bytes((d / "items.npy").read_bytes()[:-100]), "unreadable"),
        (lambda d: np.save(d / "items.npy", np.load(d / "items.npy").astype(np.float64)), "dtype float64"),
        (lambda d: np.save(d / "items.npy", np.load(d / "items.npy")[:-1]), "disagrees? with the manifest"),
        (lambda d: (d / "ids.txt").write_text("only-one\n"), "disagrees? with the manifest"),
        (lambda d: (d / "items_manifest.json").write_text("{broken"), "items manifest unreadable"),
        (lambda d: (d / "items.npy").unlink(), "unreadable"),
    ],
    ids=["truncated", "wrong dtype", "wrong shape", "wrong ids", "broken manifest", "missing matrix"],
)
def test_a_damaged_item_matrix_is_a_clear_start_up_error(
    tiny_model_dir: Path, tiny_items_dir: Path, tmp_path: Path, damage: Callable[[Path], Any], message: str
) -> None:
    import shutil

    damaged = tmp_path / "items"
    shutil.copytree(tiny_items_dir, damaged)
    damage(damaged)
    with pytest.raises(ConfigurationError, match=message):
        start_server(server_settings(tiny_model_dir, damaged))


def test_metrics_are_exposed_from_start_and_count_calls(tiny_model_dir: Path, tiny_items_dir: Path) -> None:
    server = ServerThread(server_settings(tiny_model_dir, tiny_items_dir)).start()
    try:
        url = f"http://127.0.0.1:{server.app.metrics_port}/metrics"
        before = urllib.request.urlopen(url, timeout=5).read().decode()
        assert "embedrec_serving 0.0" in before
        assert "embedrec_queue_depth_texts 0.0" in before
        server.load()
        with EmbedrecClient(server.target) as client:
            client.embed(["one", "two", "three"])
            client.recommend(2, texts=["coffee"])
            with pytest.raises(Exception, match="INVALID_ARGUMENT"):
                client.embed([])
        after = urllib.request.urlopen(url, timeout=5).read().decode()
        counted = "\n".join(line for line in after.splitlines() if line.startswith(("embedrec_requests", "embedrec_s")))
        assert 'embedrec_requests_total{code="OK",rpc="Embed"} 1.0' in after, counted
        assert 'embedrec_requests_total{code="INVALID_ARGUMENT",rpc="Embed"} 1.0' in after, counted
        assert 'embedrec_requests_total{code="OK",rpc="Recommend"} 1.0' in after, counted
        assert "embedrec_serving 1.0" in after, counted
        assert f"embedrec_items {len(CATALOG_ROWS)}.0" in after
        texts_embedded = next(line for line in after.splitlines() if line.startswith("embedrec_texts_embedded_total"))
        assert float(texts_embedded.split()[-1]) >= 4  # warm-up texts included
        assert "embedrec_searches_total 1.0" in after
        assert "embedrec_search_queue_depth 0.0" in after
        for name in (
            "embedrec_request_seconds_bucket",
            "embedrec_batch_size_texts_bucket",
            "embedrec_batch_token_efficiency_bucket",
            "embedrec_inference_seconds_bucket",
            "embedrec_queue_seconds_bucket",
            "embedrec_search_batch_size_bucket",
            "embedrec_search_seconds_bucket",
        ):
            assert name in after
    finally:
        server.close()


def test_access_log_has_sizes_and_request_ids_but_never_text(
    tiny_model_dir: Path, tiny_items_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "my very private medical history"
    server = start_server(server_settings(tiny_model_dir, tiny_items_dir, access_log=True, log_level="DEBUG"))
    try:
        with caplog.at_level(logging.DEBUG), grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.EmbedRecStub(channel)
            _, call = stub.Embed.with_call(
                pb.EmbedRequest(texts=[secret, "x"]), timeout=10, metadata=(("x-request-id", "req-42"),)
            )
            assert ("x-request-id", "req-42") in call.trailing_metadata()
            stub.Recommend(pb.RecommendRequest(k=2, texts=[pb.WeightedText(text=secret)]), timeout=10)
            with pytest.raises(grpc.RpcError):
                stub.Embed(pb.EmbedRequest(texts=[secret * 1000]), timeout=10)
    finally:
        server.close()
    access = [record for record in caplog.records if getattr(record, "rpc", None)]
    embed = next(record for record in access if getattr(record, "request_id", "") == "req-42")
    assert (embed.rpc, embed.code, embed.texts, embed.chars) == ("Embed", "OK", 2, len(secret) + 1)  # type: ignore[attr-defined]
    formatter = JsonFormatter()
    for record in caplog.records:
        line = formatter.format(record)
        assert json.loads(line)["message"]
        assert secret not in line and secret[:12] not in record.getMessage()


def test_sigterm_under_load_drains_answers_every_call_and_exits_zero(
    tiny_model_dir: Path, tiny_items_dir: Path
) -> None:
    import signal
    import socket
    import subprocess

    from embedrec.client import EmbedrecClientError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = f"127.0.0.1:{port}"
    process = subprocess.Popen(
        serve_command(
            tiny_model_dir,
            *("--items-dir", str(tiny_items_dir), "--port", str(port), "--provider", "cpu", "--drain-seconds", "5"),
            *("--metrics-port", "-1", "--http-port", "-1"),
        ),
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with EmbedrecClient(target, channel=ChannelConfig(wait_for_ready=True)) as waiter:
            waiter.info(timeout=60)

        async def scenario() -> tuple[list[str], int, float]:
            outcomes: list[str] = []
            started = 0
            stop = asyncio.Event()
            async with AsyncEmbedrecClient(target, timeout=20, channel=ChannelConfig(retry=None)) as client:

                async def caller(index: int) -> None:
                    nonlocal started
                    while not stop.is_set():
                        started += 1
                        try:
                            await client.embed([f"caller {index} says hello"] * 4)
                            outcomes.append("OK")
                        except EmbedrecClientError as error:
                            outcomes.append(error.code.name)
                            return  # a caller moves on to another replica

                callers = [asyncio.ensure_future(caller(index)) for index in range(12)]
                await asyncio.sleep(1.0)
                process.send_signal(signal.SIGTERM)
                signalled = time.perf_counter()
                not_serving_after = float("inf")
                while time.perf_counter() - signalled < 2.0:
                    try:
                        status = await client.health(timeout=0.5)
                    except EmbedrecClientError:
                        status = "UNREACHABLE"
                    if status != "SERVING":
                        not_serving_after = time.perf_counter() - signalled
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.3)
                stop.set()
                await asyncio.wait_for(asyncio.gather(*callers), 30)
            return outcomes, started, not_serving_after

        outcomes, started, not_serving_after = asyncio.run(scenario())
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert len(outcomes) == started  # every call got exactly one answer
    assert set(outcomes) <= {"OK", "UNAVAILABLE"}, set(outcomes)
    assert outcomes.count("OK") > 10 and "UNAVAILABLE" in outcomes
    assert not_serving_after < 1.0
