"""OpenTelemetry tracing: off, at no cost, unless the standard OTEL_* environment turns it on.

`configure(environ)` reads the environment once at start (the SDK's own variables apply:
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_*):

- OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none: off;
- OTEL_TRACES_EXPORTER=otlp (OTLP over gRPC) or console: on, with that exporter;
- unset: on with OTLP when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
  set, off otherwise (a server nobody collects traces from exports nothing).

When off, nothing of OpenTelemetry is imported, `server_span` and `span` return one shared
do-nothing context, and the batchers get no tracer (one `None` check per batch).

What a call records (never request text, only sizes and timings):

- a SERVER span per call ("embedrec.v1.EmbedRec/Embed", "POST /v1/embeddings"), continuing the
  caller's W3C `traceparent` from gRPC metadata or HTTP headers;
- inside it "embedrec.admission" (validation, queue admission), "embedrec.tokenize" (attribute
  embedrec.tokens), "embedrec.prepare" (Recommend's id look-ups), and one "embedrec.<batcher>.queue"
  span per batch the call's work ran in (attribute embedrec.queue_ms);
- per batch one "embedrec.<batcher>.batch" span (its own trace, linked to the server span of every
  call in the batch; attributes embedrec.batch.size, .cost, .padded_cost) with, for inference, a
  child "embedrec.pooling".

The spans go to the provider's span processors as finished spans, recorded by
`server.observability.spans.SpanRecorder` rather than the SDK's `start_span` (a fraction of its
Python per span; the sampler, ids, resource and scope are the tracer's). While a call runs its
server span's context is current (as a non-recording span: propagation and children see it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from embedrec.server.errors import ConfigurationError

TRACER_NAME = "embedrec"
_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_provider: Any = None


def configure(environ: Mapping[str, str]) -> str:
    """Turn tracing on or off from the OTEL_* variables in `environ` (see the module docstring);
    a line for the log saying what was chosen. Raises ConfigurationError for an exporter or
    protocol this server cannot export with. A provider already installed in this process (see
    `install`) stays in force."""
    if _tracer is not None:
        return "on: a tracer provider installed in this process"
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "off (OTEL_SDK_DISABLED)"
    exporter_name = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if exporter_name == "none":
        return "off (OTEL_TRACES_EXPORTER=none)"
    if exporter_name == "" and not endpoint:
        return "off (no OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER)"
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if exporter_name in ("", "otlp"):
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
        )
        if protocol != "grpc":
            raise ConfigurationError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported; use grpc")
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter, described = OTLPSpanExporter(), f"OTLP/gRPC to {endpoint or 'http://localhost:4317'}"
    elif exporter_name == "console":
        exporter, described = ConsoleSpanExporter(), "console"
    else:
        raise ConfigurationError(f"OTEL_TRACES_EXPORTER={exporter_name} is not supported; use otlp, console or none")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    return f"on: {described}"


class _OpenTelemetry:
    """The OpenTelemetry names used per call, imported once when tracing is turned on."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from embedrec.server.observability.spans import SpanRecorder

        if not SpanRecorder.usable(tracer):
            raise ConfigurationError(f"tracing needs the OpenTelemetry SDK's tracer provider, not {type(tracer)}")
        self.recorder = SpanRecorder(tracer)
        self.trace = trace
        self.attach, self.detach, self.current = context.attach, context.detach, context.get_current
        self.no_parent = context.Context()  # what extract returns for a carrier without a traceparent
        self.Status, self.StatusCode, self.UNSET = Status, StatusCode, StatusCode.UNSET
        self.SERVER = trace.SpanKind.SERVER
        self.propagator = TraceContextTextMapPropagator()


_otel: Any = None


def install(provider: Any) -> None:
    """Trace with `provider` (an OpenTelemetry SDK TracerProvider) from now on: servers and
    batchers created afterwards record spans. Tests install one with an in-memory exporter."""
    global _tracer, _provider, _otel
    tracer = provider.get_tracer(TRACER_NAME)
    _otel = _OpenTelemetry(tracer)
    _provider, _tracer = provider, tracer


def uninstall() -> None:
    """Stop tracing (flushing what the provider holds); servers created afterwards trace nothing."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def enabled() -> bool:
    """True while tracing is on."""
    return _tracer is not None


class _NoSpan:
    """The span handed out while tracing is off: every method does nothing."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set(self, **attributes: Any) -> None:
        """Set attributes on the span (none while off)."""

    def refused(self, status: str) -> None:
        """Mark the call as answered with `status`, a gRPC status code name (nothing while off)."""


NO_SPAN = _NoSpan()


