"""Model export: a Hugging Face BERT-family model → model.onnx + tokenizer.json + manifest.json.

The export runs optimum's exporter into a temporary directory next to the output, validates it
against PyTorch, writes the manifest last and then swaps the directory into place, so a failed
or interrupted export never leaves a directory the server would accept. Re-running with the
same source and options is a no-op.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from embedrec.export.atomic import staged_directory
from embedrec.export.int8_defaults import (
    DEFAULT_KEEP_FP32,
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_PER_TOKEN,
    DEFAULT_SMOOTHING,
)
from embedrec.export.int8_export import (
    Int8Base,
    catalog_option,
    fp32_base,
    measure_agreement,
    quantize_staging,
    resolve_target,
)
from embedrec.export.source import BUNDLED_MODEL, ModelSource, resolve_model_source
from embedrec.export.validation import RERANK_TOLERANCE, validate_against_pytorch, validate_reranker_against_pytorch
from embedrec.export.variants import INT8_RERANK_TOLERANCE, MIN_COSINE, apply_variant, variant_name
from embedrec.server.errors import ConfigurationError
from embedrec.server.inference.scoring import ACTIVATIONS
from embedrec.server.manifest import (
    MODEL_FILE,
    MODEL_MANIFEST,
    TOKENIZER_FILE,
    ModelManifest,
    read_model_manifest,
    sha256_file,
    write_manifest,
)

TASKS = ("embed", "rerank")
LIBRARIES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "tokenizers")

logger = logging.getLogger(__name__)


def export_model(
    source: str = BUNDLED_MODEL,
    output_dir: Path = Path("models/all-MiniLM-L6-v2"),
    *,
    max_length: int | None = None,
    opset: int | None = None,
    min_cosine: float | None = None,
    optimize: str | None = None,
    quantize: str | None = None,
    fp16: bool = False,
    force: bool = False,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    task: str = "embed",
    activation: str | None = None,
    int8_target: str = "auto",
    calibration_catalog: Path | None = None,
    validation_catalog: Path | None = None,
    min_agreement: float | None = None,
    int8_smoothing: float | None = DEFAULT_SMOOTHING,
    int8_per_token: Sequence[str] = DEFAULT_PER_TOKEN,
    int8_keep_fp32: Sequence[str] = DEFAULT_KEEP_FP32,
) -> ModelManifest:
    """Export `source` to `output_dir` and return its manifest.

    `source` is BUNDLED_MODEL, a local model directory or a hub id. `max_length` defaults to
    the model's (sentence-transformers max_seq_length, else the tokenizer's limit, capped by
    the position embeddings). `optimize` (O1-O3) or `quantize` ("int8") picks a variant (see
    export.variants). Raises ExportValidationError when the ONNX model's embeddings fall below
    `min_cosine` (default: the variant's floor) against PyTorch; ModelSourceError when the source
    is unusable; ValueError on a bad variant. The manifest records the model's prompts
    (sentence-transformers `prompts`), updated with `prompts`, and its default prompt's name
    (`default_prompt_name` when given; "" for none).

    `task="rerank"` exports a cross-encoder instead: a sequence-classification model with one
    label, scoring (query, document) pairs; `activation` ("sigmoid" or "none") turns its logit
    into the score (default: the model's sentence-transformers CrossEncoder activation, sigmoid
    when it names none). Validated on pairs: ExportValidationError when its logits differ from
    PyTorch's by more than export.validation.RERANK_TOLERANCE (relative).

    `quantize="int8"` quantises for `int8_target` ("auto": this host's CPU, see
    server.inference.cpu_features), calibrated on `calibration_catalog` texts (else generated
    ones), and measures retrieval agreement with the fp32 base (reranker: top-N agreement) on
    `validation_catalog` texts (else generated ones); `int8_smoothing` (alpha), `int8_per_token`
    and `int8_keep_fp32` (MATMUL_GROUPS given a scale per token, kept fp32) trade speed for
    fidelity. ExportValidationError below `min_agreement` (default DEFAULT_MIN_AGREEMENT). The
    manifest records the target, recipe, agreement and fp32 base's checksum (for its items).
    """
    variant = variant_name(optimize, quantize, fp16)
    _check_task(variant, task, activation)
    model = resolve_model_source(source)
    options = _variant_options(variant, max_length, opset, min_cosine, optimize, quantize, fp16)
    options.update(_prompt_options(model, prompts, default_prompt_name))
    if task == "rerank":  # absent for embedding models, so exports made before rerankers stay up to date
        options.update(task=task, activation=activation)
    if quantize:  # likewise absent for other variants
        int8 = _int8_options(int8_target, calibration_catalog, validation_catalog, min_agreement)
        groups = {"int8_per_token": list(int8_per_token), "int8_keep_fp32": list(int8_keep_fp32)}
        options.update(int8, int8_smoothing=int8_smoothing, **groups)
    return _export_unless_up_to_date(output_dir, model, options, force)


def _check_task(variant: str, task: str, activation: str | None) -> None:
    """ValueError when `task` is unknown, a reranker asks for a variant other than fp32 or int8, or
    `activation` is given for an embedder or is unknown."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
    if task == "rerank" and variant not in ("fp32", "int8"):
        raise ValueError(f"a rerank export is fp32 or int8 (got the {variant} variant)")
    if activation is not None and (task != "rerank" or activation not in ACTIVATIONS):
        raise ValueError(f"activation {activation!r}: one of {', '.join(ACTIVATIONS)}, for --task rerank only")


def _variant_options(
    variant: str,
    max_length: int | None,
    opset: int | None,
    min_cosine: float | None,
    optimize: str | None,
    quantize: str | None,
    fp16: bool,
) -> dict[str, Any]:
    """The options every export records (the validation floor: the variant's unless given)."""
    return {
        "max_length": max_length,
        "opset": opset,
        "min_cosine": MIN_COSINE[variant] if min_cosine is None else min_cosine,
        "optimize": optimize,
        "quantize": quantize,
        "fp16": fp16,
    }


def _prompt_options(
    model: ModelSource, prompts: dict[str, str] | None, default_prompt_name: str | None
) -> dict[str, Any]:
    """The model's prompts updated with `prompts` and the default prompt's name, when there are any
    (absent otherwise, so exports made before prompts stay up to date); ValueError when the default
    prompt is not one of them."""
    all_prompts = {**model.prompts, **(prompts or {})}
    default_prompt = model.default_prompt_name if default_prompt_name is None else default_prompt_name
    if default_prompt and default_prompt not in all_prompts:
        raise ValueError(f"default prompt {default_prompt!r} is not one of the prompts ({', '.join(all_prompts)})")
    return {"prompts": all_prompts, "default_prompt_name": default_prompt} if all_prompts or default_prompt else {}


def _export_unless_up_to_date(
    output_dir: Path, model: ModelSource, options: dict[str, Any], force: bool
) -> ModelManifest:
    """The manifest in `output_dir` when it was exported from `model` with `options` (unless
    `force`), else a fresh export staged and swapped in."""
    if not force and _is_up_to_date(output_dir, model, options):
        logger.info("export of %s in %s is up to date", model.name, output_dir)
        return read_model_manifest(output_dir)
    with staged_directory(output_dir) as staging:
        return _export_into(staging, model, options)


def _export_into(staging: Path, model: ModelSource, options: dict[str, Any]) -> ModelManifest:
    from optimum.exporters.onnx import main_export
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model.directory)
    tokenizer = AutoTokenizer.from_pretrained(model.directory, use_fast=True)
    max_length = options["max_length"] or _default_max_length(model, config, tokenizer)
    reranker = options.get("task") == "rerank"
    if reranker and int(getattr(config, "num_labels", 0)) != 1:
        raise ConfigurationError(
            f"{model.name}: a reranker scores a pair with one logit (num_labels 1); this model has "
            f"{getattr(config, 'num_labels', None)} labels"
        )
    with warnings.catch_warnings():
        # Tracing the model makes torch and transformers warn about their own internals
        # (legacy exporter, traced constants); nothing a user of the export can act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
        warnings.filterwarnings("ignore", message=".*TracerWarning.*|.*trace.*")
        main_export(
            str(model.directory),
            output=staging,
            task="text-classification" if reranker else "feature-extraction",
            library_name="transformers",
            opset=options["opset"],
            do_validation=False,
        )
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(staging / TOKENIZER_FILE))
    if not options["quantize"]:
        apply_variant(staging, options["optimize"], None, options["fp16"])
        _remove_extra_files(staging)
        return _validate_and_write(staging, model, config, tokenizer, max_length, options)
    _remove_extra_files(staging)
    with fp32_base(staging) as base:
        quantization = quantize_staging(staging, options, max_length=max_length, pad_token_id=tokenizer.pad_token_id)
        int8 = {"base_onnx_sha256": base.onnx_sha256, "quantization": quantization}
        return _validate_and_write(staging, model, config, tokenizer, max_length, options, int8=int8, base=base)


