"""A user profile: the weighted mean of unit vectors (a given vector, texts, items), normalised."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from server.errors import InvalidArgument
from server.pooling import FloatArray, l2_normalize


def combine_profile(parts: Sequence[tuple[FloatArray, float]]) -> FloatArray:
    """Unit vector of sum(weight * unit(vector)) over `parts` of (vector (dim,), weight).

    Raises InvalidArgument when there are no parts, all weights are zero, or the parts cancel
    out (the mean has no direction).
    """
    if not parts:
        raise InvalidArgument("the user profile is empty: give user_vector, texts or items")
    vectors = l2_normalize(np.stack([vector for vector, _ in parts]).astype(np.float32))
    weights = np.asarray([weight for _, weight in parts], dtype=np.float64)
    if weights.sum() <= 0:
        raise InvalidArgument("the user profile's weights are all zero")
    combined = (weights[:, None] * vectors.astype(np.float64)).sum(axis=0)
    norm = float(np.linalg.norm(combined))
    if not np.isfinite(norm) or norm < 1e-6:
        raise InvalidArgument("the user profile's parts cancel out; the profile has no direction")
    profile: FloatArray = (combined / norm).astype(np.float32)
    return profile
