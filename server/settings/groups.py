"""The settings groups of `embedrec serve`, one frozen class per concern.

Each field is a `--flag` of the same name and an `EMBEDREC_<NAME>` environment variable; the
class's docstring titles its group in `--help` and in docs/settings.md. Batching and the request
limits are not here: they are `BatchPolicy` and `Limits` themselves.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from embedrec.server.batching.policy import BatchPolicy
from embedrec.server.catalog.milvus.index import DEFAULT_EF, DEFAULT_NPROBE, MAX_EF
from embedrec.server.config import check_minimums, setting
from embedrec.server.edge.auth import TokenSources
from embedrec.server.inference.providers import PROVIDER_CHOICES

_MODEL_NAME = re.compile(r"^[A-Za-z0-9._/-]{1,128}$")


@dataclass(frozen=True)
class ModelSettings:
    """Model: what is served and how it runs"""

    model_dir: Path = setting(
        Path("models/all-MiniLM-L6-v2"),
        "exported embedding model directory (embedrec export-model): the first model, Recommend's and the "
        "default of Embed and Similarity",
    )
    model: tuple[str, ...] = setting(
        (),
        "another model to serve, NAME=DIR (repeatable; the environment variable takes NAME=DIR,NAME=DIR): an "
        "embedding model (calls name it in `model`) or a reranker exported with --task rerank (Rerank); each "
        "has its own queue, batcher and instances",
    )
    provider: str = setting(
        "auto", "ONNX Runtime provider: auto (CUDA when usable, else CPU), cuda, cpu", choices=PROVIDER_CHOICES
    )
    device_id: int = setting(0, "CUDA device index")
    cuda_memory_limit_mb: int = setting(0, "cap of the CUDA memory arena in MiB; 0: no cap")
    io_binding: str = setting(
        "auto",
        "bind model inputs and outputs to the provider's device (one copy each way): auto (on with CUDA), on, off",
        choices=("auto", "on", "off"),
    )
    instances: int = setting(
        1,
        "model instances: inference batches that may run at once, fed by the one batcher, each batch going to "
        "whichever instance is free (`embedrec tune` measures the best count for a machine; its tuning file "
        "sets this unless a flag does)",
        minimum=1,
    )
    sessions: int = setting(
        0,
        "ONNX Runtime sessions behind the instances (instance i runs on session i mod N): 0 gives every "
        "instance its own (own threads, a copy of the weights each, ~120 MiB for MiniLM); 1 lets all "
        "instances share one session and its threads (no extra memory; a lone batch still gets every thread)",
        minimum=0,
    )
    intra_op_threads: int = setting(
        0,
        "ONNX Runtime intra-op threads per session; 0: the cores divided among the sessions",
        minimum=0,
    )
    tuning: str = setting(
        "auto",
        "the tuning file of `embedrec tune` (MODEL_DIR/tuning.json): auto applies it when it was measured on "
        "this machine (CPU model, cores, provider) with this model, for the settings not given explicitly; "
        "off ignores it",
        choices=("auto", "off"),
    )
    intra_op_spinning: bool = setting(
        False,
        "let ONNX Runtime's intra-op threads spin between runs. Off: spinning threads take the cores from "
        "searches and the event loop (1-text Embed p50 under Recommend c=4: 37 ms spinning, 17 ms not; "
        "Embed c=32 throughput unchanged; BENCHMARKS.md)",
    )
    intra_op_spinning_in_runs: bool = setting(
        False,
        "with --intra-op-spinning off: let the intra-op threads spin between the operators of one run and stop "
        "the moment the last run returns (ONNX Runtime's force_spinning_stop), so a batch pays no thread wake-up "
        "per operator and idle threads leave the cores at once; false: they never spin",
    )

    idle_spinning_sessions: bool = setting(
        True,
        "on CPU, one more ONNX Runtime session (the idle twin) whose threads spin in runs, with the threads of all "
        "the sessions together, for a batch formed while it is the server's only call (1-text Embed c=1 p50 ~1 ms "
        "lower); every other batch runs on the first sessions, spinning as --intra-op-spinning-in-runs says. "
        "Another copy of the weights (~90 MiB for MiniLM)",
    )

    def __post_init__(self) -> None:
        check_minimums(self)
        self.extra_models  # noqa: B018 (raises ValueError naming --model on a malformed entry)

    @property
    def extra_models(self) -> dict[str, Path]:
        """The --model entries by name, in order; ValueError for one that is not NAME=DIR, a name
        given twice, or a name with characters other than letters, digits, '.', '_', '-', '/'."""
        models: dict[str, Path] = {}
        for entry in self.model:
            name, separator, directory = entry.partition("=")
            if not separator or not name or not directory:
                raise ValueError(f"--model takes NAME=DIR, got {entry!r}")
            if not _MODEL_NAME.match(name):
                raise ValueError(f"--model {name!r}: a name of letters, digits, '.', '_', '-' and '/'")
            if name in models:
                raise ValueError(f"--model {name!r} is given twice")
            models[name] = Path(directory)
        return models

    @property
    def session_count(self) -> int:
        """ONNX Runtime sessions to create: --sessions, else one per instance (never more)."""
        return min(self.sessions or self.instances, self.instances)

    @property
    def threads_per_session(self) -> int:
        """Intra-op threads of each session: --intra-op-threads, else the cores split evenly (0
        with one session: ONNX Runtime's default, one per physical core)."""
        if self.intra_op_threads or self.session_count == 1:
            return self.intra_op_threads
        return max(1, (os.cpu_count() or 1) // self.session_count)


@dataclass(frozen=True)
class SearchSettings:
    """Recommend: the items and how they are searched"""

    items_dir: Path | None = setting(None, "item matrix directory (embedrec export-items); none: no Recommend")
    items_store: str = setting(
        "mmap",
        "where the items live: mmap (the memory-mapped matrix of --items-dir) or milvus (a collection built by "
        "embedrec export-items --store milvus, at --milvus-uri)",
        choices=("mmap", "milvus"),
    )
    scan: str = setting(
        "int8",
        "how Recommend scans the memory-mapped items: int8 (the items' int8 codes first, a quarter of the "
        "bytes, then the few rows that may enter the top k rescored exactly from float32) or float32 (every "
        "row); both give the same exact answer (docs/exact-scan.md)",
        choices=("int8", "float32"),
    )
    score_formula: str = setting(
        "",
        "the score formula ranking every Recommend that brings none: similarity plus weighted terms of numeric "
        "fields, e.g. '0.08*log1p(popularity) + 0.2*gauss(published, origin=now, scale=604800)' "
        "(docs/score-formula.md); a request's own formula replaces it, score_formula 'none' ranks by similarity",
    )
    score_formula_file: Path | None = setting(
        None, "a file holding the default score formula (the --score-formula grammar; instead of --score-formula)"
    )
    max_search_batch: int = setting(
        32,
        "Recommend searches answered by one pass over the item matrix: concurrent calls share it "
        "(one matrix product per chunk for all of them instead of one pass each)",
        minimum=1,
    )
    search_threads: int = setting(
        0,
        "threads of one pass over the item matrix (the product of a batch of searches); 0: as many as "
        "--intra-op-threads",
        minimum=0,
    )
    search_niceness: int = setting(
        2,
        "how much lower the OS priority of the search threads is (nice; Linux, per thread): under contention a "
        "search pass yields part of the cores to the event loop and to inference, alone it runs at full speed. "
        "+5 protects Embed latency more but starves searches whenever anything else runs on the machine "
        "(BENCHMARKS.md); 0 turns it off",
        minimum=0,
    )
    max_queued_searches: int = setting(
        256,
        "Recommend searches waiting for the item matrix before new calls get RESOURCE_EXHAUSTED",
        minimum=1,
    )

    def __post_init__(self) -> None:
        check_minimums(self)

    @property
    def policy(self) -> BatchPolicy:
        """The search batcher's knobs (one search costs 1, no length grouping)."""
        return BatchPolicy(
            max_batch_size=self.max_search_batch,
            max_batch_tokens=self.max_search_batch,
            max_queued_texts=self.max_queued_searches,
            length_grouping=False,
            min_batch_efficiency=0.0,
        )


@dataclass(frozen=True)
class MilvusSettings:
    """Milvus: the item store of --items-store milvus"""

    milvus_uri: str = setting(
        "",
        "the Milvus holding the items with --items-store milvus: a local file path is Milvus Lite (embedded, one "
        "process), http(s)://host:port a Milvus server or cluster",
    )
    milvus_collection: str = setting("embedrec_items", "the Milvus collection of the items")
    milvus_token: str = setting(
        "",
        "Milvus token (user:password or an API key; prefer the environment variable: flags show in ps)",
        secret=True,
    )
    milvus_timeout_s: float = setting(
        10.0, "bound of one Milvus call in seconds when the call has no earlier deadline", minimum=0.1
    )
    milvus_probe_s: float = setting(
        5.0,
        "with --items-store milvus, probe Milvus this often in the background (every second while it is "
        "down), so health (service embedrec.items), Info and the metrics show its state without traffic",
        minimum=0.5,
    )
    milvus_ef: int = setting(
        0,
        f"search effort of an HNSW collection (ef, at most {MAX_EF}; raised to the results fetched); 0: {DEFAULT_EF}, "
        "measured in bench-milvus. A request may set its own (RecommendRequest.approximate)",
        minimum=0,
    )
    milvus_nprobe: int = setting(
        0,
        f"clusters an IVF_FLAT collection's search visits (at most its nlist); 0: {DEFAULT_NPROBE}, measured in "
        "bench-milvus. A request may set its own (RecommendRequest.approximate)",
        minimum=0,
    )
    milvus_live_recall: float = setting(
        0.01,
        "with an approximate Milvus index: the share of searches re-checked exactly in the background for the "
        "live recall@k estimate (Info items_live_recall, metric embedrec_items_live_recall); 0: off",
        minimum=0.0,
    )
    milvus_live_recall_window: int = setting(
        500, "searches the live recall estimate averages (the most recent checked ones)", minimum=1
    )
    milvus_live_recall_cpu: float = setting(
        0.05, "share of one core the live recall checks may use (they sleep to stay under it)", minimum=0.001
    )
    milvus_live_recall_rows: int = setting(
        100_000,
        "a sampled search is checked by an exact scan of the rows its filters admit, at most this many "
        "(more: skipped, counted in embedrec_items_live_recall_checks_total{result=skipped})",
        minimum=1,
    )

    def __post_init__(self) -> None:
        check_minimums(self)


@dataclass(frozen=True)
class ServerSettings:
    """Server: the gRPC listener and its processes"""

    host: str = setting("127.0.0.1", "address to listen on ([::] or 0.0.0.0 for all interfaces)")
    port: int = setting(50051, "port to listen on; 0 picks a free one")
    workers: int = setting(
        1, "server processes sharing the port (SO_REUSEPORT), each with its own model session", minimum=1
    )
    reuse_port: bool = setting(False, "let other processes bind the same port (set for workers by the supervisor)")
    max_message_bytes: int = setting(
        4 * 1024 * 1024,
        "largest request or response message (gRPC) and request body (HTTP), bytes; gRPC's own default. Every "
        "request the default limits allow fits but RecommendBatch with long exclude lists: raise it for those",
        minimum=1024,
    )
    cpu_threads: int = setting(
        0,
        "threads for request-sized CPU work kept off the event loop (tokenising long texts, catalog id "
        "look-ups, large responses); 0: one per core",
        minimum=0,
    )
    gil_switch_interval_ms: float = setting(
        1.0,
        "how long a Python thread may hold the GIL while another waits (Python's default is 5 ms): the "
        "event loop waits at most this long for a search or tokenising thread's Python steps, which bounds "
        "the tail latency other calls see under mixed load",
        minimum=0.01,
    )

    def __post_init__(self) -> None:
        check_minimums(self)


@dataclass(frozen=True)
class HttpSettings:
    """HTTP: the HTTP/JSON listener"""

    http_port: int = setting(
        8080,
        "HTTP/JSON port on --host (OpenAI-compatible /v1/embeddings, JSON mirrors of the RPCs, /health), "
        "sharing the model, queue, tokens and TLS with gRPC; 0 picks a free one, -1 turns HTTP off",
        minimum=-1,
    )
    http_max_connections: int = setting(
        4096,
        "open HTTP connections at most (lowered to the open-file limit less 256 when that is smaller); past it the "
        "connection waiting longest for a request head is closed to make room (503 with Retry-After for the new one "
        "only when none waits), so a flood of slow connections can neither exhaust descriptors nor lock clients out",
        minimum=1,
    )
    http_max_header_bytes: int = setting(
        32 * 1024, "largest HTTP request line and headers together, bytes (431 beyond)", minimum=1024
    )
    http_header_timeout_s: float = setting(
        10.0,
        "time an HTTP connection has to send a complete request head, from its start (408; a silent one is closed)",
        minimum=0.1,
    )
    http_body_timeout_s: float = setting(
        10.0, "longest wait for the next piece of an HTTP request body (408, connection closed)", minimum=0.1
    )
    http_keep_alive_s: int = setting(5, "idle seconds after which a kept-alive HTTP connection is closed", minimum=1)
    http_request_timeout_s: float = setting(
        60.0,
        "deadline of an HTTP call (504 past it, its queued work dropped); a client's x-request-timeout header "
        "(seconds) may shorten it",
        minimum=0.1,
    )

    def __post_init__(self) -> None:
        check_minimums(self)


@dataclass(frozen=True)
class SecuritySettings:
    """Security: TLS and bearer tokens"""

    tls_cert: Path | None = setting(None, "server certificate chain (PEM); with --tls-key the port speaks TLS")
    tls_key: Path | None = setting(None, "server private key (PEM)")
    tls_client_ca: Path | None = setting(None, "CA (PEM) that client certificates must chain to: requires mTLS")
    auth_tokens: str = setting(
        "", "comma-separated bearer tokens (prefer the environment variable: flags show in ps)", secret=True
    )
    auth_exempt_health: bool = setting(True, "health checks need no token (for orchestrators' probes)")
    auth_tokens_file: Path | None = setting(
        None,
        "file of client bearer tokens, one per line, re-read on SIGHUP (rotation without a restart); when "
        "set, every call needs 'authorization: Bearer <token>', reflection included (health per "
        "--auth-exempt-health)",
    )
    admin_tokens: str = setting(
        "",
        "comma-separated admin bearer tokens: only these may call EmbedRecAdmin (reloads); they may also "
        "make every other call (prefer the environment variable: flags show in ps)",
        secret=True,
    )
    admin_tokens_file: Path | None = setting(
        None,
        "file of admin bearer tokens, one per line; re-read on SIGHUP like --auth-tokens-file. With client "
        "tokens but no admin token, admin RPCs are refused (PERMISSION_DENIED)",
    )

    def __post_init__(self) -> None:
        check_minimums(self)

    @property
    def token_sources(self) -> TokenSources:
        """Where the bearer tokens come from."""
        return TokenSources(self.auth_tokens_file, self.auth_tokens, self.admin_tokens_file, self.admin_tokens)


@dataclass(frozen=True)
class LifecycleSettings:
    """Shutdown: draining on SIGTERM"""

    drain_seconds: float = setting(10.0, "on SIGTERM, how long in-flight calls may take to finish")
    drain_min_seconds: float = setting(
        0.5,
        "on SIGTERM, keep answering new calls UNAVAILABLE (health NOT_SERVING) at least this long before "
        "closing the port, so callers and balancers move on cleanly",
    )

    def __post_init__(self) -> None:
        check_minimums(self)


@dataclass(frozen=True)
class ObservabilitySettings:
    """Observability: logs and metrics"""

    log_level: str = setting("INFO", "log level (request text is never logged)")
    log_format: str = setting("text", "log format: text, or json (one object per line)", choices=("text", "json"))
    access_log: bool = setting(False, "log one line per call: rpc, status, ms, text count and characters, request id")
    metrics_port: int = setting(9464, "Prometheus /metrics HTTP port; 0 picks a free one, -1 disables")
    metrics_host: str = setting("127.0.0.1", "address the metrics endpoint listens on")

    def __post_init__(self) -> None:
        check_minimums(self)
