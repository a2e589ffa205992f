"""A cross-encoder's output turned into relevance scores: one logit per (query, document) pair,
then the model's activation (sentence-transformers' CrossEncoder: sigmoid for one label)."""

from __future__ import annotations

import numpy as np

from embedrec.server.inference.pooling import FloatArray

ACTIVATIONS = ("sigmoid", "none")


def relevance_scores(logits: np.ndarray, activation: str) -> FloatArray:
    """Scores of `logits` (rows, 1) or (rows,): float32 (rows,), through `activation` ("sigmoid"
    or "none": the raw logit). ValueError for another activation."""
    raw = np.asarray(logits, dtype=np.float32).reshape(len(logits), -1)[:, 0]
    if activation == "none":
        return raw
    if activation == "sigmoid":
        # 1 / (1 + e^-x) without overflow for large |x|.
        return np.where(raw >= 0, 1 / (1 + np.exp(-np.abs(raw))), np.exp(-np.abs(raw)) / (1 + np.exp(-np.abs(raw))))
    raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
