"""OpenTelemetry settings: tracing is off without OTEL_* settings; an OTLP endpoint turns it on and
other exporters are refused; the span helpers keep the W3C context and mark errors. (Spans of real
calls: tests/e2e/test_tracing.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import StatusCode

from embedrec.server.errors import ConfigurationError
from embedrec.server.observability import tracing


def test_tracing_is_off_without_otel_settings() -> None:
    assert tracing.configure({}).startswith("off")
    assert tracing.configure(
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317"}
    ).startswith("off")
    assert tracing.configure({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}).startswith("off")
    assert not tracing.enabled()
    assert tracing.server_span("Embed", (), request_id="r") is tracing.NO_SPAN
    assert tracing.span("embedrec.tokenize") is tracing.NO_SPAN
    assert tracing.batch_tracer("inference") is None


def test_an_otlp_endpoint_turns_tracing_on_and_unsupported_exporters_are_refused() -> None:
    try:
        assert tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}).startswith("on: OTLP")
        assert tracing.enabled()
    finally:
        tracing.uninstall()
    with pytest.raises(ConfigurationError, match="zipkin"):
        tracing.configure({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ConfigurationError, match="http/protobuf"):
        tracing.configure({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert not tracing.enabled()


TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"


@pytest.fixture()
def memory() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()


def test_a_server_span_continues_the_w3c_headers_only_and_starts_a_trace_without_them(
    memory: InMemorySpanExporter,
) -> None:
    carrier = [
        (b"Traceparent", f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01".encode()),
        ("tracestate", "vendor=1"),
        ("user-agent", "x"),
    ]
    with tracing.server_span("Embed", carrier, request_id="r1"):
        with tracing.span("embedrec.admission", texts=1):
            pass
    with tracing.server_span("Embed", [("user-agent", "x")], request_id="r2"):
        pass
    admission, continued, fresh = memory.get_finished_spans()
    assert format(continued.context.trace_id, "032x") == TRACE_ID
    assert continued.parent is not None and format(continued.parent.span_id, "016x") == PARENT_SPAN_ID
    assert continued.context.trace_state.get("vendor") == "1"
    assert admission.parent is not None and admission.parent.span_id == continued.context.span_id
    assert fresh.parent is None and fresh.context.trace_id != continued.context.trace_id
    assert not otel_trace.get_current_span().get_span_context().is_valid  # the context is restored


def test_an_exception_leaving_a_server_span_marks_it_an_error_and_ends_it(memory: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="bad"), tracing.server_span("Embed", (), request_id="r"):
        raise ValueError("bad")
    (call,) = memory.get_finished_spans()
    assert call.status.status_code is StatusCode.ERROR and call.status.description == "ValueError: bad"
    assert not otel_trace.get_current_span().get_span_context().is_valid


def test_a_batch_links_to_the_calls_captured_in_it_and_parents_their_queue_spans(
    memory: InMemorySpanExporter,
) -> None:
    tracer = tracing.batch_tracer("inference", finish_span="embedrec.pooling")
    assert tracer is not None
    assert tracer.capture() is None  # outside any call: nothing to link
    with tracing.server_span("Embed", (), request_id="r"):
        captured = tracer.capture()
    tracer.batch_ran(
        [(captured, 1_000, 2), (None, 1_000, 1)],
        started_ns=2_000,
        inferred_ns=3_000,
        finished_ns=4_000,
        cost=9,
        padded_cost=12,
    )
    named = {span.name: span for span in memory.get_finished_spans()}
    call, queue, batch = named["Embed"], named["embedrec.inference.queue"], named["embedrec.inference.batch"]
    assert queue.parent is not None and queue.parent.span_id == call.context.span_id
    assert queue.attributes is not None and queue.attributes["embedrec.batch.items"] == 2
    assert [link.context.span_id for link in batch.links] == [call.context.span_id]
    assert batch.attributes is not None and batch.attributes["embedrec.batch.size"] == 3
    assert named["embedrec.pooling"].parent is not None
    assert named["embedrec.pooling"].parent.span_id == batch.context.span_id


def test_the_providers_sampler_decides_and_children_follow_an_unsampled_caller() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        tracer = tracing.batch_tracer("inference")
        assert tracer is not None
        with tracing.server_span("Embed", (), request_id="r"):  # a new trace: the root sampler drops it
            with tracing.span("embedrec.admission"):
                pass
        unsampled = [("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN_ID}-00")]
        with tracing.server_span("Embed", unsampled, request_id="r") as call:
            call.refused("OK")
            captured = tracer.capture()
        assert captured is not None  # still linked and propagated, just not recorded
        tracer.batch_ran([(captured, 1, 1)], started_ns=2, inferred_ns=3, finished_ns=4, cost=1, padded_cost=1)
        assert exporter.get_finished_spans() == ()
    finally:
        tracing.uninstall()


def test_a_refusal_keeps_its_status_when_the_abort_leaves_the_span(memory: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError), tracing.server_span("Embed", (), request_id="r") as call:
        call.refused("RESOURCE_EXHAUSTED")
        raise RuntimeError("abort")
    (span,) = memory.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR and span.status.description == "RESOURCE_EXHAUSTED"
    assert span.attributes is not None and span.attributes["rpc.grpc.status_code_name"] == "RESOURCE_EXHAUSTED"
    assert span.kind is otel_trace.SpanKind.SERVER and span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == tracing.TRACER_NAME