class _LeafSpan(_NoSpan):
    """A live span with no children: a child of the current span, never current itself (a
    context switch less than `_Span`). Begun when made, ended when its `with` block ends."""

    def __init__(self, name: str, attributes: dict[str, Any], *, kind: Any = None, parent: Any = None) -> None:
        extra = {} if kind is None else {"kind": kind}
        self._span = _otel.recorder.begin(
            name, _otel.current() if parent is None else parent, time.time_ns(), attributes, **extra
        )

    def __exit__(self, *exc: object) -> None:
        _otel.recorder.end(self._span, time.time_ns())

    def set(self, **attributes: Any) -> None:
        self._span.attributes.update({"embedrec." + key: value for key, value in attributes.items()})

    def refused(self, status: str) -> None:
        self._span.attributes["rpc.grpc.status_code_name"] = status
        if status != "OK":
            self._span.status = _otel.Status(_otel.StatusCode.ERROR, status)


class _Span(_LeafSpan):
    """A live span, current for the duration of its `with` block (its children's parent), as
    `trace.use_span(span, end_on_exit=True, record_exception=False)` would make it: an exception
    leaving the block marks it ERROR with the exception's type and text, unless a status was set."""

    def __enter__(self) -> _Span:
        self._token = _otel.attach(self._span.as_parent())
        return self

    def __exit__(self, *exc: object) -> None:
        _otel.detach(self._token)
        if len(exc) > 1 and isinstance(error := exc[1], Exception) and self._span.status.status_code is _otel.UNSET:
            self._span.status = _otel.Status(_otel.StatusCode.ERROR, f"{type(error).__name__}: {error}")
        _otel.recorder.end(self._span, time.time_ns())


def server_span(
    name: str, carrier: Iterable[tuple[Any, Any]], *, request_id: str, system: str = "grpc", **attributes: Any
) -> _NoSpan:
    """The SERVER span of one call named `name`, continuing the W3C trace context found in
    `carrier` (gRPC metadata pairs or HTTP header pairs, str or bytes); NO_SPAN while off."""
    if _tracer is None:
        return NO_SPAN
    # Only the W3C headers matter to the propagator; without a traceparent the call starts a trace.
    headers = {header: _text(value) for key, value in carrier if (header := _text(key).lower()) in _W3C_HEADERS}
    parent = _otel.propagator.extract(headers) if "traceparent" in headers else _otel.no_parent
    values = {"rpc.system": system, "rpc.method": name, "embedrec.request_id": request_id}
    values.update(attributes)
    return _Span(name, values, kind=_otel.SERVER, parent=parent)


def span(name: str, **attributes: Any) -> _NoSpan:
    """An INTERNAL span without children of its own, child of the current one, attributes
    prefixed "embedrec."; NO_SPAN while off."""
    if _tracer is None:
        return NO_SPAN
    return _LeafSpan(name, {"embedrec." + key: value for key, value in attributes.items()})


_W3C_HEADERS = frozenset(("traceparent", "tracestate"))


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class BatchTracer:
    """Records a micro-batcher's batches (the batcher's `tracer` hook): `capture` runs at submit,
    in the caller's context; `batch_ran` after a batch, with wall-clock nanosecond times."""

    batcher: str
    finish_span: str | None = None

    def capture(self) -> Any:
        """The caller's context, whose current span (the call's) is the parent of its queue span
        and the target of the batch's link; None when that span is not valid (nothing to trace)."""
        context = _otel.current()
        return context if _otel.trace.get_current_span(context).get_span_context().is_valid else None

    def batch_ran(
        self,
        requests: list[tuple[Any, int, int]],
        *,
        started_ns: int,
        inferred_ns: int,
        finished_ns: int,
        cost: int,
        padded_cost: int,
        error: BaseException | None = None,
    ) -> None:
        """Spans of one batch: `requests` holds (`capture`'s context, enqueued at ns, items of that
        request in the batch), one entry per request."""
        trace, recorder = _otel.trace, _otel.recorder
        size = sum(items for _, _, items in requests)
        links = []
        for context, enqueued_ns, items in requests:
            if context is None:
                continue
            queue_ms = (started_ns - enqueued_ns) / 1e6
            queue = recorder.begin(
                f"embedrec.{self.batcher}.queue",
                context,
                enqueued_ns,
                {"embedrec.queue_ms": queue_ms, "embedrec.batch.items": items},
            )
            recorder.end(queue, started_ns)
            links.append(trace.Link(trace.get_current_span(context).get_span_context()))
        attributes = {
            "embedrec.batch.size": size,
            "embedrec.batch.requests": len(requests),
            "embedrec.batch.cost": cost,
            "embedrec.batch.padded_cost": padded_cost,
        }
        batch = recorder.begin(f"embedrec.{self.batcher}.batch", _otel.no_parent, started_ns, attributes, links=links)
        if error is not None:
            batch.status = _otel.Status(_otel.StatusCode.ERROR, type(error).__name__)
        if self.finish_span is not None and error is None:
            recorder.end(recorder.begin(self.finish_span, batch.as_parent(), inferred_ns, {}), finished_ns)
        recorder.end(batch, finished_ns)


def batch_tracer(batcher: str, *, finish_span: str | None = None) -> BatchTracer | None:
    """A tracer for the micro-batcher named `batcher` while tracing is on, else None."""
    return BatchTracer(batcher, finish_span) if _tracer is not None else None
