"""`embedrec export-model --task rerank`: a cross-encoder (sequence classification, one label)
exported with optimum, validated on pairs against PyTorch, scoring pairs as sentence-transformers'
CrossEncoder does — on a tiny random model built here (no hub)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedrec.export.onnx_model import export_model
from embedrec.server.errors import ConfigurationError
from embedrec.server.inference.encoder import OnnxEncoder
from embedrec.server.manifest import read_model_manifest
from tests.e2e.tiny_models import build_tiny_cross_encoder

PAIRS = [
    ("quiet air conditioner", "energy saving air conditioner for the home"),
    ("quiet air conditioner", "red running shoes for the family"),
    ("coffee", "a novel to read with tea"),
    ("空调", "这是一款高效节能的空调"),
    ("hello", ""),
    ("running " * 30, "shoes " * 40),  # longer than the max length: truncated longest-first
]


def test_the_manifest_says_it_is_a_reranker_and_how_it_was_validated(tiny_reranker_dir: Path) -> None:
    manifest = read_model_manifest(tiny_reranker_dir)
    assert (manifest.task, manifest.activation, manifest.dim, manifest.variant) == ("rerank", "sigmoid", 1, "fp32")
    assert manifest.validation["pairs"] >= 5
    assert manifest.validation["max_abs_diff"] <= manifest.validation["tolerance"] * max(
        1.0, manifest.validation["max_abs_logit"]
    )


def test_scores_equal_sentence_transformers_cross_encoder(tiny_cross_encoder: Path, tiny_reranker_dir: Path) -> None:
    from sentence_transformers import CrossEncoder

    reference = CrossEncoder(str(tiny_cross_encoder), max_length=48, device="cpu").predict(PAIRS)
    scores = OnnxEncoder(tiny_reranker_dir, provider="cpu").score(PAIRS)
    assert scores.dtype == np.float32 and scores.shape == (len(PAIRS),)
    np.testing.assert_allclose(scores, reference, atol=1e-5)
    assert len(set(np.round(scores, 4).tolist())) > 3  # the random model does tell pairs apart


def test_the_raw_logit_when_asked(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    output = export_model(str(tiny_cross_encoder), tmp_path / "raw", task="rerank", activation="none")
    assert output.activation == "none"
    reference = CrossEncoder(
        str(tiny_cross_encoder), max_length=48, device="cpu", activation_fn=torch.nn.Identity()
    ).predict(PAIRS)
    np.testing.assert_allclose(OnnxEncoder(tmp_path / "raw", provider="cpu").score(PAIRS), reference, atol=1e-5)


def test_a_classifier_with_several_labels_is_not_a_reranker(tmp_path: Path) -> None:
    source = build_tiny_cross_encoder(tmp_path / "two-labels", labels=2)
    with pytest.raises(ConfigurationError, match="one logit \\(num_labels 1\\); this model has 2 labels"):
        export_model(str(source), tmp_path / "out", task="rerank")
    assert not (tmp_path / "out").exists()


def test_rerank_exports_are_fp32_or_int8_and_activations_belong_to_rerank(
    tiny_cross_encoder: Path, tmp_path: Path
) -> None:
    # int8 rerankers are tests/e2e/test_int8.py's; the other variants are for bi-encoders.
    with pytest.raises(ValueError, match="fp32 or int8"):
        export_model(str(tiny_cross_encoder), tmp_path / "q", task="rerank", optimize="O2")
    with pytest.raises(ValueError, match="for --task rerank only"):
        export_model(str(tiny_cross_encoder), tmp_path / "a", activation="sigmoid")
