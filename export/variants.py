"""Export variants: graph optimisation (optimum's ORTOptimizer, O1-O3) and fp16, applied to a
plain fp32 export in place; int8 (per CPU target, calibrated) is export.int8_export's.

Each variant has its own validation floor against PyTorch, chosen from measurements (DESIGN.md,
BENCHMARKS.md): O1/O2 are exact reorderings of the same arithmetic, O3 adds approximations
(fast GELU), and int8 changes the numbers for speed — it is reported and held to a floor, not to
fp32 exactness.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from embedrec.server.manifest import MODEL_FILE

OPTIMIZE_LEVELS = ("O1", "O2", "O3")
QUANTIZE_MODES = ("int8",)
# The default minimum cosine vs PyTorch of each variant (the export fails below it).
MIN_COSINE = {"fp32": 0.9999, "O1": 0.9999, "O2": 0.9999, "O3": 0.999, "int8": 0.95, "fp16": 0.99}
# An int8 reranker's largest logit difference from PyTorch, relative (fp32: RERANK_TOLERANCE):
# a coarse sanity bound; its real gate is the top-N agreement with the fp32 reranker.
INT8_RERANK_TOLERANCE = 1.0


def variant_name(optimize: str | None, quantize: str | None, fp16: bool = False) -> str:
    """The variant the manifest records ("fp32", "O2", "int8", "fp16", ...); ValueError on a bad mix."""
    if optimize is not None and optimize not in OPTIMIZE_LEVELS:
        raise ValueError(f"optimize must be one of {', '.join(OPTIMIZE_LEVELS)}, not {optimize!r}")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, not {quantize!r}")
    if optimize and quantize:
        # Measured: quantising an optimised (fused) graph fails; quantise the plain export.
        raise ValueError("choose --optimize or --quantize, not both: int8 is applied to the plain export")
    if fp16 and quantize:
        raise ValueError("choose --fp16 or --quantize, not both")
    if fp16:
        return "fp16"
    return optimize or quantize or "fp32"


def apply_variant(staging: Path, optimize: str | None, quantize: str | None = None, fp16: bool = False) -> None:
    """Rewrite `staging/model.onnx` (a plain optimum export with its config.json) as the
    optimised or fp16 variant (int8 is export.int8_export's: it needs calibration texts).

    `fp16` converts weights and activations to float16 after fusing (level `optimize`, O2 by
    default), for CUDA; inputs and outputs keep their types, so the server is unchanged.
    """
    if quantize:
        raise ValueError("int8 is applied by export.int8_export.quantize_staging")
    if optimize or fp16:
        _optimize(staging, optimize or "O2", fp16=fp16)


def _optimize(staging: Path, level: str, *, fp16: bool = False) -> None:
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    work = staging / "optimized"
    optimizer = ORTOptimizer.from_pretrained(staging, file_names=[MODEL_FILE])
    config = AutoOptimizationConfig.with_optimization_level(level, for_gpu=fp16, fp16=fp16)
    optimizer.optimize(config, save_dir=work)
    _replace_model(staging, next(work.glob("*.onnx")), work)


def _replace_model(staging: Path, produced: Path, work: Path) -> None:
    produced.replace(staging / MODEL_FILE)
    shutil.rmtree(work, ignore_errors=True)
