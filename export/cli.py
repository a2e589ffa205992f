"""`embedrec export-model` and `embedrec export-items`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from embedrec.export.int8_defaults import (
    CATALOG_SAMPLE,
    DEFAULT_KEEP_FP32,
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_PER_TOKEN,
    DEFAULT_SMOOTHING,
    MATMUL_GROUPS,
)
from embedrec.export.source import BUNDLED_MODEL
from embedrec.server.catalog.milvus.index import INDEX_KINDS, VectorIndex
from embedrec.server.inference.cpu_features import INT8_TARGET_CHOICES


def export_model_main(argv: Sequence[str]) -> int:
    """Export a model (see export.onnx_model.export_model); print its manifest summary."""
    parser = _model_parser()
    arguments = parser.parse_args(argv)
    prompts = {}
    for given in arguments.prompt:
        name, separator, text = given.partition("=")
        if not separator or not name:
            parser.error(f"--prompt takes NAME=TEXT, got {given!r}")
        prompts[name] = text
    _configure_logging()

    from embedrec.export.onnx_model import export_model

    manifest = export_model(
        arguments.model,
        arguments.output,
        max_length=arguments.max_length,
        opset=arguments.opset,
        min_cosine=arguments.min_cosine,
        optimize=arguments.optimize,
        quantize=arguments.quantize,
        fp16=arguments.fp16,
        force=arguments.force,
        prompts=prompts,
        default_prompt_name=arguments.default_prompt_name,
        task=arguments.task,
        activation=arguments.activation,
        int8_target=arguments.int8_target,
        calibration_catalog=arguments.calibration_catalog,
        validation_catalog=arguments.validation_catalog,
        min_agreement=arguments.min_agreement,
        int8_smoothing=arguments.int8_smoothing if arguments.int8_smoothing >= 0 else None,
        int8_per_token=_groups(arguments.int8_per_token, DEFAULT_PER_TOKEN),
        int8_keep_fp32=_groups(arguments.int8_keep_fp32, DEFAULT_KEEP_FP32),
    )
    summary = {
        "output": str(arguments.output),
        "model": manifest.model_name,
        "dim": manifest.dim,
        "max_length": manifest.max_length,
        "pooling": manifest.pooling,
        "normalize": manifest.normalize,
        "variant": manifest.variant,
        "prompts": manifest.prompts,
        "default_prompt_name": manifest.default_prompt_name,
        "task": manifest.task,
        **({"activation": manifest.activation} if manifest.task == "rerank" else {}),
        **(
            {"int8_target": manifest.int8_target, "base_onnx_sha256": manifest.base_onnx_sha256}
            if manifest.int8_target
            else {}
        ),
        "validation": manifest.validation,
    }
    print(json.dumps(summary, indent=2))
    return 0


def _model_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedrec export-model", description="Export a BERT-family model to ONNX.")
    _add_model_source_arguments(parser)
    _add_int8_arguments(parser)
    _add_model_output_arguments(parser)
    return parser


def _add_model_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, where it goes, its length, opset, graph optimisation and validation floor."""
    parser.add_argument(
        "--model",
        default=BUNDLED_MODEL,
        help=f"local model directory or hub id (default: {BUNDLED_MODEL}, the packaged MiniLM)",
    )
    parser.add_argument("--output", type=Path, default=Path("models/all-MiniLM-L6-v2"), help="output directory")
    parser.add_argument("--max-length", type=int, default=None, help="max tokens per text (default: the model's)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: optimum's choice)")
    parser.add_argument(
        "--min-cosine",
        type=float,
        default=None,
        help="fail when ONNX vs PyTorch min cosine is below this (default: the variant's floor, "
        "0.9999 for fp32/O1/O2, 0.999 for O3, 0.95 for int8)",
    )
    parser.add_argument("--optimize", choices=("O1", "O2", "O3"), help="graph optimisation level (ORTOptimizer)")


def _add_int8_arguments(parser: argparse.ArgumentParser) -> None:
    """--quantize int8 and what calibrates, smooths and validates it."""
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        help="int8 for CPUs (docs/int8.md): dynamic, per-channel weights, MatMuls only, smoothed on calibration "
        "texts; measured against the fp32 base on retrieval (--validation-catalog, --min-agreement)",
    )
    parser.add_argument(
        "--int8-target",
        choices=INT8_TARGET_CHOICES,
        default="auto",
        help="--quantize int8: vnni (full-range weights, for CPUs with AVX-512 VNNI / AVX-VNNI / AMX), avx2 "
        "(7-bit weights, correct on any CPU), auto (this host's CPU flags)",
    )
    parser.add_argument(
        "--calibration-catalog",
        type=Path,
        default=None,
        help="--quantize int8: a catalog (JSONL/CSV, field 'text') whose texts calibrate the smoothing "
        "(default: generated texts)",
    )
    parser.add_argument(
        "--validation-catalog",
        type=Path,
        default=None,
        help="--quantize int8: a catalog whose texts measure top-10 agreement with the fp32 model (a seeded "
        f"sample of up to {CATALOG_SAMPLE}; default: generated texts)",
    )
    parser.add_argument(
        "--int8-smoothing",
        type=float,
        default=DEFAULT_SMOOTHING,
        metavar="ALPHA",
        help="--quantize int8: SmoothQuant-style scaling of the MatMul inputs with strength ALPHA in [0, 1], "
        "calibrated on --calibration-catalog (measured on MiniLM: 0.7 helps, 0.3-0.5 hurt; "
        f"default {DEFAULT_SMOOTHING}; "
        "a negative value: none)",
    )
    _add_int8_group_arguments(parser)
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=None,
        help="--quantize int8: fail when the int8 queries on fp32 items return less of fp32's top-10 than this "
        f"(reranker: of its top-5; default {DEFAULT_MIN_AGREEMENT})",
    )


