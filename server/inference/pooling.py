"""Pure pooling and normalisation steps: token vectors → one vector per text."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from embedrec.server.manifest import PoolingName

FloatArray = npt.NDArray[np.float32]


def pool(hidden: FloatArray, attention_mask: npt.NDArray[np.int64], pooling: PoolingName) -> FloatArray:
    """Pool `hidden` (batch, seq, dim) with `attention_mask` (batch, seq) into (batch, dim).

    `mean` averages the unmasked token vectors (as sentence-transformers does); `cls` takes the
    first token's vector. Returns float32.
    """
    pooled: FloatArray
    if pooling == "cls":
        pooled = np.ascontiguousarray(hidden[:, 0, :], dtype=np.float32)
        return pooled
    mask = attention_mask.astype(np.float32)[:, :, None]
    summed = (hidden * mask).sum(axis=1)
    counts = np.maximum(mask.sum(axis=1), 1e-9)
    pooled = (summed / counts).astype(np.float32, copy=False)
    return pooled


def l2_normalize(vectors: FloatArray) -> FloatArray:
    """Rows of `vectors` scaled to unit L2 norm; all-zero rows stay zero. Returns float32."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    normalized: FloatArray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return normalized
