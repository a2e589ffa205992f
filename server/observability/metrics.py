"""Prometheus metrics, served over HTTP on their own port from start-up (before any request).

Each server has its own registry (several servers can live in one process, as in the tests).
The batcher reports through the `BatchObserver` methods here, so it stays free of any metrics
or transport library.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from embedrec.server.catalog.live_recall import RecallEstimate
from embedrec.server.catalog.mmap.scan import SCANS, ScanStats
from embedrec.server.catalog.store_health import StoreHealth

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
EFFICIENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

# name → (kind, help): docs/settings.md's metrics table is generated from this.
METRICS: dict[str, tuple[str, str]] = {
    "embedrec_requests_total": ("counter", "RPCs answered, by rpc and gRPC status code"),
    "embedrec_request_seconds": ("histogram", "time from receiving an RPC to answering it, by rpc"),
    "embedrec_queue_depth_texts": ("gauge", "texts waiting for inference"),
    "embedrec_queue_seconds": ("histogram", "time a text waited in the queue before its batch ran"),
    "embedrec_batch_size_texts": ("histogram", "texts per inference batch"),
    "embedrec_batch_token_efficiency": ("histogram", "real tokens / padded tokens per batch (1 = no padding)"),
    "embedrec_inference_seconds": ("histogram", "time of one batch's padding and session.run"),
    "embedrec_texts_embedded_total": ("counter", "texts run through the model (rate() gives texts/s)"),
    "embedrec_texts_dropped_total": ("counter", "queued texts dropped before inference, by reason"),
    "embedrec_search_queue_depth": ("gauge", "Recommend searches waiting for a pass over the item matrix"),
    "embedrec_search_batch_size": ("histogram", "searches answered by one pass over the item matrix"),
    "embedrec_search_seconds": ("histogram", "time of one pass over the item matrix (top-k for a batch of searches)"),
    "embedrec_searches_total": ("counter", "searches answered (rate() gives searches/s)"),
    "embedrec_searches_dropped_total": ("counter", "queued searches dropped before their pass, by reason"),
    "embedrec_items_reloads_total": ("counter", "item matrix reloads, by result (swapped, unchanged, refused)"),
    "embedrec_items": ("gauge", "items in the served catalog"),
    "embedrec_hidden_items": ("gauge", "items hidden by EmbedRecAdmin.HideItems (never recommended until restored)"),
    "embedrec_serving": ("gauge", "1 while health is SERVING, else 0"),
    "embedrec_scan_passes_total": ("counter", "passes over the memory-mapped items, by scan (int8, float32)"),
    "embedrec_scan_queries_total": ("counter", "queries answered by those passes, by scan"),
    "embedrec_scan_rescored_rows_total": (
        "counter",
        "rows rescored exactly from float32 after the first pass, by scan (rate() over queries' rate: rows per query)",
    ),
    "embedrec_scan_fallbacks_total": (
        "counter",
        "int8 passes that switched to float32 for their remaining rows (too many rows to rescore: a flat score "
        "distribution)",
    ),
    "embedrec_model_info": ("gauge", "1 for every model served, by model (its name) and task (embed, rerank)"),
    "embedrec_int8_host_mismatch": (
        "gauge",
        "1 for a served int8 model quantised for instructions this CPU lacks (a vnni model without VNNI: "
        "its arithmetic saturates; see docs/int8.md), by model; absent otherwise",
    ),
    "embedrec_model_batches_total": ("counter", "inference batches run, by model"),
    "embedrec_model_inputs_total": ("counter", "texts (embed) or (query, document) pairs (rerank) run, by model"),
    "embedrec_model_inference_seconds": ("histogram", "time of one batch's padding and session.run, by model"),
    "embedrec_model_queue_depth": ("gauge", "texts or pairs waiting for inference, by model"),
    "embedrec_model_dropped_total": ("counter", "queued texts or pairs dropped before inference, by model and reason"),
    "embedrec_items_store_up": (
        "gauge",
        "1 while the item store answers (the Milvus store: its last call or background probe succeeded), else 0",
    ),
    "embedrec_items_index_loading": (
        "gauge",
        "1 while an approximate Milvus index does not yet search every row through the index it built (Milvus "
        "answers from an interim index of lower recall meanwhile; Recommend answers are flagged index_loading)",
    ),
    "embedrec_items_live_recall": (
        "gauge",
        "an approximate Milvus index's rolling recall@k: the share of the exact top k its sampled searches "
        "returned, re-checked exactly in the background (--milvus-live-recall); absent when not measured",
    ),
    "embedrec_items_live_recall_samples": ("gauge", "searches the live recall estimate averages now"),
    "embedrec_items_live_recall_error": ("gauge", "the live recall estimate's 95% error bar (1.96 standard errors)"),
    "embedrec_items_live_recall_checks_total": (
        "counter",
        "sampled searches, by result: checked, skipped (more eligible rows than --milvus-live-recall-rows), "
        "dropped (the check queue was full)",
    ),
    "embedrec_items_store_failures_total": ("counter", "item store calls that failed (Milvus unreachable or refusing)"),
    "embedrec_http_connections_refused_total": (
        "counter",
        "HTTP connections answered and closed before their request reached the API, by reason (connections, "
        "header_size, header_timeout, malformed, evicted: waiting longest for a head at the connection cap)",
    ),
}


class ServerMetrics:
    """The server's metrics in a registry of their own; also the batcher's observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        help_of = {name: text for name, (_, text) in METRICS.items()}

        def metric(kind: Any, name: str, **extra: Any) -> Any:
            return kind(name.removesuffix("_total"), help_of[name], registry=self.registry, **extra)

        self.requests = metric(Counter, "embedrec_requests_total", labelnames=("rpc", "code"))
        self.request_seconds = metric(
            Histogram, "embedrec_request_seconds", labelnames=("rpc",), buckets=LATENCY_BUCKETS
        )
        self.queue_depth = metric(Gauge, "embedrec_queue_depth_texts")
        self.queue_seconds = metric(Histogram, "embedrec_queue_seconds", buckets=LATENCY_BUCKETS)
        self.batch_size = metric(Histogram, "embedrec_batch_size_texts", buckets=BATCH_SIZE_BUCKETS)
        self.efficiency = metric(Histogram, "embedrec_batch_token_efficiency", buckets=EFFICIENCY_BUCKETS)
        self.inference_seconds = metric(Histogram, "embedrec_inference_seconds", buckets=LATENCY_BUCKETS)
        self.texts_embedded = metric(Counter, "embedrec_texts_embedded_total")
        self.texts_dropped = metric(Counter, "embedrec_texts_dropped_total", labelnames=("reason",))
        self.items = metric(Gauge, "embedrec_items")
        self.hidden_items = metric(Gauge, "embedrec_hidden_items")
        self.items_reloads = metric(Counter, "embedrec_items_reloads_total", labelnames=("result",))
        self.search = SearchMetrics(
            metric(Gauge, "embedrec_search_queue_depth"),
            metric(Histogram, "embedrec_search_batch_size", buckets=BATCH_SIZE_BUCKETS),
            metric(Histogram, "embedrec_search_seconds", buckets=LATENCY_BUCKETS),
            metric(Counter, "embedrec_searches_total"),
            metric(Counter, "embedrec_searches_dropped_total", labelnames=("reason",)),
        )
        self.serving = metric(Gauge, "embedrec_serving")
        self.http_connections_refused = metric(
            Counter, "embedrec_http_connections_refused_total", labelnames=("reason",)
        )
        for reason in ("expired", "cancelled", "shutdown"):
            self.texts_dropped.labels(reason=reason)
        self.scan_stats = ScanStats()
        self.registry.register(_ScanCollector(self.scan_stats))
        self.model_info = metric(Gauge, "embedrec_model_info", labelnames=("model", "task"))
        self.int8_host_mismatch = metric(Gauge, "embedrec_int8_host_mismatch", labelnames=("model",))
        self.model_batches = metric(Counter, "embedrec_model_batches_total", labelnames=("model",))
        self.model_inputs = metric(Counter, "embedrec_model_inputs_total", labelnames=("model",))
        self.model_inference_seconds = metric(
            Histogram, "embedrec_model_inference_seconds", labelnames=("model",), buckets=LATENCY_BUCKETS
        )
        self.model_queue_depth = metric(Gauge, "embedrec_model_queue_depth", labelnames=("model",))
        self.model_dropped = metric(Counter, "embedrec_model_dropped_total", labelnames=("model", "reason"))
        self.store_health = StoreHealth()
        self.registry.register(_StoreHealthCollector(self.store_health))
        self.live_recall = _LiveRecallCollector()
        self.registry.register(self.live_recall)

    def serve_http(self, host: str, port: int) -> int:
        """Expose /metrics on host:port (0: a free port) in a daemon thread; return the port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)

    def observe_call(self, rpc: str, code: str, seconds: float) -> None:
        """One answered RPC."""
        self.requests.labels(rpc=rpc, code=code).inc()
        self.request_seconds.labels(rpc=rpc).observe(seconds)

    # BatchObserver
    def batch_ran(self, size: int, cost: int, padded_cost: int, run_s: float, queue_seconds: Sequence[float]) -> None:
        """An inference batch ran: its size, token efficiency (cost is tokens here), inference time
        and its texts' queue times."""
        self.batch_size.observe(size)
        self.efficiency.observe(cost / padded_cost if padded_cost else 1.0)
        self.inference_seconds.observe(run_s)
        self.texts_embedded.inc(size)
        for seconds in queue_seconds:
            self.queue_seconds.observe(seconds)

    def queue_changed(self, depth: int) -> None:
        """The number of queued texts changed."""
        self.queue_depth.set(depth)

    def items_dropped(self, reason: str, count: int) -> None:
        """`count` queued texts were dropped before inference (expired, cancelled, shutdown)."""
        self.texts_dropped.labels(reason=reason).inc(count)


