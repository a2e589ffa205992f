"""Per-token int8 quantisation of chosen MatMuls, as plain ONNX operators.

ONNX Runtime's dynamic quantisation gives a MatMul's input one scale for the whole tensor: every
token of every text in the batch. Transformers have a few tokens with activations far larger
than the rest (BERT's [CLS]/[SEP] and punctuation in the FFN's GELU output: "massive
activations", Sun et al., 2024), so with one scale the ordinary tokens keep a handful of int8
steps, and the FFN output projections measured as the int8 model's most sensitive MatMuls. Here
each token (row) gets its own scale instead, so one token's outlier costs only that token:

    s = max|x_row| / 127,  q = clip(round(x / s) + 128, 0, 255) as uint8,
    y = MatMulInteger(q, W_q, zero point 128) * w_scale * s

with W quantised symmetrically per output channel (`weight_levels` steps each side: 127, or 63
for AVX2's saturating u8 x s8 kernel, as export.quantization's reduce_range). The activation is
symmetric around the fixed zero point 128, so MatMulIntegerToFloat's scalar zero point serves every
row, and the per-row scale is applied after the integer product. The cost is two elementwise
passes over the MatMul's input (each row's max |x|, then QuantizeLinear) and one over its output,
measured in BENCHMARKS.md's int8 frontier.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

ACTIVATION_ZERO_POINT = 128


def quantize_weight(weight: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float32 scale per output column) for a (K, N) fp32 `weight`, symmetric with
    `levels` steps each side of zero; all-zero columns get scale 1."""
    maxima = np.abs(weight).max(axis=0)
    scales = np.where(maxima > 0, maxima / levels, 1.0).astype(np.float32)
    quantized = np.clip(np.round(weight / scales), -levels, levels).astype(np.int8)
    return quantized, scales


def quantize_per_token(model: Any, node_names: Collection[str], *, weight_levels: int = 127) -> list[str]:
    """Rewrite `model` (an onnx ModelProto, in place): each MatMul named in `node_names` whose
    second input is a 2-D initializer becomes per-token uint8 activations times per-channel int8
    weights (the module docstring's formula); fp32 weights left unused are dropped. Returns the
    names rewritten, in graph order."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    rewritten: list[str] = []
    nodes: list[Any] = []
    for node in graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if node.name not in node_names or weight is None or len(weight.dims) != 2:
            nodes.append(node)
            continue
        quantized, scales = quantize_weight(numpy_helper.to_array(weight).astype(np.float32), weight_levels)
        constants, replacement = _per_token_matmul(node, quantized, scales)
        graph.initializer.extend(constants)
        nodes += replacement
        rewritten.append(node.name)
    del graph.node[:]
    graph.node.extend(nodes)
    if rewritten and not any(entry.domain == "com.microsoft" for entry in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    used = {value for node in graph.node for value in node.input}
    for init in [init for init in graph.initializer if init.name not in used]:
        graph.initializer.remove(init)
    return rewritten


def _per_token_matmul(node: Any, weight: np.ndarray, weight_scale: np.ndarray) -> tuple[list[Any], list[Any]]:
    """(initializers, nodes) computing `node`'s output from its input with the int8 `weight`.

    The tokens are flattened to rows so that QuantizeLinear's per-axis form (one scale and zero
    point per row, opset 13) does divide, round, shift, clip and cast in one pass, and ONNX
    Runtime's MatMulIntegerToFloat does the integer product, its cast and the per-channel weight
    scale in one kernel: two passes over the input and one over the output besides the product
    (measured in BENCHMARKS.md's int8 frontier)."""
    from onnx import TensorProto, helper, numpy_helper

    prefix = f"{node.name}/per_token"
    constants = _constants(weight, weight_scale)
    zero_points = helper.make_tensor("value", TensorProto.UINT8, [1], [ACTIVATION_ZERO_POINT])
    source, target = node.input[0], node.output[0]
    steps: list[tuple[str, list[str], str, dict[str, Any]]] = [
        ("Abs", [source], "magnitude", {}),
        ("ReduceMax", ["magnitude", "last_axis"], "row_max", {"keepdims": 0}),
        ("Max", ["row_max", "smallest"], "row_max_positive", {}),
        ("Mul", ["row_max_positive", "inverse_levels"], "row_scale", {}),
        ("Reshape", ["row_scale", "rows"], "flat_scale", {}),
        ("Shape", ["flat_scale"], "row_count", {}),
        ("ConstantOfShape", ["row_count"], "flat_zero_points", {"value": zero_points}),
        ("Reshape", [source, "rows_by_channels"], "flat_input", {}),
        ("QuantizeLinear", ["flat_input", "flat_scale", "flat_zero_points"], "codes", {"axis": 0}),
        ("MatMulIntegerToFloat", ["codes", "weight", "unit_scale", "weight_scale", "zero_point"], "per_channel", {}),
        ("Reshape", ["flat_scale", "rows_by_one"], "column_scale", {}),
        ("Mul", ["per_channel", "column_scale"], "flat_output", {}),
        ("Shape", [source], "input_shape", {}),
        ("Slice", ["input_shape", "all_but_last", "last"], "leading_shape", {}),
        ("Concat", ["leading_shape", "channels"], "output_shape", {"axis": 0}),
        ("Reshape", ["flat_output", "output_shape"], target, {}),
    ]
    domains = {"MatMulIntegerToFloat": "com.microsoft"}

    def name(value: str) -> str:
        return value if value in (source, target) else f"{prefix}/{value}"

    initializers = [numpy_helper.from_array(value, name(key)) for key, value in constants.items()]
    nodes = [
        helper.make_node(
            op,
            [name(value) for value in inputs],
            [name(output)],
            name=f"{prefix}/{index}_{op}",
            domain=domains.get(op, ""),
            **attrs,
        )
        for index, (op, inputs, output, attrs) in enumerate(steps)
    ]
    return initializers, nodes


def _constants(weight: np.ndarray, weight_scale: np.ndarray) -> dict[str, np.ndarray]:
    """The initializers of one per-token MatMul, by their name within its prefix."""
    return {
        "weight": weight,
        "weight_scale": weight_scale,
        "inverse_levels": np.array(1.0 / 127.0, np.float32),
        "smallest": np.array(1e-12, np.float32),
        "unit_scale": np.array(1.0, np.float32),
        "zero_point": np.array(ACTIVATION_ZERO_POINT, np.uint8),
        "last_axis": np.array([-1], np.int64),
        "rows_by_channels": np.array([-1, weight.shape[0]], np.int64),
        "rows": np.array([-1], np.int64),
        "rows_by_one": np.array([-1, 1], np.int64),
        "all_but_last": np.array([0], np.int64),
        "last": np.array([-1], np.int64),
        "channels": np.array([weight.shape[1]], np.int64),
    }