def _add_int8_group_arguments(parser: argparse.ArgumentParser) -> None:
    """Which MatMuls get a scale per token and which stay fp32."""
    parser.add_argument(
        "--int8-per-token",
        action="append",
        default=None,
        choices=(*MATMUL_GROUPS, "none"),
        help="--quantize int8: MatMuls whose inputs get an int8 scale per token instead of one per tensor "
        "(repeatable): the FFN output projections (the most sensitive, by per-layer measurement) of every "
        f"layer or of the first only; none: one scale per tensor everywhere (default: {_listed(DEFAULT_PER_TOKEN)})",
    )
    parser.add_argument(
        "--int8-keep-fp32",
        action="append",
        default=None,
        choices=(*MATMUL_GROUPS, "none"),
        help="--quantize int8: MatMuls kept in fp32 (repeatable; slower, closer to fp32): the same groups; "
        f"none: quantise them all (default: {_listed(DEFAULT_KEEP_FP32)})",
    )


def _groups(chosen: list[str] | None, default: tuple[str, ...]) -> list[str]:
    """The MatMul groups of a repeatable option: `default` when not given, none for "none"."""
    return [group for group in chosen or default if group != "none"]


def _listed(groups: tuple[str, ...]) -> str:
    return ", ".join(groups) or "none"