def _validate_and_write(
    staging: Path,
    model: ModelSource,
    config: Any,
    tokenizer: Any,
    max_length: int,
    options: dict[str, Any],
    *,
    int8: dict[str, Any] | None = None,
    base: Int8Base | None = None,
) -> ModelManifest:
    """Validate the model in `staging` against PyTorch (and an int8 one against its fp32 `base`)
    and write its manifest (a partial one first: the validation loads the directory)."""
    extra = int8 or {}
    reranker = options.get("task") == "rerank"
    partial = _manifest(model, config, tokenizer, staging, max_length, options, validation={}, **extra)
    write_manifest(partial, staging / MODEL_MANIFEST)
    if reranker:
        tolerance = INT8_RERANK_TOLERANCE if base is not None else RERANK_TOLERANCE
        validation = validate_reranker_against_pytorch(
            model.directory, staging, max_length=max_length, tolerance=tolerance
        )
    else:
        validation = validate_against_pytorch(
            model.directory, staging, max_length=max_length, pooling=model.pooling, min_cosine=options["min_cosine"]
        )
    if base is not None:
        validation["agreement"] = measure_agreement(staging, base, options, reranker=reranker)
    manifest = _manifest(model, config, tokenizer, staging, max_length, options, validation, **extra)
    write_manifest(manifest, staging / MODEL_MANIFEST)
    logger.info("exported %s (%s): max length %d, validation %s", model.name, manifest.variant, max_length, validation)
    return manifest


