"""The int8 steps of an export: keep the fp32 base beside the staging directory, quantise by the
target's recipe, and measure the result against the base on retrieval (or reranking) before the
export is accepted.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from embedrec.export.agreement import embed_in_batches, generated_texts, retrieval_agreement
from embedrec.export.int8_defaults import CATALOG_SAMPLE
from embedrec.export.quantization import int8_recipe, quantize_int8
from embedrec.export.rerank_agreement import rerank_agreement
from embedrec.export.validation import ExportValidationError
from embedrec.server.inference.cpu_features import read_cpu_flags, resolve_int8_target
from embedrec.server.inference.encoder import OnnxEncoder
from embedrec.server.inference.tokenization import TextTokenizer
from embedrec.server.manifest import MODEL_FILE, MODEL_MANIFEST, TOKENIZER_FILE, sha256_file


@dataclasses.dataclass(frozen=True)
class Int8Base:
    """The fp32 export an int8 model was made from: a directory the server's encoder can load
    (model, tokenizer, manifest) and its model checksum."""

    directory: Path
    onnx_sha256: str


def resolve_target(choice: str) -> str:
    """The int8 target for `choice` ("auto" from this host's CPU flags)."""
    return resolve_int8_target(choice, read_cpu_flags())


def catalog_texts(path: Path | None, limit: int = CATALOG_SAMPLE, seed: int = 0) -> list[str]:
    """Up to `limit` texts of the catalog `path` (a seeded reservoir sample, in file order), or
    seeded generated texts when `path` is None. CatalogError-free: unusable rows are skipped."""
    if path is None:
        return generated_texts()
    from embedrec.export.catalog import iter_catalog

    rng, seen = random.Random(seed), 0
    sample: list[str] = []
    for row in iter_catalog(path):
        if not row.text:
            continue
        seen += 1
        if len(sample) < limit:
            sample.append(row.text)
        elif (slot := rng.randrange(seen)) < limit:
            sample[slot] = row.text
    if len(sample) <= 10:
        raise ValueError(f"{path}: need more than 10 texts for int8 calibration and agreement, found {len(sample)}")
    return sample


@contextmanager
def fp32_base(staging: Path) -> Iterator[Int8Base]:
    """A copy of the plain fp32 export in `staging` (model and tokenizer), removed on exit."""
    directory = Path(tempfile.mkdtemp(prefix=".fp32-base-", dir=staging.parent))
    try:
        for name in (MODEL_FILE, TOKENIZER_FILE):
            shutil.copy2(staging / name, directory / name)
        yield Int8Base(directory, sha256_file(directory / MODEL_FILE))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def quantize_staging(staging: Path, options: dict[str, Any], *, max_length: int, pad_token_id: int) -> dict[str, Any]:
    """Quantise `staging/model.onnx` in place for options["int8_target"], calibrated on
    options["calibration_catalog"] (else generated texts) when options["int8_smoothing"] asks
    for smoothing, quantising options["int8_per_token"] groups per token and keeping
    options["int8_keep_fp32"] groups in fp32; the recipe's report."""
    calibration = options.get("calibration_catalog")
    texts = catalog_texts(Path(calibration["path"]) if calibration else None) if options.get("int8_smoothing") else []
    tokenizer = TextTokenizer(staging / TOKENIZER_FILE, max_length=max_length, pad_token_id=pad_token_id)
    recipe = int8_recipe(
        options["int8_target"],
        smoothing_alpha=options.get("int8_smoothing"),
        per_token=tuple(options.get("int8_per_token", ())),
        keep_fp32=tuple(options.get("int8_keep_fp32", ())),
    )
    return quantize_int8(staging / MODEL_FILE, recipe, texts, tokenizer)


def measure_agreement(staging: Path, base: Int8Base, options: dict[str, Any], *, reranker: bool) -> dict[str, Any]:
    """The variant in `staging` (manifest written) against its fp32 `base` on the validation
    sample; ExportValidationError below options["min_agreement"] (variant queries on fp32 items
    for an embedder, top-N overlap for a reranker)."""
    shutil.copy2(staging / MODEL_MANIFEST, base.directory / MODEL_MANIFEST)
    validation = options.get("validation_catalog")
    texts = catalog_texts(Path(validation["path"]) if validation else None)
    reference = OnnxEncoder(base.directory, provider="cpu")
    variant = OnnxEncoder(staging, provider="cpu")
    if reranker:
        report = rerank_agreement(reference.score, variant.score, texts)
        measured, what = report["top_n_agreement"], f"top-{report['top_n']} overlap with the fp32 reranker"
    else:
        report = retrieval_agreement(embed_in_batches(reference.encode, texts), embed_in_batches(variant.encode, texts))
        measured, what = report["variant_vs_fp32_items"], "top-10 agreement with fp32 (int8 queries, fp32 items)"
    report["sample"] = validation["path"] if validation else "generated texts"
    floor = float(options["min_agreement"])
    if measured < floor:
        raise ExportValidationError(f"int8 variant: {what} {measured:.3f} < --min-agreement {floor}; report: {report}")
    return report


def catalog_option(path: Path | None) -> dict[str, str] | None:
    """A catalog as export options record it (path and checksum, so a changed file re-exports)."""
    return None if path is None else {"path": str(path), "sha256": sha256_file(path)}
