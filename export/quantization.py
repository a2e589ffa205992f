"""int8 quantisation of a plain fp32 export, per CPU target (server.inference.cpu_features).

The recipe is dynamic quantisation of the MatMuls with a weight (the embedding lookups and the
attention's activation x activation MatMuls stay fp32): weights int8 per output channel,
activations uint8 quantised at run time, with one scale per tensor (ONNX Runtime's
DynamicQuantizeMatMul) or, for the recipe's per-token groups, one per token (export.per_token).
The target decides the weight range: full 8 bits for VNNI, 7 bits ("reduce range") for AVX2,
whose kernel would saturate full-range weights. The default, the best point of BENCHMARKS.md's
int8 frontier: SmoothQuant-style scaling calibrated on texts (export.smoothing) and per-token
activations for the FFN output projections, the MatMuls most sensitive to int8 by per-layer
measurement. MATMUL_GROUPS may also be kept in fp32, trading speed for fidelity.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedrec.export.int8_defaults import MATMUL_GROUPS
from embedrec.export.per_token import quantize_per_token
from embedrec.export.smoothing import WeightMatMuls, channel_maxima, smooth_graph, with_outputs
from embedrec.server.inference.cpu_features import INT8_TARGETS
from embedrec.server.inference.tokenization import TextTokenizer

logger = logging.getLogger(__name__)

CALIBRATION_BATCH = 32
MAX_CALIBRATION_TEXTS = 1024


@dataclasses.dataclass(frozen=True)
class Int8Recipe:
    """How a model is quantised: its target, weight granularity and range, the smoothing strength
    (None: no smoothing), the MatMul groups whose activations get a scale per token and the
    groups kept in fp32 (MATMUL_GROUPS names)."""

    target: str
    per_channel: bool = True
    smoothing_alpha: float | None = None
    per_token: tuple[str, ...] = ()
    keep_fp32: tuple[str, ...] = ()

    @property
    def reduce_range(self) -> bool:
        """7-bit weights: what AVX2's saturating u8 x s8 kernel needs to stay exact."""
        return self.target != "vnni"

    def describe(self) -> dict[str, Any]:
        """The recipe as the manifest records it."""
        return {
            "target": self.target,
            "activations": "uint8, dynamic, per tensor"
            + (f"; per token for {', '.join(self.per_token)}" if self.per_token else ""),
            "weights": f"int8 {'7-bit' if self.reduce_range else 'full-range'}, "
            f"{'per channel' if self.per_channel else 'per tensor'}",
            "operators": ["MatMul"],
            "smoothing_alpha": self.smoothing_alpha,
            "per_token": list(self.per_token),
            "keep_fp32": list(self.keep_fp32),
        }


def int8_recipe(target: str, **overrides: Any) -> Int8Recipe:
    """The default recipe for `target` ("avx2" or "vnni"), with `overrides` of its fields
    (e.g. for the benchmark's frontier); ValueError on another target."""
    if target not in INT8_TARGETS:
        raise ValueError(f"int8 target must be one of {', '.join(INT8_TARGETS)}, not {target!r}")
    return dataclasses.replace(Int8Recipe(target=target), **overrides)


def quantize_int8(
    model_path: Path, recipe: Int8Recipe, calibration_texts: Sequence[str], tokenizer: TextTokenizer
) -> dict[str, Any]:
    """Rewrite the fp32 ONNX model at `model_path` as int8 by `recipe`, calibrating the smoothing
    on `calibration_texts` (tokenised by `tokenizer`). Returns what was done, for the manifest:
    the recipe, the calibration text count, the activations smoothed and the MatMuls quantised
    per token and kept in fp32. ValueError when a group names no MatMul of the model."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(model_path))
    kept = group_nodes(model.graph, recipe.keep_fp32, "keep-fp32")
    per_token = [name for name in group_nodes(model.graph, recipe.per_token, "per-token") if name not in kept]
    smoothed: list[str] = []
    if recipe.smoothing_alpha is not None:
        activations = WeightMatMuls.of(model.graph).activations
        maxima = calibrate(model, activations, calibration_texts, tokenizer)
        smoothed = smooth_graph(model, maxima, recipe.smoothing_alpha)
    per_token = quantize_per_token(model, set(per_token), weight_levels=63 if recipe.reduce_range else 127)
    fp32_path = model_path.with_name("model.fp32-smoothed.onnx")
    onnx.save(model, str(fp32_path))
    try:
        quantize_dynamic(
            fp32_path,
            model_path,
            op_types_to_quantize=["MatMul"],
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=kept + per_token,
        )
    finally:
        fp32_path.unlink(missing_ok=True)
    logger.info("int8 (%s): smoothed %d activations on %d texts", recipe.target, len(smoothed), len(calibration_texts))
    calibrated = len(calibration_texts) if smoothed else 0
    return {
        **recipe.describe(),
        "calibration_texts": calibrated,
        "smoothed": len(smoothed),
        "quantized_per_token": per_token,
        "kept_fp32": kept,
    }


def group_nodes(graph: Any, groups: Sequence[str], option: str) -> list[str]:
    """The MatMul node names of `graph` in the MATMUL_GROUPS `groups` (for the `option` an error
    names); ValueError on an unknown group or one that names no node of this graph."""
    names = [node.name for node in graph.node if node.op_type == "MatMul"]
    chosen: list[str] = []
    for group in groups:
        if group not in MATMUL_GROUPS:
            raise ValueError(f"int8 {option} group must be one of {', '.join(MATMUL_GROUPS)}, not {group!r}")
        matched = [name for name in names if re.search(MATMUL_GROUPS[group], name)]
        if not matched:
            raise ValueError(f"int8 {option} group {group!r} names no MatMul of this model")
        chosen += [name for name in matched if name not in chosen]
    return chosen


def calibrate(
    model: Any, activations: Sequence[str], texts: Sequence[str], tokenizer: TextTokenizer
) -> dict[str, np.ndarray]:
    """Per-channel max |x| of each tensor in `activations` over the real tokens of `texts`
    (at most MAX_CALIBRATION_TEXTS, in batches), running the fp32 `model` on CPU."""
    import onnxruntime as ort

    if not texts:
        raise ValueError("int8 calibration needs at least one text")
    probe = with_outputs(model, activations)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    input_names = {graph_input.name for graph_input in session.get_inputs()}
    maxima: dict[str, np.ndarray] = {}
    texts = list(texts)[:MAX_CALIBRATION_TEXTS]
    for start in range(0, len(texts), CALIBRATION_BATCH):
        inputs = tokenizer.pad_batch(tokenizer.tokenize(texts[start : start + CALIBRATION_BATCH]))
        outputs = session.run(list(activations), {name: inputs[name] for name in input_names})
        for name, values in zip(activations, outputs, strict=True):
            batch_max = channel_maxima(np.asarray(values), inputs["attention_mask"])
            maxima[name] = np.maximum(maxima[name], batch_max) if name in maxima else batch_max
    return maxima
