"""Spans recorded without the SDK's per-span machinery: what `server.observability.tracing`
records while tracing is on, imported only then.

The OpenTelemetry SDK's `Tracer.start_span` builds a mutable span per call (a lock, validated
bounded attributes, event and link lists, a start hook, a readable copy at the end): ~36 us of
Python per span here, on the event loop, four spans per call and two per batch. Every span
embedrec records is written once by embedrec alone, so `SpanRecorder` does what the SDK does that
matters for them and nothing more: the tracer's own sampler decides (a dropped span leaves a
non-sampled context for its children, as the SDK's does), ids come from the tracer's id
generator, and at the end one `ReadableSpan` (the SDK's finished-span type, with the tracer's
resource and instrumentation scope) goes to the provider's span processors' `on_end`, exactly
what exporters receive from the SDK. Not done for these spans: the processors' `on_start` hook
(no-op in the SDK's batch and simple processors), span limits (embedrec's spans carry at most
five short attributes) and the SDK's internal span metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, TraceFlags

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status()


class Started:
    """A span begun by `SpanRecorder.begin`: its context (valid even when not recorded, as
    children's parent), and what its end needs. Attributes may be added until it ends."""

    __slots__ = ("attributes", "context", "kind", "links", "name", "parent", "recording", "start_ns", "status")

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[Link],
        start_ns: int,
        recording: bool,
    ) -> None:
        self.name, self.context, self.parent, self.kind = name, context, parent, kind
        self.attributes, self.links, self.start_ns, self.recording = attributes, links, start_ns, recording
        self.status = _UNSET

    def as_parent(self) -> Context:
        """A context whose current span is this one (for its children, or to make it current)."""
        return trace.set_span_in_context(trace.NonRecordingSpan(self.context))


class SpanRecorder:
    """Begins and ends spans for one SDK tracer (see the module docstring)."""

    def __init__(self, tracer: Any) -> None:
        """`tracer`: an `opentelemetry.sdk.trace.Tracer` (`usable` says whether it is one)."""
        self._tracer = tracer
        self._sampler = tracer.sampler
        self._ids = tracer.id_generator
        self._resource = tracer.resource
        self._scope = tracer._instrumentation_scope
        self._processor = tracer.span_processor

    @staticmethod
    def usable(tracer: Any) -> bool:
        """True for a tracer with what `SpanRecorder` uses (the SDK's); other tracers are used
        through their own `start_span`."""
        wanted = ("sampler", "id_generator", "resource", "_instrumentation_scope", "span_processor", "_is_enabled")
        return all(hasattr(tracer, name) for name in wanted)

    def begin(
        self,
        name: str,
        parent: Context,
        start_ns: int,
        attributes: dict[str, Any],
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        links: Sequence[Link] = (),
    ) -> Started:
        """A span named `name`, child of `parent`'s current span (a new trace when it has none),
        begun at `start_ns` (wall clock); the sampler decides whether it is recorded."""
        parent_context: SpanContext | None = trace.get_current_span(parent).get_span_context()
        if parent_context is not None and parent_context.is_valid:
            trace_id, random_id = parent_context.trace_id, parent_context.trace_flags.random_trace_id
        else:
            parent_context, trace_id, random_id = None, self._ids.generate_trace_id(), self._ids.is_trace_id_random()
        recording, flags = False, _NOT_SAMPLED
        trace_state = parent_context.trace_state if parent_context is not None else None
        if self._tracer._is_enabled():
            result = self._sampler.should_sample(parent, trace_id, name, kind, attributes, links)
            recording, trace_state = result.decision.is_recording(), result.trace_state
            flags = _SAMPLED if result.decision.is_sampled() else _NOT_SAMPLED
            attributes = dict(result.attributes)  # as the SDK does: the sampler's attributes are the span's
        if random_id:
            flags = TraceFlags(flags | TraceFlags.RANDOM_TRACE_ID)
        context = SpanContext(
            trace_id, self._ids.generate_span_id(), is_remote=False, trace_flags=flags, trace_state=trace_state
        )
        return Started(name, context, parent_context, kind, attributes, links, start_ns, recording)

    def end(self, span: Started, end_ns: int) -> None:
        """End `span` at `end_ns`: a recorded span goes to the span processors, once."""
        if not span.recording:
            return
        span.recording = False
        self._processor.on_end(
            ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=self._resource,
                attributes=span.attributes,
                links=tuple(span.links),
                kind=span.kind,
                status=span.status,
                start_time=span.start_ns,
                end_time=end_ns,
                instrumentation_scope=self._scope,
            )
        )