class ModelMetrics:
    """One model's batcher observer: the model-labelled series, and the unlabelled inference
    series too for the first model (`also`: the server's metrics, whose unlabelled series predate
    several models and keep meaning the --model-dir model)."""

    def __init__(
        self,
        metrics: ServerMetrics,
        name: str,
        task: str,
        *,
        also: ServerMetrics | None = None,
        int8_host_mismatch: bool = False,
    ) -> None:
        metrics.model_info.labels(model=name, task=task).set(1)
        if int8_host_mismatch:
            metrics.int8_host_mismatch.labels(model=name).set(1)
        self._batches = metrics.model_batches.labels(model=name)
        self._inputs = metrics.model_inputs.labels(model=name)
        self._seconds = metrics.model_inference_seconds.labels(model=name)
        self._depth = metrics.model_queue_depth.labels(model=name)
        self._dropped = metrics.model_dropped
        self._name = name
        self._also = also

    def batch_ran(self, size: int, cost: int, padded_cost: int, run_s: float, queue_seconds: Sequence[float]) -> None:
        """A batch of `size` inputs ran in `run_s` seconds."""
        self._batches.inc()
        self._inputs.inc(size)
        self._seconds.observe(run_s)
        if self._also is not None:
            self._also.batch_ran(size, cost, padded_cost, run_s, queue_seconds)

    def queue_changed(self, depth: int) -> None:
        """Inputs waiting now."""
        self._depth.set(depth)
        if self._also is not None:
            self._also.queue_changed(depth)

    def items_dropped(self, reason: str, count: int) -> None:
        """`count` queued inputs were dropped before inference (`reason`)."""
        self._dropped.labels(model=self._name, reason=reason).inc(count)
        if self._also is not None:
            self._also.items_dropped(reason, count)