def _int8_options(
    target: str, calibration: Path | None, validation: Path | None, min_agreement: float | None
) -> dict[str, Any]:
    return {
        "int8_target": resolve_target(target),
        "calibration_catalog": catalog_option(calibration),
        "validation_catalog": catalog_option(validation),
        "min_agreement": DEFAULT_MIN_AGREEMENT if min_agreement is None else min_agreement,
    }


def _manifest(
    model: ModelSource,
    config: Any,
    tokenizer: Any,
    staging: Path,
    max_length: int,
    options: dict[str, Any],
    validation: dict[str, Any],
    *,
    base_onnx_sha256: str = "",
    quantization: dict[str, Any] | None = None,
) -> ModelManifest:
    import onnx

    graph = onnx.load(str(staging / MODEL_FILE), load_external_data=False)
    opset = next(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx"))
    if tokenizer.pad_token_id is None:
        raise ConfigurationError(f"{model.name}: the tokenizer has no pad token")
    reranker = options.get("task") == "rerank"
    return ModelManifest(
        model_name=model.name,
        source_sha256=model.sha256,
        dim=1 if reranker else int(config.hidden_size),
        max_length=int(max_length),
        pooling=model.pooling,
        normalize=False if reranker else model.normalize,
        onnx_sha256=sha256_file(staging / MODEL_FILE),
        opset=int(opset),
        input_names=tuple(graph_input.name for graph_input in graph.graph.input),
        pad_token_id=int(tokenizer.pad_token_id),
        library_versions={name: _version(name) for name in LIBRARIES},
        validation=validation,
        export_options=options,
        variant=variant_name(options["optimize"], options["quantize"], options["fp16"]),
        prompts=dict(options.get("prompts", {})),
        default_prompt_name=options.get("default_prompt_name", ""),
        task="rerank" if reranker else "embed",
        activation=(options.get("activation") or _cross_encoder_activation(config)) if reranker else "",
        int8_target=options.get("int8_target", ""),
        base_onnx_sha256=base_onnx_sha256,
        quantization=quantization or {},
    )


def _cross_encoder_activation(config: Any) -> str:
    """The activation sentence-transformers' CrossEncoder applies to this model's logit: the one
    its config names (Identity: "none"), else sigmoid (CrossEncoder's default for one label)."""
    named = (getattr(config, "sentence_transformers", None) or {}).get("activation_fn") or getattr(
        config, "sbert_ce_default_activation_function", None
    )
    return "none" if named and str(named).endswith("Identity") else "sigmoid"


def _default_max_length(model: ModelSource, config: Any, tokenizer: Any) -> int:
    positions = int(getattr(config, "max_position_embeddings", 512))
    # RoBERTa-family models reserve padding_idx + 1 positions.
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        positions -= int(getattr(config, "pad_token_id", 1)) + 1
    limit = model.max_length_hint or int(tokenizer.model_max_length)
    return min(limit, positions)


def _is_up_to_date(output_dir: Path, model: ModelSource, options: dict[str, Any]) -> bool:
    try:
        existing = read_model_manifest(output_dir)
    except ConfigurationError:
        return False
    return (
        existing.source_sha256 == model.sha256
        and existing.export_options == options
        and bool(existing.validation)
        and (output_dir / MODEL_FILE).is_file()
        and (output_dir / TOKENIZER_FILE).is_file()
        and sha256_file(output_dir / MODEL_FILE) == existing.onnx_sha256
    )


def _remove_extra_files(staging: Path) -> None:
    """Keep only what the server reads; optimum also copies configs and vocab files."""
    for path in staging.iterdir():
        if path.name not in (MODEL_FILE, TOKENIZER_FILE, MODEL_MANIFEST) and not path.name.startswith(MODEL_FILE):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"
