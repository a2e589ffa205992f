"""OpenTelemetry tracing: off unless OTEL_* says so; when on, one call yields the span tree the
module documents, continues the caller's W3C trace, links batches to their calls, and never
carries request text."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from embedrec.client import EmbedrecClient
from embedrec.server.observability import tracing
from embedrec.v1 import embedrec_pb2 as pb
from embedrec.v1 import embedrec_pb2_grpc as pb_grpc
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
SECRET_TEXT = "a private sentence about the caller's health"


@pytest.fixture()
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.install(provider)
    yield memory
    tracing.uninstall()


@pytest.fixture()
def traced_server(exporter: InMemorySpanExporter, tiny_model_dir: Path, tiny_items_dir: Path) -> Iterator[ServerThread]:
    server = start_server(server_settings(tiny_model_dir, tiny_items_dir))
    exporter.clear()  # forget the warm-up
    yield server
    server.close()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


def finished_spans_with(exporter: InMemorySpanExporter, name: str, count: int = 1) -> tuple[ReadableSpan, ...]:
    """The finished spans once `count` named `name` are among them: a server span ends just after
    its answer is sent (an HTTP response, a gRPC error status), so the caller may look first."""
    for _ in range(100):
        spans = exporter.get_finished_spans()
        if sum(span.name == name for span in spans) >= count:
            return spans
        time.sleep(0.05)
    return exporter.get_finished_spans()


def children_of(parent: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> set[str]:
    return {span.name for span in spans if span.parent is not None and span.parent.span_id == parent.context.span_id}


def all_attribute_values(spans: tuple[ReadableSpan, ...]) -> list[Any]:
    return [value for span in spans for value in (span.attributes or {}).values()]


def test_one_embed_call_yields_the_documented_span_tree(
    traced_server: ServerThread, exporter: InMemorySpanExporter
) -> None:
    with grpc.insecure_channel(traced_server.target) as channel:  # any gRPC client passing traceparent
        stub = pb_grpc.EmbedRecStub(channel)
        stub.Embed(pb.EmbedRequest(texts=[SECRET_TEXT, "and another one"]), metadata=[("traceparent", TRACEPARENT)])
    spans = exporter.get_finished_spans()
    named = by_name(spans)
    (call,) = named["Embed"]
    assert format(call.context.trace_id, "032x") == TRACE_ID  # the caller's trace continues
    assert call.parent is not None and format(call.parent.span_id, "016x") == PARENT_SPAN_ID
    assert call.attributes is not None and call.attributes["rpc.system"] == "grpc"
    assert {"embedrec.admission", "embedrec.tokenize", "embedrec.inference.queue"} <= children_of(call, spans)
    (tokenize,) = named["embedrec.tokenize"]
    assert tokenize.attributes is not None and tokenize.attributes["embedrec.tokens"] > 2
    # The two texts may run in one batch or two (length grouping): one queue span per batch.
    queues, batches = named["embedrec.inference.queue"], named["embedrec.inference.batch"]
    assert len(queues) == len(batches) in (1, 2)
    assert all(queue.attributes is not None and queue.attributes["embedrec.queue_ms"] >= 0 for queue in queues)
    assert sum(queue.attributes["embedrec.batch.items"] for queue in queues if queue.attributes) == 2
    for batch in batches:
        assert batch.context.trace_id != call.context.trace_id  # its own trace, linked to each call in it
        assert [link.context.span_id for link in batch.links] == [call.context.span_id]
        assert children_of(batch, spans) == {"embedrec.pooling"}
    assert sum(batch.attributes["embedrec.batch.size"] for batch in batches if batch.attributes) == 2
    costs = sum(batch.attributes["embedrec.batch.cost"] for batch in batches if batch.attributes)
    assert costs == tokenize.attributes["embedrec.tokens"]
    assert not any(SECRET_TEXT in str(value) for value in all_attribute_values(spans))


def test_a_recommend_call_traces_its_search_and_a_refusal_marks_the_span(
    traced_server: ServerThread, exporter: InMemorySpanExporter
) -> None:
    with EmbedrecClient(traced_server.target, timeout=30) as client:
        client.recommend(3, texts=[SECRET_TEXT])
        with pytest.raises(Exception, match="k"):
            client.recommend(0, texts=["x"])
    spans = finished_spans_with(exporter, "Recommend", count=2)
    named = by_name(spans)
    good, refused = sorted(named["Recommend"], key=lambda span: span.start_time or 0)
    assert {"embedrec.prepare", "embedrec.inference.queue", "embedrec.search.queue"} <= children_of(good, spans)
    (search,) = named["embedrec.search.batch"]
    assert [link.context.span_id for link in search.links] == [good.context.span_id]
    assert refused.attributes is not None and refused.attributes["rpc.grpc.status_code_name"] == "INVALID_ARGUMENT"
    assert not refused.status.is_ok
    assert not any(SECRET_TEXT in str(value) for value in all_attribute_values(spans))


def test_http_calls_continue_the_traceparent_header(
    traced_server: ServerThread, exporter: InMemorySpanExporter
) -> None:
    assert traced_server.app.state.service is not None
    body = {"model": traced_server.app.state.service.models.encoder.manifest.model_name, "input": SECRET_TEXT}
    request = urllib.request.Request(
        f"http://127.0.0.1:{traced_server.app.http_port}/v1/embeddings",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "traceparent": TRACEPARENT},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    spans = finished_spans_with(exporter, "POST /v1/embeddings")
    (call,) = by_name(spans)["POST /v1/embeddings"]
    assert format(call.context.trace_id, "032x") == TRACE_ID
    assert call.attributes is not None and call.attributes["rpc.system"] == "http"
    assert "embedrec.tokenize" in children_of(call, spans)
    assert not any(SECRET_TEXT in str(value) for value in all_attribute_values(spans))


def test_spans_are_exported_over_otlp_to_the_endpoint_the_environment_names(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real exporter path: OTEL_EXPORTER_OTLP_ENDPOINT turns tracing on, and an Embed call's
    spans arrive at a collector (here a gRPC TraceService sink in the test)."""
    import os
    from concurrent import futures

    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[str] = []

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            received.extend(
                span.name for spans in request.resource_spans for scope in spans.scope_spans for span in scope.spans
            )
            return trace_service_pb2.ExportTraceServiceResponse()

    collector = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), collector)
    port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    try:
        assert tracing.configure(os.environ).startswith("on: OTLP/gRPC")
        server = start_server(server_settings(tiny_model_dir, None))
        try:
            with EmbedrecClient(server.target, timeout=30) as client:
                client.embed([SECRET_TEXT])
        finally:
            server.close()
        tracing.uninstall()  # flushes the batch processor
        assert {"Embed", "embedrec.tokenize", "embedrec.inference.batch"} <= set(received)
    finally:
        tracing.uninstall()
        collector.stop(0)
