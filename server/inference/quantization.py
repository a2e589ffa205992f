"""Embeddings as compact codes: the int8, uint8, binary and ubinary types Cohere's embed API
(and EmbedRequest.embedding_type) offer, each by one stated rule that depends on the vector
alone, never on the other texts of the call.

- int8: each vector scaled so its largest |component| becomes 127, then rounded:
  c_i = round(127 · x_i / max_j |x_j|), in [-127, 127]. A positive scale per vector, so the
  cosine of two code vectors approximates the cosine of the float vectors (a zero vector codes
  as zeros).
- uint8: the int8 codes plus 128, in [1, 255] (subtract 128 before taking dot products).
- ubinary: one bit per dimension, 1 where x_i > 0, packed 8 per byte most significant bit first
  (numpy.packbits; a dimension count not divisible by 8 is padded with 0 bits), ceil(dim / 8)
  bytes per vector: sentence-transformers' quantize_embeddings(precision="ubinary").
- binary: the ubinary bytes minus 128 as int8 (quantize_embeddings(precision="binary")).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from embedrec.server.inference.pooling import FloatArray

CodeType = Literal["int8", "uint8", "binary", "ubinary"]
CODE_TYPES: tuple[str, ...] = get_args(CodeType)


def quantized(vectors: FloatArray, kind: CodeType) -> npt.NDArray[np.int8] | npt.NDArray[np.uint8]:
    """`vectors` (float32 (n, dim)) as codes of `kind`: (n, dim) for int8/uint8, (n, ceil(dim/8))
    for binary/ubinary; int8 arrays for int8 and binary, uint8 for uint8 and ubinary."""
    if kind in ("binary", "ubinary"):
        packed: npt.NDArray[np.uint8] = np.packbits(vectors > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if kind == "binary" else packed
    largest: FloatArray = np.abs(vectors).max(axis=1, keepdims=True)
    scale = np.divide(127.0, largest, out=np.zeros_like(largest), where=largest > 0)
    codes: npt.NDArray[np.int8] = np.clip(np.rint(vectors * scale), -127, 127).astype(np.int8)
    return (codes.astype(np.int16) + 128).astype(np.uint8) if kind == "uint8" else codes
