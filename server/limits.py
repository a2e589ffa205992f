"""Request limits and the checks that enforce them, with messages naming field and limit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from embedrec.server.config import setting
from embedrec.server.errors import InvalidArgument

# Norms whose vector float32 arithmetic normalises exactly enough (squares neither overflow nor
# lose precision to denormals); vectors outside are normalised in float64 first.
SAFE_NORMS = (1e-15, 1e15)


@dataclass(frozen=True)
class Limits:
    """Limits: per request (each is reported by Info)"""

    max_texts_per_request: int = setting(64, "texts per Embed request")
    max_chars_per_text: int = setting(10_000, "characters per text")
    max_total_chars: int = setting(200_000, "characters per request, all texts together")
    max_k: int = setting(1_000, "largest k for Recommend")
    max_history_items: int = setting(1_000, "item ids per Recommend profile")
    max_exclude_ids: int = setting(10_000, "exclude_ids per Recommend request")
    max_batch_users: int = setting(64, "users per RecommendBatch request")
    max_filter_values: int = setting(1_000, "filter_values per Recommend profile")
    max_offset: int = setting(10_000, "largest Recommend offset (results skipped for paging)")
    max_conditions: int = setting(32, "field conditions (where) per Recommend profile")
    max_score_terms: int = setting(8, "terms of a Recommend score formula")


def check_texts(texts: Sequence[str], limits: Limits, *, field: str, max_count: int | None = None) -> None:
    """Raise InvalidArgument unless `texts` holds 1..max_count non-blank texts within the limits."""
    limit = limits.max_texts_per_request if max_count is None else max_count
    if not texts:
        raise InvalidArgument(f"{field} is empty; send 1 to {limit} texts", field=field)
    if len(texts) > limit:
        raise InvalidArgument(
            f"{field} has {len(texts)} texts; the limit is {limit} per request", field=field, limit=limit
        )
    total = 0
    for index, text in enumerate(texts):
        if not text or text.isspace():  # isspace stops at the first visible character; strip copies
            raise InvalidArgument(f"{field}[{index}] is empty or blank", field=f"{field}[{index}]")
        if len(text) > limits.max_chars_per_text:
            raise InvalidArgument(
                f"{field}[{index}] has {len(text)} characters; the limit is max_chars_per_text="
                f"{limits.max_chars_per_text}",
                field=f"{field}[{index}]",
                limit=limits.max_chars_per_text,
            )
        total += len(text)
    if total > limits.max_total_chars:
        raise InvalidArgument(
            f"{field} has {total} characters in all; the limit is max_total_chars={limits.max_total_chars}",
            field=field,
            limit=limits.max_total_chars,
        )


def check_vector(values: Sequence[float] | npt.NDArray[np.float32], dim: int, *, field: str) -> npt.NDArray[np.float32]:
    """`values` as float32 (dim,); InvalidArgument on wrong length, NaN/Inf or all zeros. Only
    the direction counts: a vector whose norm float32 arithmetic cannot take (1e18 values
    overflow its squares, 1e-20 values underflow them) comes back unit-length, computed in
    float64; any other comes back as given."""
    if len(values) != dim:
        raise InvalidArgument(f"{field} has {len(values)} values; the model's dim is {dim}", field=field)
    vector = np.asarray(values, dtype=np.float32)
    if not np.isfinite(vector).all():
        raise InvalidArgument(f"{field} contains NaN or Inf", field=field)
    wide = vector.astype(np.float64)
    norm = float(np.linalg.norm(wide))  # float64 holds the square of any float32
    if norm == 0.0:
        raise InvalidArgument(f"{field} is all zeros; its direction is undefined", field=field)
    if SAFE_NORMS[0] <= norm <= SAFE_NORMS[1]:
        return vector
    unit: npt.NDArray[np.float32] = (wide / norm).astype(np.float32)
    return unit


def check_weight(weight: float, *, field: str, negative: bool = False) -> float:
    """`weight` if finite and >= 0 (any finite value when `negative`: a dislike), else
    InvalidArgument naming `field`."""
    if not math.isfinite(weight) or (weight < 0 and not negative):
        raise InvalidArgument(f"{field} must be finite{'' if negative else ' and >= 0'}, got {weight}", field=field)
    return weight


def check_score_floor(value: float | None, *, field: str) -> float | None:
    """`value` when None or in [-1, 1] (a cosine), else InvalidArgument naming `field`."""
    if value is not None and not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise InvalidArgument(f"{field} must be a cosine in [-1, 1], got {value}", field=field)
    return value


def check_k(k: int, limits: Limits, *, field: str = "k") -> None:
    """Raise InvalidArgument unless 1 <= k <= max_k (an unset k reads as 0: the message says so)."""
    if k < 1 or k > limits.max_k:
        unset = " (an unset k reads as 0: set it)" if k == 0 else ""
        raise InvalidArgument(
            f"{field} must be {integer_range(1, limits.max_k, 'max_k')}, got {k}{unset}",
            field=field,
            limit=limits.max_k,
        )


def integer_range(low: int, high: int, limit_name: str = "") -> str:
    """How every message words an integer's range: "an integer from 1 to 1000 (max_k)"."""
    return f"an integer from {low} to {high}" + (f" ({limit_name})" if limit_name else "")


def check_count(count: int, limit: int, *, field: str, limit_name: str) -> None:
    """Raise InvalidArgument when `count` entries of `field` exceed `limit`."""
    if count > limit:
        raise InvalidArgument(
            f"{field} has {count} entries; the limit is {limit_name}={limit}", field=field, limit=limit
        )
