"""Validation of an exported model against its PyTorch original.

Both sides embed the same texts (varied lengths and scripts, one longer than any max length);
the export fails when their pooled vectors disagree beyond a cosine threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedrec.server.inference.encoder import OnnxEncoder
from embedrec.server.manifest import PoolingName

VALIDATION_TEXTS: tuple[str, ...] = (
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Energy-saving air conditioner for a small apartment, quiet at night.",
    "这是一款高效节能的空调，适合家庭使用。",
    "我喜欢在周末读科幻小说和喝咖啡。",
    "Running shoes 🏃‍♀️ with extra cushioning ✨",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "¿Dónde está la estación de tren más cercana?",
    "A",
    "numbers 12345 and symbols #@$%^&*()",
    " ".join(["A very long product description that repeats itself."] * 80),
)


class ExportValidationError(Exception):
    """The ONNX export does not reproduce the PyTorch model within the threshold."""


def validate_against_pytorch(
    source_dir: Path,
    export_dir: Path,
    *,
    max_length: int,
    pooling: PoolingName,
    min_cosine: float,
    texts: Sequence[str] = VALIDATION_TEXTS,
) -> dict[str, Any]:
    """Compare the server's encoder on `export_dir` with PyTorch on `source_dir`.

    Returns {"texts", "min_cosine", "mean_cosine", "max_abs_diff"} over the L2-normalised
    pooled vectors; raises ExportValidationError when min cosine < `min_cosine`.
    """
    reference = _pytorch_embeddings(source_dir, texts, max_length=max_length, pooling=pooling)
    exported = OnnxEncoder(export_dir, provider="cpu").encode(texts, normalize=True, pooling=pooling)
    cosines = np.sum(reference * exported, axis=1)
    report = {
        "texts": len(texts),
        "min_cosine": float(cosines.min()),
        "mean_cosine": float(cosines.mean()),
        "max_abs_diff": float(np.abs(reference - exported).max()),
    }
    if report["min_cosine"] < min_cosine:
        worst = int(cosines.argmin())
        raise ExportValidationError(
            f"ONNX export disagrees with PyTorch: min cosine {report['min_cosine']:.6f} < "
            f"{min_cosine} (validation text #{worst}); report: {report}"
        )
    return report


def _pytorch_embeddings(source_dir: Path, texts: Sequence[str], *, max_length: int, pooling: PoolingName) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    model = AutoModel.from_pretrained(source_dir).eval()
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return pooled.numpy().astype(np.float32)


# (query, document) pairs for a reranker: related and unrelated, several scripts, one pair longer
# than any max length (truncated longest-first on both sides).
VALIDATION_PAIRS: tuple[tuple[str, str], ...] = (
    ("quiet air conditioner", "Energy-saving air conditioner for a small apartment, quiet at night."),
    ("quiet air conditioner", "Running shoes 🏃‍♀️ with extra cushioning ✨"),
    ("空调", "这是一款高效节能的空调，适合家庭使用。"),
    ("hello", "A"),
    ("Wo ist der Bahnhof?", "¿Dónde está la estación de tren más cercana?"),
    ("numbers", "numbers 12345 and symbols #@$%^&*()"),
    (" ".join(["a long query about coffee"] * 40), " ".join(["A very long product description."] * 80)),
)
# Largest |ONNX logit - PyTorch logit| accepted, relative to the larger of 1 and the largest
# |logit|: fp32 exports agree to ~1e-6 of that.
RERANK_TOLERANCE = 1e-4


def validate_reranker_against_pytorch(
    source_dir: Path,
    export_dir: Path,
    *,
    max_length: int,
    tolerance: float = RERANK_TOLERANCE,
    pairs: Sequence[tuple[str, str]] = VALIDATION_PAIRS,
) -> dict[str, Any]:
    """Compare the server's reranker on `export_dir` with PyTorch's sequence classifier on
    `source_dir`: the raw logits of `pairs`.

    Returns {"pairs", "max_abs_diff", "max_abs_logit", "tolerance"}; raises ExportValidationError
    when max |difference| > `tolerance` x max(1, max |logit|).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    model = AutoModelForSequenceClassification.from_pretrained(source_dir).eval()
    queries, documents = [query for query, _ in pairs], [document for _, document in pairs]
    batch = tokenizer(queries, documents, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        reference = model(**batch).logits[:, 0].numpy().astype(np.float64)
    exported = OnnxEncoder(export_dir, provider="cpu").score(pairs, activation="none").astype(np.float64)
    scale = max(1.0, float(np.abs(reference).max()))
    report = {
        "pairs": len(pairs),
        "max_abs_diff": float(np.abs(reference - exported).max()),
        "max_abs_logit": float(np.abs(reference).max()),
        "tolerance": tolerance,
    }
    if report["max_abs_diff"] > tolerance * scale:
        worst = int(np.abs(reference - exported).argmax())
        raise ExportValidationError(
            f"ONNX reranker disagrees with PyTorch: max |logit difference| {report['max_abs_diff']:.3g} > "
            f"{tolerance} x {scale:.3g} (validation pair #{worst}); report: {report}"
        )
    return report
