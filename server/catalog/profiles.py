"""A user profile: the weighted mean of unit vectors (a given vector, texts, items), normalised,
and how much each of those parts contributes to an item's score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedrec.results import Contribution, PartKind
from embedrec.server.errors import InvalidArgument
from embedrec.server.inference.pooling import FloatArray, l2_normalize


@dataclass(frozen=True)
class ProfilePart:
    """One part of a profile: a vector (dim,), its weight, and where it came from (`kind`, its
    position in the request's list, the item id for items)."""

    vector: FloatArray
    weight: float
    kind: PartKind
    index: int = 0
    item_id: str | None = None


@dataclass(frozen=True)
class Profile:
    """The unit profile vector and, per part, the coefficient c_j with vector = sum c_j u_j."""

    vector: FloatArray
    parts: Sequence[ProfilePart]
    unit_parts: FloatArray
    coefficients: FloatArray

    def top_contributions(self, items: FloatArray) -> list[Contribution]:
        """For each row of `items` (m, dim), the part with the largest share c_j * (u_j . item)
        of its score (the profile's score is exactly the sum of these shares)."""
        shares = self.coefficients[:, None] * (self.unit_parts @ items.T)  # (parts, m)
        best = np.argmax(shares, axis=0)
        return [
            Contribution(self.parts[j].kind, self.parts[j].index, self.parts[j].item_id, float(shares[j, column]))
            for column, j in enumerate(best.tolist())
        ]


def combine_profile(parts: Sequence[ProfilePart]) -> Profile:
    """Unit vector of sum(weight * unit(vector)) over `parts`.

    Negative weights (dislikes) pull the profile away from their part; the coefficients keep
    their sign, so shares still sum exactly to the score. Raises InvalidArgument when there are
    no parts, no part has a positive weight, or the parts cancel out (no direction).
    """
    if not parts:
        raise InvalidArgument("the user profile is empty: give user_vector, texts or items")
    unit_parts = l2_normalize(np.stack([part.vector for part in parts]).astype(np.float32))
    weights = np.asarray([part.weight for part in parts], dtype=np.float64)
    if not (weights > 0).any():
        raise InvalidArgument(
            "the user profile has no part with a positive weight (negative weights are dislikes; "
            "give at least one thing the user likes)"
        )
    combined = (weights[:, None] * unit_parts.astype(np.float64)).sum(axis=0)
    norm = float(np.linalg.norm(combined))
    if not np.isfinite(norm) or norm < 1e-6:
        raise InvalidArgument("the user profile's parts cancel out; the profile has no direction")
    vector: FloatArray = (combined / norm).astype(np.float32)
    coefficients: FloatArray = (weights / norm).astype(np.float32)
    return Profile(vector, list(parts), unit_parts, coefficients)


class BestScore:
    """The best_score strategy: an item scores its best cosine to a liked part (positive weight)
    minus its best cosine to a disliked part (negative weight; 0 without any). Weights count only
    by their sign. Exact: the scan scores every row this way (one product per part)."""

    def __init__(self, parts: Sequence[ProfilePart]) -> None:
        """Raises InvalidArgument without a liked part."""
        weights = np.asarray([part.weight for part in parts], dtype=np.float64)
        if not parts or not (weights > 0).any():
            raise InvalidArgument(
                "best_score needs at least one part with a positive weight (something the user likes)",
                field="best_score",
            )
        unit = l2_normalize(np.stack([part.vector for part in parts]).astype(np.float32))
        self.parts = list(parts)
        self._liked = np.flatnonzero(weights > 0)
        self._disliked = np.flatnonzero(weights < 0)
        self._liked_matrix = np.ascontiguousarray(unit[self._liked].T)
        self._disliked_matrix = np.ascontiguousarray(unit[self._disliked].T) if self._disliked.size else None
        # Not used for ranking (the scorer is), only where a query needs a vector of the right shape.
        self.vector: FloatArray = unit[self._liked[0]]
        self.liked: FloatArray = unit[self._liked]
        self.disliked: FloatArray = unit[self._disliked]

    def score(self, rows: FloatArray) -> FloatArray:
        """The best_score of each of `rows` (m, dim): float32 (m,)."""
        scores: FloatArray = (rows @ self._liked_matrix).max(axis=1)
        if self._disliked_matrix is not None:
            scores = scores - (rows @ self._disliked_matrix).max(axis=1)
        return scores.astype(np.float32, copy=False)

    def top_contributions(self, items: FloatArray) -> list[Contribution]:
        """For each row of `items`, the liked part it is most similar to, with that cosine."""
        similarities = items @ self._liked_matrix  # (m, liked)
        best = np.argmax(similarities, axis=1)
        found = []
        for row, column in enumerate(best.tolist()):
            part = self.parts[int(self._liked[column])]
            found.append(Contribution(part.kind, part.index, part.item_id, float(similarities[row, column])))
        return found