class SearchMetrics:
    """The search batcher's observer: queue depth, searches per pass, pass time, drops."""

    def __init__(self, queue_depth: Any, batch_size: Any, seconds: Any, searches: Any, dropped: Any) -> None:
        self._queue_depth, self._batch_size, self._seconds = queue_depth, batch_size, seconds
        self._searches, self._dropped = searches, dropped

    def batch_ran(self, size: int, cost: int, padded_cost: int, run_s: float, queue_seconds: Sequence[float]) -> None:
        """One pass over the matrix answered `size` searches in `run_s` seconds."""
        self._batch_size.observe(size)
        self._seconds.observe(run_s)
        self._searches.inc(size)

    def queue_changed(self, depth: int) -> None:
        """The number of queued searches changed."""
        self._queue_depth.set(depth)

    def items_dropped(self, reason: str, count: int) -> None:
        """`count` queued searches were dropped before their pass (expired, cancelled, shutdown)."""
        self._dropped.labels(reason=reason).inc(count)


class _LiveRecallCollector:
    """The served store's live recall estimate (`source`: set by the app, read at each scrape)."""

    def __init__(self) -> None:
        self.source: Callable[[], RecallEstimate | None] = lambda: None

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        estimate = self.source()
        if estimate is None:
            return []
        families = []
        for name, value in (
            ("embedrec_items_live_recall", estimate.recall),
            ("embedrec_items_live_recall_samples", estimate.samples),
            ("embedrec_items_live_recall_error", estimate.error),
        ):
            family = GaugeMetricFamily(name, METRICS[name][1], labels=("k",))
            family.add_metric((str(estimate.k),), float(value))
            families.append(family)
        checks = CounterMetricFamily(
            "embedrec_items_live_recall_checks",
            METRICS["embedrec_items_live_recall_checks_total"][1],
            labels=("result",),
        )
        for result, count in (
            ("checked", estimate.checked),
            ("skipped", estimate.skipped),
            ("dropped", estimate.dropped),
        ):
            checks.add_metric((result,), count)
        return [*families, checks]