def _add_model_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Precision, freshness, prompts and the task (embedder or reranker)."""
    parser.add_argument("--fp16", action="store_true", help="float16 weights and activations (for CUDA)")
    parser.add_argument("--force", action="store_true", help="export even when the output is up to date")
    parser.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="NAME=TEXT",
        help="a prompt of the model (repeatable), e.g. --prompt 'query=query: ' --prompt 'passage=passage: '; "
        "added to the model's own sentence-transformers prompts",
    )
    parser.add_argument(
        "--default-prompt-name",
        default=None,
        help="the prompt Embed uses when a request names none (default: the model's; '' for none)",
    )
    parser.add_argument(
        "--task",
        choices=("embed", "rerank"),
        default="embed",
        help="embed: a bi-encoder (Embed, Recommend); rerank: a cross-encoder (a sequence-classification "
        "model with one label) scoring (query, document) pairs for Rerank, validated on pairs against PyTorch",
    )
    parser.add_argument(
        "--activation",
        choices=("sigmoid", "none"),
        default=None,
        help="--task rerank: the score is sigmoid(logit) or the raw logit (default: the model's "
        "sentence-transformers CrossEncoder activation, sigmoid when it names none)",
    )


def export_items_main(argv: Sequence[str]) -> int:
    """Build an item matrix from a catalog (see export.items.build_items), and with --store milvus
    sync it into a collection; a JSON summary on stdout, exit 2 with the reason on a bad catalog."""
    parser = _items_parser()
    arguments = parser.parse_args(argv)
    if arguments.store == "milvus" and not arguments.milvus_uri:
        parser.error("--store milvus needs --milvus-uri")
    try:
        milvus_index_of(arguments)
    except ValueError as error:
        parser.error(f"--milvus-index: {error}")
    _configure_logging()

    from embedrec.export.catalog import CatalogError
    from embedrec.server.errors import ConfigurationError

    try:
        summary = _build_and_sync(arguments)
    except (CatalogError, ConfigurationError) as error:
        print(f"embedrec export-items: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def _items_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedrec export-items", description="Embed a catalog into an item matrix.")
    _add_catalog_arguments(parser)
    _add_milvus_arguments(parser)
    return parser


def _add_catalog_arguments(parser: argparse.ArgumentParser) -> None:
    """The catalog, its fields, the model and the build (reuse, batching, prompt, progress)."""
    parser.add_argument("--catalog", type=Path, required=True, help="JSON Lines or CSV file (optionally .gz)")
    parser.add_argument("--model-dir", type=Path, default=Path("models/all-MiniLM-L6-v2"), help="exported model")
    parser.add_argument("--output", type=Path, required=True, help="output directory")
    parser.add_argument("--id-field", default="id", help="field or column holding the item id")
    parser.add_argument("--text-field", default="text", help="field or column holding the item text")
    parser.add_argument(
        "--filter-field",
        default="",
        help="field or column stored beside the ids for Recommend's filter_values (e.g. category)",
    )
    parser.add_argument(
        "--field",
        action="append",
        default=[],
        help="a categorical field stored for Recommend's conditions and diversity (repeatable; a JSON list "
        "value gives an item several values), e.g. --field brand --field tags",
    )
    parser.add_argument(
        "--numeric-field",
        action="append",
        default=[],
        help="a numeric field stored for Recommend's range conditions (repeatable), e.g. --numeric-field price",
    )
    parser.add_argument(
        "--reuse-from",
        type=Path,
        default=None,
        help="an earlier build (e.g. the one being served) whose unchanged rows are copied instead of embedded; "
        "default: the build already in --output",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="texts per inference batch")
    parser.add_argument(
        "--prompt-name",
        default=None,
        help="the model prompt item texts are embedded with (default: its document prompt, 'document', "
        "'passage' or 'corpus', else its default prompt; '' for none)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="rebuild every row, even when the output is up to date (no rows reused from it)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_milvus_arguments(parser: argparse.ArgumentParser) -> None:
    """--store and the Milvus collection a build is synced into."""
    parser.add_argument(
        "--store",
        choices=("mmap", "milvus"),
        default="mmap",
        help="mmap: the item directory --output is what the server maps; milvus: --output is built as the "
        "staging build, then the collection --milvus-collection at --milvus-uri is made equal to it (changed "
        "rows upserted, removed ids deleted; token from EMBEDREC_MILVUS_TOKEN)",
    )
    parser.add_argument(
        "--milvus-uri", default="", help="a Milvus Lite file path, or http(s)://host:port of a Milvus server"
    )
    parser.add_argument("--milvus-collection", default="embedrec_items", help="the Milvus collection")
    parser.add_argument(
        "--milvus-index",
        choices=INDEX_KINDS,
        default="FLAT",
        help="the collection's vector index: FLAT scores every row (exact, the memory-mapped store's answer); "
        "HNSW and IVF_FLAT are approximate (faster on large catalogs; recall in BENCHMARKS.md). A sync to an "
        "existing collection with another index rebuilds only the index",
    )
    parser.add_argument("--milvus-hnsw-m", type=int, default=None, help="HNSW: graph degree M (default 16)")
    parser.add_argument(
        "--milvus-hnsw-ef-construction", type=int, default=None, help="HNSW: efConstruction (default 200)"
    )
    parser.add_argument("--milvus-ivf-nlist", type=int, default=None, help="IVF_FLAT: clusters nlist (default 1024)")


def milvus_index_of(arguments: argparse.Namespace) -> VectorIndex:
    """The index the --milvus-index flags ask for; ValueError naming the flag's parameter when a
    parameter belongs to another kind or is out of range."""
    given = {
        "M": arguments.milvus_hnsw_m,
        "efConstruction": arguments.milvus_hnsw_ef_construction,
        "nlist": arguments.milvus_ivf_nlist,
    }
    return VectorIndex.of(arguments.milvus_index, **{name: value for name, value in given.items() if value is not None})


def _build_and_sync(arguments: argparse.Namespace) -> dict[str, object]:
    """The build (and the Milvus sync) `arguments` ask for; their summary."""
    from embedrec.export.items import build_items

    manifest = build_items(
        arguments.catalog,
        arguments.model_dir,
        arguments.output,
        batch_size=arguments.batch_size,
        id_field=arguments.id_field,
        text_field=arguments.text_field,
        filter_field=arguments.filter_field,
        progress=not arguments.no_progress,
        force=arguments.force,
        prompt_name=arguments.prompt_name,
        fields=arguments.field,
        numeric_fields=arguments.numeric_field,
        reuse_from=arguments.reuse_from,
    )
    summary: dict[str, object] = {}
    if arguments.store == "milvus":
        from embedrec.export.milvus_sync import sync_to_milvus

        synced = sync_to_milvus(
            arguments.output,
            arguments.milvus_uri,
            arguments.milvus_collection,
            token=os.environ.get("EMBEDREC_MILVUS_TOKEN", ""),
            progress=not arguments.no_progress,
            vector_index=milvus_index_of(arguments),
        )
        summary = {
            "milvus_uri": arguments.milvus_uri,
            "milvus_collection": arguments.milvus_collection,
            "milvus_index": synced.index,
            "milvus_items": synced.item_count,
            "unchanged": synced.unchanged,
            "upserted": synced.upserted,
            "deleted": synced.deleted,
        }
    return {
        **summary,
        "output": str(arguments.output),
        "items": manifest.item_count,
        "dim": manifest.dim,
        "model": manifest.model_name,
        "filter_field": manifest.filter_field,
        "prompt_name": manifest.prompt_name,
        "fields": manifest.fields,
    }


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
