"""Export variants: graph optimisation (optimum's ORTOptimizer, O1-O3) and dynamic int8
quantisation (ORTQuantizer, per-channel weights), applied to a plain fp32 export in place.

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


def apply_variant(staging: Path, optimize: str | None, quantize: str | None, fp16: bool = False) -> None:
    """Rewrite `staging/model.onnx` (a plain optimum export with its config.json) as the variant.

    `fp16` converts weights and activations to float16 after fusing (level `optimize`, O2 by
    default), for CUDA; inputs and outputs keep their types, so the server is unchanged.
    """
    if optimize or fp16:
        _optimize(staging, optimize or "O2", fp16=fp16)
    elif quantize:
        _quantize(staging)


def _optimize(staging: Path, level: str, *, fp16: bool = False) -> None:
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    work = staging / "optimized"
    optimizer = ORTOptimizer.from_pretrained(staging, file_names=[MODEL_FILE])
    config = AutoOptimizationConfig.with_optimization_level(level, for_gpu=fp16, fp16=fp16)
    optimizer.optimize(config, save_dir=work)
    _replace_model(staging, next(work.glob("*.onnx")), work)


def _quantize(staging: Path) -> None:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    work = staging / "quantized"
    quantizer = ORTQuantizer.from_pretrained(staging, file_name=MODEL_FILE)
    # Dynamic (no calibration data), per-channel weights: measured min cosine 0.97 vs much worse
    # per-tensor; the AVX2 config fits this machine kind (no AVX-512/VNNI).
    quantizer.quantize(AutoQuantizationConfig.avx2(is_static=False, per_channel=True), save_dir=work)
    _replace_model(staging, next(work.glob("*.onnx")), work)


def _replace_model(staging: Path, produced: Path, work: Path) -> None:
    produced.replace(staging / MODEL_FILE)
    shutil.rmtree(work, ignore_errors=True)