class _StoreHealthCollector:
    """The item store's state (kept by the store, read at each scrape)."""

    def __init__(self, health: StoreHealth) -> None:
        self._health = health

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        state = self._health.state()
        up = GaugeMetricFamily("embedrec_items_store_up", METRICS["embedrec_items_store_up"][1])
        up.add_metric((), 1.0 if state.up else 0.0)
        failures = CounterMetricFamily(
            "embedrec_items_store_failures", METRICS["embedrec_items_store_failures_total"][1]
        )
        failures.add_metric((), state.failures)
        loading = GaugeMetricFamily("embedrec_items_index_loading", METRICS["embedrec_items_index_loading"][1])
        loading.add_metric((), 1.0 if state.index_loading else 0.0)
        return [up, failures, loading]


class _ScanCollector:
    """The scan counters (kept by the item store, read at each scrape)."""

    def __init__(self, stats: ScanStats) -> None:
        self._stats = stats

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        snapshot = self._stats.snapshot()
        families = []
        for name, key in (
            ("embedrec_scan_passes", "passes"),
            ("embedrec_scan_queries", "queries"),
            ("embedrec_scan_rescored_rows", "rescored_rows"),
        ):
            family = CounterMetricFamily(name, METRICS[f"{name}_total"][1], labels=("scan",))
            for scan in SCANS:
                family.add_metric((scan,), snapshot[key][scan])
            families.append(family)
        fallbacks = CounterMetricFamily("embedrec_scan_fallbacks", METRICS["embedrec_scan_fallbacks_total"][1])
        fallbacks.add_metric((), snapshot["fallbacks"])
        families.append(fallbacks)
        return families
