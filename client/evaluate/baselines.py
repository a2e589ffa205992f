"""Baselines run on the same split: popularity and random (here), and collaborative filtering by
implicit's alternating least squares (the `evaluate` extra), all trained on the history part only.

Each baseline ranks the same item universe the served catalog holds (the catalog file's ids, or
the log's items the server knows), excludes each user's history as the server does, and ignores
the Recommend options (filters, conditions): compare with options only on a server target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BASELINES = ("popularity", "random", "als")
USER_BLOCK = 512  # users scored at once: a (512, items) float32 block, 128 MB at 63k items


@dataclass(frozen=True)
class TrainingData:
    """The history part: each user's liked items with weights and every history item to exclude,
    over the item universe (`items`, in catalog order)."""

    items: Sequence[str]
    liked: Sequence[Mapping[str, float]]
    seen: Sequence[set[str]]

    def position_of(self) -> dict[str, int]:
        """Item id -> its position in the universe."""
        return {item: index for index, item in enumerate(self.items)}


def popularity(data: TrainingData, k: int, seed: int = 0) -> list[list[str]]:
    """The k items most users liked in the history part (ties in catalog order), per user less
    what that user already has."""
    position = data.position_of()
    counts = np.zeros(len(data.items), dtype=np.float32)
    for liked in data.liked:
        counts[[position[item] for item in liked if item in position]] += 1
    # A tiny decreasing offset keeps ties in catalog order without changing the popularity order.
    scores = counts - np.arange(len(counts), dtype=np.float32) * (0.5 / max(1, len(counts)))
    return _rank(data, k, lambda users: np.broadcast_to(scores, (len(users), len(scores))))


def random_items(data: TrainingData, k: int, seed: int = 0) -> list[list[str]]:
    """k items drawn uniformly from the universe less the user's history (per user by `seed` and
    the user's position, so a run repeats): what chance predicts."""

    def scores(users: range) -> npt.NDArray[np.float32]:
        block = np.empty((len(users), len(data.items)), dtype=np.float32)
        for row, user in enumerate(users):
            block[row] = np.random.default_rng([seed, user]).random(len(data.items), dtype=np.float32)
        return block

    return _rank(data, k, scores)


def als(
    data: TrainingData, k: int, seed: int = 0, *, factors: int = 64, iterations: int = 15, threads: int = 1
) -> list[list[str]]:
    """Implicit-feedback matrix factorisation (implicit's AlternatingLeastSquares, liked weights as
    confidence) fitted on the history part; each user's top k by the dot product of the factors.
    Raises ImportError when `implicit` is not installed (the `evaluate` extra)."""
    import scipy.sparse
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    position = data.position_of()
    rows, columns, values = [], [], []
    for user, liked in enumerate(data.liked):
        for item, weight in liked.items():
            if item in position:
                rows.append(user)
                columns.append(position[item])
                values.append(weight)
    matrix = scipy.sparse.csr_matrix(
        (np.asarray(values, dtype=np.float32), (rows, columns)), shape=(len(data.liked), len(data.items))
    )
    # implicit warns (and trains ~10x slower) when BLAS runs its own threads under its loops.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=factors, iterations=iterations, random_state=seed, num_threads=threads)
        model.fit(matrix, show_progress=False)
        user_factors = np.asarray(model.user_factors, dtype=np.float32)
        item_factors = np.asarray(model.item_factors, dtype=np.float32)
        return _rank(data, k, lambda users: user_factors[users.start : users.stop] @ item_factors.T)


BASELINE_FUNCTIONS: dict[str, Callable[[TrainingData, int, int], list[list[str]]]] = {
    "popularity": popularity,
    "random": random_items,
    "als": als,
}


def run_baseline(name: str, data: TrainingData, k: int, seed: int = 0) -> list[list[str]]:
    """Baseline `name`'s top-k ids per user (in `data` order). ValueError for an unknown name;
    ImportError when its library is missing."""
    if name not in BASELINE_FUNCTIONS:
        raise ValueError(f"unknown baseline {name!r}; the baselines are {', '.join(BASELINES)}")
    return BASELINE_FUNCTIONS[name](data, k, seed)


def _rank(data: TrainingData, k: int, scores_of: Callable[[range], npt.NDArray[np.float32]]) -> list[list[str]]:
    """Each user's k best-scoring items outside their history, best first."""
    position = data.position_of()
    found: list[list[str]] = []
    count = len(data.items)
    for start in range(0, len(data.seen), USER_BLOCK):
        users = range(start, min(start + USER_BLOCK, len(data.seen)))
        block = np.array(scores_of(users), dtype=np.float32)
        for row, user in enumerate(users):
            seen = [position[item] for item in data.seen[user] if item in position]
            block[row, seen] = -np.inf
        take = min(k, count)
        best = (
            np.argpartition(-block, take - 1, axis=1)[:, :take]
            if take < count
            else np.tile(np.arange(count), (len(users), 1))
        )
        for row in range(len(users)):
            candidates = best[row][np.isfinite(block[row, best[row]])]
            order = candidates[np.lexsort((candidates, -block[row, candidates]))]
            found.append([data.items[index] for index in order])
    return found
