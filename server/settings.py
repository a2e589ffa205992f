"""Server settings: one frozen object, read once at the edge from flags and environment.

Each field is a `--flag` and an `EMBEDREC_<NAME>` environment variable (a flag wins over the
environment, the environment over the default); its help text sits next to it. Core classes
receive explicit values, never the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from embedrec.server.batching.batcher import BatchPolicy
from embedrec.server.catalog.milvus.index import DEFAULT_EF, DEFAULT_NPROBE, MAX_EF
from embedrec.server.catalog.score_formula import ScoreFormulaSpec, parse_formula
from embedrec.server.edge.auth import TokenSources
from embedrec.server.errors import InvalidArgument
from embedrec.server.inference.providers import PROVIDER_CHOICES
from embedrec.server.limits import Limits

ENV_PREFIX = "EMBEDREC_"


def _setting(default: Any, help_text: str, **extra: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help_text, **extra})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything `embedrec serve` can be told."""

    model_dir: Path = _setting(
        Path("models/all-MiniLM-L6-v2"),
        "exported embedding model directory (embedrec export-model): the first model, Recommend's and the "
        "default of Embed and Similarity",
    )
    model: tuple[str, ...] = _setting(
        (),
        "another model to serve, NAME=DIR (repeatable; the environment variable takes NAME=DIR,NAME=DIR): an "
        "embedding model (calls name it in `model`) or a reranker exported with --task rerank (Rerank); each "
        "has its own queue, batcher and instances",
    )
    items_dir: Path | None = _setting(None, "item matrix directory (embedrec export-items); none: no Recommend")
    items_store: str = _setting(
        "mmap",
        "where the items live: mmap (the memory-mapped matrix of --items-dir) or milvus (a collection built by "
        "embedrec export-items --store milvus, at --milvus-uri)",
        choices=("mmap", "milvus"),
    )
    scan: str = _setting(
        "int8",
        "how Recommend scans the memory-mapped items: int8 (the items' int8 codes first, a quarter of the "
        "bytes, then the few rows that may enter the top k rescored exactly from float32) or float32 (every "
        "row); both give the same exact answer (README: Exact int8 scan)",
        choices=("int8", "float32"),
    )
    milvus_uri: str = _setting(
        "",
        "the Milvus holding the items with --items-store milvus: a local file path is Milvus Lite (embedded, one "
        "process), http(s)://host:port a Milvus server or cluster",
    )
    milvus_collection: str = _setting("embedrec_items", "the Milvus collection of the items")
    milvus_token: str = _setting(
        "",
        "Milvus token (user:password or an API key; prefer the environment variable: flags show in ps)",
        secret=True,
    )
    milvus_timeout_s: float = _setting(
        10.0, "bound of one Milvus call in seconds when the call has no earlier deadline", minimum=0.1
    )
    milvus_probe_s: float = _setting(
        5.0,
        "with --items-store milvus, probe Milvus this often in the background (every second while it is "
        "down), so health (service embedrec.items), Info and the metrics show its state without traffic",
        minimum=0.5,
    )
    milvus_ef: int = _setting(
        0,
        f"search effort of an HNSW collection (ef, at most {MAX_EF}; raised to the results fetched); 0: {DEFAULT_EF}, "
        "measured in bench-milvus. A request may set its own (RecommendRequest.approximate)",
        minimum=0,
    )
    milvus_nprobe: int = _setting(
        0,
        f"clusters an IVF_FLAT collection's search visits (at most its nlist); 0: {DEFAULT_NPROBE}, measured in "
        "bench-milvus. A request may set its own (RecommendRequest.approximate)",
        minimum=0,
    )
    milvus_live_recall: float = _setting(
        0.01,
        "with an approximate Milvus index: the share of searches re-checked exactly in the background for the "
        "live recall@k estimate (Info items_live_recall, metric embedrec_items_live_recall); 0: off",
        minimum=0.0,
    )
    milvus_live_recall_window: int = _setting(
        500, "searches the live recall estimate averages (the most recent checked ones)", minimum=1
    )
    milvus_live_recall_cpu: float = _setting(
        0.05, "share of one core the live recall checks may use (they sleep to stay under it)", minimum=0.001
    )
    milvus_live_recall_rows: int = _setting(
        100_000,
        "a sampled search is checked by an exact scan of the rows its filters admit, at most this many "
        "(more: skipped, counted in embedrec_items_live_recall_checks_total{result=skipped})",
        minimum=1,
    )
    host: str = _setting("127.0.0.1", "address to listen on ([::] or 0.0.0.0 for all interfaces)")
    port: int = _setting(50051, "port to listen on; 0 picks a free one")
    workers: int = _setting(
        1, "server processes sharing the port (SO_REUSEPORT), each with its own model session", minimum=1
    )
    reuse_port: bool = _setting(False, "let other processes bind the same port (set for workers by the supervisor)")
    provider: str = _setting(
        "auto", "ONNX Runtime provider: auto (CUDA when usable, else CPU), cuda, cpu", choices=PROVIDER_CHOICES
    )
    device_id: int = _setting(0, "CUDA device index")
    cuda_memory_limit_mb: int = _setting(0, "cap of the CUDA memory arena in MiB; 0: no cap")
    io_binding: str = _setting(
        "auto",
        "bind model inputs and outputs to the provider's device (one copy each way): auto (on with CUDA), on, off",
        choices=("auto", "on", "off"),
    )
    instances: int = _setting(
        1,
        "model instances: inference batches that may run at once, fed by the one batcher, each batch going to "
        "whichever instance is free (`embedrec tune` measures the best count for a machine; its tuning file "
        "sets this unless a flag does)",
        minimum=1,
    )
    sessions: int = _setting(
        0,
        "ONNX Runtime sessions behind the instances (instance i runs on session i mod N): 0 gives every "
        "instance its own (own threads, a copy of the weights each, ~120 MiB for MiniLM); 1 lets all "
        "instances share one session and its threads (no extra memory; a lone batch still gets every thread)",
        minimum=0,
    )
    intra_op_threads: int = _setting(
        0,
        "ONNX Runtime intra-op threads per session; 0: the cores divided among the sessions",
        minimum=0,
    )
    tuning: str = _setting(
        "auto",
        "the tuning file of `embedrec tune` (MODEL_DIR/tuning.json): auto applies it when it was measured on "
        "this machine (CPU model, cores, provider) with this model, for the settings not given explicitly; "
        "off ignores it",
        choices=("auto", "off"),
    )
    intra_op_spinning: bool = _setting(
        False,
        "let ONNX Runtime's intra-op threads spin between runs. Off: spinning threads take the cores from "
        "searches and the event loop (1-text Embed p50 under Recommend c=4: 37 ms spinning, 17 ms not; "
        "Embed c=32 throughput unchanged; BENCHMARKS.md)",
    )
    max_batch_size: int = _setting(32, "most texts in one inference batch (32 is near the CPU optimum here)", minimum=1)
    max_batch_tokens: int = _setting(
        1024,
        "padded-token budget of a batch: texts x longest text. On CPU throughput per token is flat from 512 "
        "tokens up, so a small budget keeps long-text batches short and well grouped; raise it on a GPU",
        minimum=1,
    )
    max_wait_ms: float = _setting(
        0.0,
        "how long a partial batch may wait for more texts while the runtime is "
        "idle; 0 runs at once (lowest latency; batches still form under load)",
        minimum=0,
    )
    max_queued_texts: int = _setting(
        256,
        "texts waiting for inference before new calls get RESOURCE_EXHAUSTED; 256 is about 2 s of queue at "
        "this machine's CPU throughput: deeper queues only turn overload into latency",
        minimum=1,
    )
    length_grouping: bool = _setting(
        True, "group queued texts of similar token length into a batch (less padding); false: plain FIFO"
    )
    min_batch_efficiency: float = _setting(
        0.8,
        "a text joins a batch only while real/padded tokens stays at or above this; on CPU padding costs "
        "as much as real tokens and batching long texts gains nothing, so 0.8; on a GPU 0.5 or lower",
    )
    batch_lookahead: int = _setting(
        64,
        "oldest queued texts considered when grouping by length; bounds how far a text can be overtaken",
        minimum=1,
    )
    max_texts_per_request: int = _setting(Limits.max_texts_per_request, "texts per Embed request")
    max_chars_per_text: int = _setting(Limits.max_chars_per_text, "characters per text")
    max_total_chars: int = _setting(Limits.max_total_chars, "characters per request, all texts together")
    max_k: int = _setting(Limits.max_k, "largest k for Recommend")
    max_history_items: int = _setting(Limits.max_history_items, "item ids per Recommend profile")
    max_exclude_ids: int = _setting(Limits.max_exclude_ids, "exclude_ids per Recommend request")
    max_batch_users: int = _setting(Limits.max_batch_users, "users per RecommendBatch request")
    max_filter_values: int = _setting(Limits.max_filter_values, "filter_values per Recommend profile")
    max_offset: int = _setting(Limits.max_offset, "largest Recommend offset (results skipped for paging)")
    max_conditions: int = _setting(Limits.max_conditions, "field conditions (where) per Recommend profile")
    max_score_terms: int = _setting(Limits.max_score_terms, "terms of a Recommend score formula")
    score_formula: str = _setting(
        "",
        "the score formula ranking every Recommend that brings none: similarity plus weighted terms of numeric "
        "fields, e.g. '0.08*log1p(popularity) + 0.2*gauss(published, origin=now, scale=604800)' "
        "(docs/score-formula.md); a request's own formula replaces it, score_formula 'none' ranks by similarity",
    )
    score_formula_file: Path | None = _setting(
        None, "a file holding the default score formula (the --score-formula grammar; instead of --score-formula)"
    )
    max_search_batch: int = _setting(
        32,
        "Recommend searches answered by one pass over the item matrix: concurrent calls share it "
        "(one matrix product per chunk for all of them instead of one pass each)",
        minimum=1,
    )
    search_threads: int = _setting(
        0,
        "threads of one pass over the item matrix (the product of a batch of searches); 0: as many as "
        "--intra-op-threads",
        minimum=0,
    )
    search_niceness: int = _setting(
        2,
        "how much lower the OS priority of the search threads is (nice; Linux, per thread): under contention a "
        "search pass yields part of the cores to the event loop and to inference, alone it runs at full speed. "
        "+5 protects Embed latency more but starves searches whenever anything else runs on the machine "
        "(BENCHMARKS.md); 0 turns it off",
        minimum=0,
    )
    cpu_threads: int = _setting(
        0,
        "threads for request-sized CPU work kept off the event loop (tokenising long texts, catalog id "
        "look-ups, large responses); 0: one per core",
        minimum=0,
    )
    gil_switch_interval_ms: float = _setting(
        1.0,
        "how long a Python thread may hold the GIL while another waits (Python's default is 5 ms): the "
        "event loop waits at most this long for a search or tokenising thread's Python steps, which bounds "
        "the tail latency other calls see under mixed load",
        minimum=0.01,
    )
    max_queued_searches: int = _setting(
        256,
        "Recommend searches waiting for the item matrix before new calls get RESOURCE_EXHAUSTED",
        minimum=1,
    )
    tls_cert: Path | None = _setting(None, "server certificate chain (PEM); with --tls-key the port speaks TLS")
    tls_key: Path | None = _setting(None, "server private key (PEM)")
    tls_client_ca: Path | None = _setting(None, "CA (PEM) that client certificates must chain to: requires mTLS")
    auth_tokens: str = _setting(
        "", "comma-separated bearer tokens (prefer the environment variable: flags show in ps)", secret=True
    )
    auth_exempt_health: bool = _setting(True, "health checks need no token (for orchestrators' probes)")
    auth_tokens_file: Path | None = _setting(
        None,
        "file of client bearer tokens, one per line, re-read on SIGHUP (rotation without a restart); when "
        "set, every call needs 'authorization: Bearer <token>', reflection included (health per "
        "--auth-exempt-health)",
    )
    admin_tokens: str = _setting(
        "",
        "comma-separated admin bearer tokens: only these may call EmbedRecAdmin (reloads); they may also "
        "make every other call (prefer the environment variable: flags show in ps)",
        secret=True,
    )
    admin_tokens_file: Path | None = _setting(
        None,
        "file of admin bearer tokens, one per line; re-read on SIGHUP like --auth-tokens-file. With client "
        "tokens but no admin token, admin RPCs are refused (PERMISSION_DENIED)",
    )
    max_message_bytes: int = _setting(
        4 * 1024 * 1024,
        "largest request or response message (gRPC) and request body (HTTP), bytes; gRPC's own default. Every "
        "request the default limits allow fits but RecommendBatch with long exclude lists: raise it for those",
        minimum=1024,
    )
    drain_seconds: float = _setting(10.0, "on SIGTERM, how long in-flight calls may take to finish")
    drain_min_seconds: float = _setting(
        0.5,
        "on SIGTERM, keep answering new calls UNAVAILABLE (health NOT_SERVING) at least this long before "
        "closing the port, so callers and balancers move on cleanly",
    )
    log_level: str = _setting("INFO", "log level (request text is never logged)")
    log_format: str = _setting("text", "log format: text, or json (one object per line)", choices=("text", "json"))
    access_log: bool = _setting(False, "log one line per call: rpc, status, ms, text count and characters, request id")
    http_port: int = _setting(
        8080,
        "HTTP/JSON port on --host (OpenAI-compatible /v1/embeddings, JSON mirrors of the RPCs, /health), "
        "sharing the model, queue, tokens and TLS with gRPC; 0 picks a free one, -1 turns HTTP off",
        minimum=-1,
    )
    http_max_connections: int = _setting(
        4096,
        "open HTTP connections at most (lowered to the open-file limit less 256 when that is smaller); past it the "
        "connection waiting longest for a request head is closed to make room (503 with Retry-After for the new one "
        "only when none waits), so a flood of slow connections can neither exhaust descriptors nor lock clients out",
        minimum=1,
    )
    http_max_header_bytes: int = _setting(
        32 * 1024, "largest HTTP request line and headers together, bytes (431 beyond)", minimum=1024
    )
    http_header_timeout_s: float = _setting(
        10.0,
        "time an HTTP connection has to send a complete request head, from its start (408; a silent one is closed)",
        minimum=0.1,
    )
    http_body_timeout_s: float = _setting(
        10.0, "longest wait for the next piece of an HTTP request body (408, connection closed)", minimum=0.1
    )
    http_keep_alive_s: int = _setting(5, "idle seconds after which a kept-alive HTTP connection is closed", minimum=1)
    http_request_timeout_s: float = _setting(
        60.0,
        "deadline of an HTTP call (504 past it, its queued work dropped); a client's x-request-timeout header "
        "(seconds) may shorten it",
        minimum=0.1,
    )
    metrics_port: int = _setting(9464, "Prometheus /metrics HTTP port; 0 picks a free one, -1 disables")
    metrics_host: str = _setting("127.0.0.1", "address the metrics endpoint listens on")

    # Not a flag: the settings given explicitly (flag or environment), which a tuning file never
    # overrides. Settings built in code count every value that differs from its default.
    explicit: frozenset[str] | None = dataclasses.field(default=None, metadata={"internal": True})

    def explicitly_set(self) -> frozenset[str]:
        """Names of the settings given explicitly (see `explicit`)."""
        if self.explicit is not None:
            return self.explicit
        return frozenset(f.name for f in _flag_fields() if getattr(self, f.name) != f.default)

    @property
    def batch_policy(self) -> BatchPolicy:
        """The micro-batcher's knobs in force."""
        return BatchPolicy(
            max_batch_size=self.max_batch_size,
            max_batch_cost=self.max_batch_tokens,
            max_wait_ms=self.max_wait_ms,
            max_queued_items=self.max_queued_texts,
            group_by_length=self.length_grouping,
            lookahead=self.batch_lookahead,
            min_efficiency=self.min_batch_efficiency,
        )

    @property
    def limits(self) -> Limits:
        """The per-request limits in force."""
        return Limits(
            max_texts_per_request=self.max_texts_per_request,
            max_chars_per_text=self.max_chars_per_text,
            max_total_chars=self.max_total_chars,
            max_k=self.max_k,
            max_history_items=self.max_history_items,
            max_exclude_ids=self.max_exclude_ids,
            max_batch_users=self.max_batch_users,
            max_filter_values=self.max_filter_values,
            max_offset=self.max_offset,
            max_conditions=self.max_conditions,
            max_score_terms=self.max_score_terms,
        )

    @property
    def default_score_formula(self) -> ScoreFormulaSpec | None:
        """The default score formula's terms (None: none); ValueError naming the flag when it
        does not parse, has too many terms, or both flags are given."""
        if self.score_formula and self.score_formula_file is not None:
            raise ValueError("give --score-formula or --score-formula-file, not both")
        flag, text = "--score-formula", self.score_formula
        if self.score_formula_file is not None:
            flag = "--score-formula-file"
            try:
                text = self.score_formula_file.read_text(encoding="utf-8")
            except OSError as error:
                raise ValueError(f"{flag} {self.score_formula_file}: {error.strerror or error}") from None
        if not text.strip():
            return None
        try:
            spec = parse_formula(text, field=flag)
        except InvalidArgument as error:
            raise ValueError(str(error)) from None
        if len(spec.terms) > self.max_score_terms:
            limit = self.max_score_terms
            raise ValueError(f"{flag} has {len(spec.terms)} terms; the limit is --max-score-terms={limit}")
        return spec if spec.terms else None

    def __post_init__(self) -> None:
        for setting in _flag_fields():
            minimum = setting.metadata.get("minimum")
            value = getattr(self, setting.name)
            if minimum is not None and value < minimum:
                flag = "--" + setting.name.replace("_", "-")
                raise ValueError(f"{flag} must be at least {minimum}, got {value}")
        self.extra_models  # noqa: B018 (raises ValueError naming --model on a malformed entry)
        self.default_score_formula  # noqa: B018 (raises ValueError naming the flag when it does not parse)
        if self.items_store == "milvus":
            if not self.milvus_uri:
                raise ValueError("--items-store milvus needs --milvus-uri (a Milvus Lite file or http(s)://host:port)")
            if self.items_dir is not None:
                raise ValueError("--items-dir is the mmap store's; with --items-store milvus leave it out")
            if self.workers > 1 and not self.milvus_uri.startswith(("http://", "https://", "tcp://")):
                raise ValueError(
                    "Milvus Lite is a file one process opens: --workers > 1 needs a Milvus server (http(s)://host:port)"
                )

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
    def token_sources(self) -> TokenSources:
        """Where the bearer tokens come from."""
        return TokenSources(self.auth_tokens_file, self.auth_tokens, self.admin_tokens_file, self.admin_tokens)

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

    @property
    def search_thread_count(self) -> int:
        """Threads of one search pass (0: ONNX Runtime's default, one per core)."""
        return self.search_threads or self.intra_op_threads * self.session_count

    @property
    def search_policy(self) -> BatchPolicy:
        """The search batcher's knobs in force (one search costs 1, no length grouping)."""
        return BatchPolicy(
            max_batch_size=self.max_search_batch,
            max_batch_cost=self.max_search_batch,
            max_queued_items=self.max_queued_searches,
            group_by_length=False,
        )

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse flags `argv` over the environment `environ` (default: os.environ) over defaults."""
        environ = os.environ if environ is None else environ
        parser = argparse.ArgumentParser(prog="embedrec serve", description="Run the embedrec gRPC server.")
        add_arguments(parser, environ)
        arguments = list(sys.argv[1:] if argv is None else argv)
        try:
            settings = cls.from_namespace(parser.parse_args(arguments))
        except ValueError as error:  # a value out of range: a usage error naming the flag (exit 2)
            parser.error(str(error))
        given = {
            f.name
            for f in _flag_fields()
            if ENV_PREFIX + f.name.upper() in environ
            or any(word.split("=")[0] == "--" + f.name.replace("_", "-") for word in arguments)
        }
        return dataclasses.replace(settings, explicit=frozenset(given))

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> Settings:
        """Settings from an argparse namespace filled by `add_arguments`."""
        return cls(**{f.name: getattr(namespace, f.name) for f in _flag_fields()})


_MODEL_NAME = re.compile(r"^[A-Za-z0-9._/-]{1,128}$")


def _flag_fields() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Settings) if not f.metadata.get("internal")]


def add_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Add one flag per Settings field, its default taken from `environ` when set there."""
    for field in _flag_fields():
        env_name = ENV_PREFIX + field.name.upper()
        convert = _converter(field.type)
        default = convert(environ[env_name]) if env_name in environ else field.default
        shown_default = "" if field.metadata.get("secret") else field.default
        if "tuple[str" in str(field.type):  # repeatable: every flag given, else the environment's list
            parser.add_argument(
                "--" + field.name.replace("_", "-"),
                dest=field.name,
                action=_AppendOver,
                default=tuple(item for item in environ.get(env_name, "").split(",") if item),
                help=f"{field.metadata['help']} (env {env_name}; default: none)",
            )
            continue
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=convert,
            default=default,
            choices=field.metadata.get("choices"),
            help=f"{field.metadata['help']} (env {env_name}; default: {shown_default})",
        )


class _AppendOver(argparse.Action):
    """Append to a tuple, the first flag replacing the default (the environment's list)."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        given = getattr(namespace, self.dest)
        previous = given if getattr(namespace, f"_{self.dest}_given", False) else ()
        setattr(namespace, self.dest, (*previous, values))
        setattr(namespace, f"_{self.dest}_given", True)


def settings_table() -> list[tuple[str, str, str, str]]:
    """(flag, environment variable, default, help) for every setting, for the README."""
    return [
        (
            "--" + f.name.replace("_", "-"),
            ENV_PREFIX + f.name.upper(),
            "(empty)" if f.default in ("", ()) else str(f.default),
            f.metadata["help"],
        )
        for f in _flag_fields()
    ]


def _converter(annotation: Any) -> Any:
    text = str(annotation)
    if "Path | None" in text:
        return lambda value: Path(value) if value else None
    if "Path" in text:
        return Path
    if text == "bool":
        return _boolean
    if text == "int":
        return int
    if text == "float":
        return float
    return str


def _boolean(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
