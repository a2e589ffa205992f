"""SmoothQuant-style scaling of an fp32 ONNX graph before dynamic int8 quantisation.

Dynamic quantisation gives each activation tensor one scale (per tensor, for the whole batch),
so a few channels with large values (BERT's LayerNorm outputs and GELU outputs have them) leave
the other channels a handful of int8 steps. Scaling moves that range into the weights, which are
quantised per output channel anyway: X*W = (X / s)*(s*W), with s_j = max|X_j|^alpha / max|W_j|^(1-alpha)
measured on calibration texts (Xiao et al., SmoothQuant, 2023). The division is an inserted Mul
on the activation (one elementwise pass, cheap beside the MatMul), the multiplication is folded
into the weight initializer, so the fp32 graph computes the same function (to rounding) and only
the int8 error changes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Migration strength: 0.5 splits the range evenly between activation and weight (the paper's
# default for BERT-sized models); measured in BENCHMARKS.md (int8 frontier).
DEFAULT_ALPHA = 0.5
_SMOOTH_SUFFIX = "_smoothed"


@dataclass(frozen=True)
class WeightMatMuls:
    """The MatMuls of a graph whose second input is a 2-D weight initializer, grouped by their
    activation input (Q, K and V read the same tensor and share one scale)."""

    by_input: dict[str, list[Any]]

    @classmethod
    def of(cls, graph: Any) -> WeightMatMuls:
        """The weight MatMuls of `graph` (an onnx GraphProto)."""
        weights = {init.name for init in graph.initializer if len(init.dims) == 2}
        groups: dict[str, list[Any]] = defaultdict(list)
        for node in graph.node:
            if node.op_type == "MatMul" and node.input[1] in weights:
                groups[node.input[0]].append(node)
        return cls(dict(groups))

    @property
    def activations(self) -> list[str]:
        """The activation tensors to calibrate, in graph order."""
        return list(self.by_input)


def channel_maxima(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """max |x| per channel (last axis) over the real tokens of a (batch, tokens, channels) array
    whose (batch, tokens) `mask` is 1 on real tokens; float64 (channels,), zeros when no token
    is real."""
    rows = np.abs(values[np.asarray(mask, dtype=bool)])
    if not len(rows):
        return np.zeros(values.shape[-1], dtype=np.float64)
    return np.asarray(rows.max(axis=0), dtype=np.float64)


def smoothing_scales(activation_max: np.ndarray, weight_max: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """s_j = a_j^alpha / w_j^(1-alpha) per input channel, float32; channels that never fire (or have no
    weight) keep s = 1, and s is kept within [1e-2, 1e2] so no channel is scaled to nothing."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    scales = np.ones_like(activation_max, dtype=np.float64)
    usable = (activation_max > 0) & (weight_max > 0)
    scales[usable] = activation_max[usable] ** alpha / weight_max[usable] ** (1.0 - alpha)
    return np.clip(scales, 1e-2, 1e2).astype(np.float32)


def smooth_graph(model: Any, maxima: dict[str, np.ndarray], alpha: float = DEFAULT_ALPHA) -> list[str]:
    """Rewrite `model` (an onnx ModelProto, in place): for each activation named in `maxima`
    (per-channel max |x| from calibration), insert X / s before its weight MatMuls and fold s
    into their weights. Returns the activations smoothed."""
    from onnx import helper, numpy_helper

    graph = model.graph
    groups = WeightMatMuls.of(graph).by_input
    initializers = {init.name: init for init in graph.initializer}
    users = _initializer_users(graph)
    smoothed = []
    for activation, activation_max in maxima.items():
        nodes = groups.get(activation, [])
        if not nodes or any(users[node.input[1]] > 1 for node in nodes):
            continue  # a shared weight would be scaled twice: leave that group alone
        weights = [numpy_helper.to_array(initializers[node.input[1]]) for node in nodes]
        weight_max = np.max([np.abs(weight).max(axis=1) for weight in weights], axis=0).astype(np.float64)
        scales = smoothing_scales(activation_max, weight_max, alpha)
        for node, weight in zip(nodes, weights, strict=True):
            initializers[node.input[1]].CopyFrom(
                numpy_helper.from_array((weight * scales[:, None]).astype(np.float32), node.input[1])
            )
        inverse_name, output = activation + "_inverse_scale", activation + _SMOOTH_SUFFIX
        graph.initializer.append(numpy_helper.from_array((1.0 / scales).astype(np.float32), inverse_name))
        position = min(list(graph.node).index(node) for node in nodes)
        graph.node.insert(position, helper.make_node("Mul", [activation, inverse_name], [output], name=output))
        for node in nodes:
            node.input[0] = output
        smoothed.append(activation)
    return smoothed


def _initializer_users(graph: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for node in graph.node:
        for name in node.input:
            counts[name] += 1
    return counts


def with_outputs(model: Any, names: Sequence[str]) -> Any:
    """A copy of `model` that also outputs the tensors `names` (float, any shape), for
    calibration."""
    import onnx
    from onnx import TensorProto, helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {output.name for output in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return copy
