"""Loading what a server serves: the settings with the machine's tuning applied, the model's
encoder, and the item store, checked to belong together."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

from embedrec.server.catalog.mmap.scan import ScanKind, ScanStats
from embedrec.server.catalog.mmap.store import ItemIndex
from embedrec.server.catalog.store import ItemStore
from embedrec.server.catalog.store_health import StoreHealth
from embedrec.server.errors import ConfigurationError
from embedrec.server.inference.cpu_features import host_cpu_flags, int8_host_problem
from embedrec.server.inference.embedding import Encoder
from embedrec.server.inference.encoder import OnnxEncoder
from embedrec.server.inference.providers import expected_provider
from embedrec.server.manifest import ModelManifest, check_items_match_model, read_items_manifest, read_model_manifest
from embedrec.server.settings import Settings
from embedrec.server.tuning import TUNING_FILE, Machine, mismatch, read_tuning, tuned_values

logger = logging.getLogger(__name__)


def load_encoder(settings: Settings) -> OnnxEncoder:
    """The encoder of --model-dir with the settings' provider, threads and sessions;
    ConfigurationError when it is a reranker (the first model embeds: Recommend's)."""
    encoder = _encoder_of(settings, settings.model.model_dir)
    if encoder.manifest.task != "embed":
        raise ConfigurationError(
            f"--model-dir {settings.model.model_dir} is a {encoder.manifest.task} model; the first model embeds "
            "(Embed, Recommend): give an embedding model there and this one as --model NAME=DIR"
        )
    return encoder


def load_extra_encoders(settings: Settings, first: OnnxEncoder) -> dict[str, OnnxEncoder]:
    """The --model encoders by name (embedding models and rerankers), loaded like the first;
    ConfigurationError when a name is the first model's or a directory is unusable."""
    taken = {first.manifest.model_name, first.manifest.model_name.rsplit("/", 1)[-1]}
    encoders = {}
    for name, directory in settings.model.extra_models.items():
        if name in taken:
            raise ConfigurationError(f"--model {name}: the --model-dir model is already called {name!r}")
        encoders[name] = _encoder_of(settings, directory)
    return encoders


def int8_host_warning(manifest: ModelManifest) -> str:
    """Why this host computes `manifest`'s int8 model wrongly ("" when it does not): see
    server.inference.cpu_features. The server still serves it (documented in docs/int8.md), with
    this warning logged, in Info and in the metric embedrec_int8_host_mismatch."""
    return int8_host_problem(manifest.int8_target, host_cpu_flags())


def _encoder_of(settings: Settings, model_dir: Path) -> OnnxEncoder:
    manifest = read_model_manifest(model_dir)
    if problem := int8_host_warning(manifest):
        logger.warning("INT8 MODEL ON THE WRONG CPU: %s: %s", model_dir, problem)
    return OnnxEncoder(
        model_dir,
        provider=settings.model.provider,  # type: ignore[arg-type]
        intra_op_threads=settings.model.threads_per_session,
        sessions=settings.model.session_count,
        device_id=settings.model.device_id,
        spinning=settings.model.intra_op_spinning,
        spinning_in_runs=settings.model.intra_op_spinning_in_runs,
        idle_sessions=settings.model.idle_spinning_sessions,
        cuda_memory_limit_mb=settings.model.cuda_memory_limit_mb,
        io_binding=None if settings.model.io_binding == "auto" else settings.model.io_binding == "on",
    )


def open_items(
    settings: Settings,
    encoder: Encoder,
    scan_stats: ScanStats | None = None,
    store_health: StoreHealth | None = None,
) -> ItemStore | None:
    """The item store `settings` name (None without items), checked to be built with
    `encoder`'s model; ConfigurationError otherwise (MilvusUnreachableError when Milvus does not
    answer). An --items-dir symlink is resolved once, so every file comes from one build. The
    memory-mapped store scans with --scan and counts its passes in `scan_stats`; the Milvus store
    records its calls' outcomes in `store_health`."""
    items: ItemStore
    if settings.search.items_store == "milvus":
        from embedrec.server.catalog.live_recall import LiveRecall
        from embedrec.server.catalog.milvus.store import MilvusItems
        from embedrec.server.catalog.store import SearchEffort

        items = MilvusItems(
            settings.milvus.milvus_uri,
            settings.milvus.milvus_collection,
            token=settings.milvus.milvus_token,
            timeout=settings.milvus.milvus_timeout_s,
            effort=SearchEffort(settings.milvus.milvus_ef, settings.milvus.milvus_nprobe),
            health=store_health,
            live_recall=LiveRecall(
                settings.milvus.milvus_live_recall,
                settings.milvus.milvus_live_recall_window,
                settings.milvus.milvus_live_recall_cpu,
            ),
            exact_check_rows=settings.milvus.milvus_live_recall_rows,
        )
    elif settings.search.items_dir is not None:
        directory = settings.search.items_dir.resolve()
        # The model check first: it is the mistake to name, and opening the codes costs time.
        check_items_match_model(read_items_manifest(directory), encoder.manifest)
        items = ItemIndex(directory, scan=cast(ScanKind, settings.search.scan), stats=scan_stats)
    else:
        return None
    check_items_match_model(items.describe(), encoder.manifest)
    return items


def resolve_tuning(settings: Settings) -> tuple[Settings, str]:
    """`settings` with the model's tuning file applied (for the settings not given explicitly)
    when it was measured on this machine with this model, and a line saying what happened (for
    the log and Info). A file that is unreadable or measured elsewhere is ignored, with a warning."""
    if settings.model.tuning == "off":
        return settings, "off"
    path = settings.model.model_dir / TUNING_FILE
    try:
        tuning = read_tuning(settings.model.model_dir)
    except ConfigurationError as error:
        logger.warning("tuning file ignored: %s", error)
        return settings, f"ignored {path}: unreadable"
    if tuning is None:
        return settings, "none"
    try:
        model_sha256 = read_model_manifest(settings.model.model_dir).onnx_sha256
    except ConfigurationError:
        return settings, "none"  # the model loader reports the broken manifest itself
    reason = mismatch(tuning, Machine.here(expected_provider(settings.model.provider)), model_sha256)
    if reason:
        logger.warning("tuning file %s ignored: %s (re-run embedrec tune on this machine)", path, reason)
        return settings, f"ignored {path}: {reason}"
    values = tuned_values(tuning, settings.explicitly_set())
    overridden = sorted(set(tuning.settings) - set(values))
    note = tuning.describe(path) + (f"; overridden by flags: {', '.join(overridden)}" if overridden else "")
    tuned = settings.replace(**values)
    return tuned, note
