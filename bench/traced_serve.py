"""`embedrec serve` with OpenTelemetry tracing on and every span dropped by its exporter: what
tracing costs the server itself (span creation, attributes, links, the batch processor's queue),
without the cost of a collector on the same cores. Usage: python -m bench.traced_serve serve ..."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from embedrec import cli
from embedrec.server.observability import tracing


class DroppingExporter(SpanExporter):
    """Accepts every span and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def main() -> int:
    """Install a tracer provider with the dropping exporter, then run the CLI."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
    tracing.install(provider)
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
