"""Watching the server: Prometheus metrics, OpenTelemetry tracing, log formatting."""
