"""Per-token int8 MatMuls (export.per_token) on a one-MatMul graph run by ONNX Runtime: the
rewrite computes exactly the documented integer formula, and one token's outlier no longer
costs the other tokens their precision, as it does with one scale per tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from embedrec.export.per_token import ACTIVATION_ZERO_POINT, quantize_per_token, quantize_weight

IN, OUT = 48, 16


def one_matmul(weight: np.ndarray) -> onnx.ModelProto:
    """y = x @ weight, x of shape (batch, tokens, IN)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/encoder/layer.0/output/dense/MatMul")],
        "one_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "tokens", OUT])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def per_token_reference(x: np.ndarray, weight: np.ndarray, levels: int) -> np.ndarray:
    """The module docstring's formula, in numpy with exact integer products."""
    codes, weight_scale = quantize_weight(weight, levels)
    row_scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-12).astype(np.float32) / np.float32(127)
    shifted = np.clip(np.round(x / row_scale) + ACTIVATION_ZERO_POINT, 0, 255).astype(np.int64)
    product = (shifted - ACTIVATION_ZERO_POINT) @ codes.astype(np.int64)
    return product.astype(np.float32) * weight_scale * row_scale


@pytest.fixture
def weight() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(IN, OUT)).astype(np.float32)


@pytest.mark.parametrize("levels", [127, 63])
def test_the_rewrite_computes_the_integer_formula_exactly(weight: np.ndarray, levels: int) -> None:
    model = one_matmul(weight)
    rewritten = quantize_per_token(model, {"/encoder/layer.0/output/dense/MatMul"}, weight_levels=levels)
    x = np.random.default_rng(1).normal(size=(3, 5, IN)).astype(np.float32)
    assert rewritten == ["/encoder/layer.0/output/dense/MatMul"]
    np.testing.assert_allclose(run(model, x), per_token_reference(x, weight, levels), rtol=1e-5, atol=1e-6)
    assert "w" not in {init.name for init in model.graph.initializer}  # the fp32 weight is gone


def test_weights_are_symmetric_per_output_channel_within_the_levels(weight: np.ndarray) -> None:
    weight[:, 3] = 0.0
    codes, scales = quantize_weight(weight, 63)
    assert codes.dtype == np.int8 and codes.min() >= -63 and codes.max() <= 63
    assert np.abs(codes[:, [0, 1, 2]]).max(axis=0).tolist() == [63, 63, 63]
    assert scales[3] == 1.0 and not codes[:, 3].any()


def test_an_outlier_token_costs_only_its_own_row(weight: np.ndarray, tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    x = np.random.default_rng(2).normal(size=(1, 8, IN)).astype(np.float32)
    x[0, 0, 0] = 500.0  # one massive activation, as BERT's separator tokens have
    exact = x @ weight
    per_tensor_path = tmp_path / "per_tensor.onnx"
    onnx.save(one_matmul(weight), str(tmp_path / "fp32.onnx"))
    quantize_dynamic(tmp_path / "fp32.onnx", per_tensor_path, per_channel=True, weight_type=QuantType.QInt8)
    per_tensor = run(onnx.load(str(per_tensor_path)), x)
    model = one_matmul(weight)
    quantize_per_token(model, {"/encoder/layer.0/output/dense/MatMul"})
    per_token = run(model, x)

    def error(approximate: np.ndarray) -> float:
        ordinary = slice(1, None)
        return float(np.abs(approximate[0, ordinary] - exact[0, ordinary]).max() / np.abs(exact[0, ordinary]).max())

    assert error(per_token) < 0.05 < error(per_tensor)


def test_nodes_not_named_or_without_a_weight_initializer_are_left_alone(weight: np.ndarray) -> None:
    model = one_matmul(weight)
    assert quantize_per_token(model, {"another MatMul"}) == []
    assert [node.op_type for node in model.graph.node] == ["MatMul"]
