"""OpenTelemetry settings: tracing is off without OTEL_* settings; an OTLP endpoint turns it on and
other exporters are refused. (Spans of real calls: tests/e2e/test_tracing.py.)"""

from __future__ import annotations

import pytest

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
