"""Paired comparisons of two targets on the same users: the mean difference of each metric with
a bootstrap confidence interval (scipy.stats.bootstrap over users), and whether it excludes 0.

Paired: both targets answered the same users on the same split, so the interval is of the mean
per-user difference, much narrower than comparing two unpaired means. The percentile method is
used because per-user metrics are often 0/1 (HitRate), where BCa's acceleration is undefined
for a sample of identical differences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Difference:
    """`target` minus `reference` on `metric` over `users` paired users: the mean difference, its
    `confidence` interval [low, high], a two-sided bootstrap p-value, and whether the interval
    excludes 0 (`significant`)."""

    metric: str
    reference: str
    target: str
    users: int
    mean: float
    low: float
    high: float
    p_value: float
    significant: bool
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        """The difference as a JSON-ready mapping."""
        return asdict(self)


def paired_difference(
    reference: Mapping[str, float],
    target: Mapping[str, float],
    *,
    metric: str = "",
    names: tuple[str, str] = ("reference", "target"),
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Difference:
    """target - reference over the users both have ({user: value} each), with a paired percentile
    bootstrap interval at `confidence` from `resamples` resamples of users (by `seed`). Equal
    differences for every user (e.g. both always 1) give a zero-width interval at that value.
    ValueError when the two share no user."""
    from scipy import stats

    users = sorted(set(reference) & set(target))
    if not users:
        raise ValueError(f"{names[1]} and {names[0]} share no user to compare")
    differences = np.asarray([target[user] - reference[user] for user in users], dtype=np.float64)
    mean = float(differences.mean())
    if np.all(differences == differences[0]):
        low = high = mean
        p_value = 1.0 if mean == 0 else 0.0
    else:
        result = stats.bootstrap(
            (differences,),
            np.mean,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
            vectorized=True,
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        means = result.bootstrap_distribution
        p_value = float(min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0))))
    significant = bool(low > 0 or high < 0)
    return Difference(metric, names[0], names[1], len(users), mean, low, high, p_value, significant, confidence)


def compare_targets(
    per_user: Mapping[str, Mapping[str, Mapping[str, float]]],
    reference: str,
    metrics: Sequence[str],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> list[Difference]:
    """Every other target of `per_user` ({target: {user: {metric: value}}}) against `reference`,
    on each of `metrics`: one Difference each, targets in `per_user` order."""
    base = per_user[reference]
    found = []
    for name, users in per_user.items():
        if name == reference:
            continue
        for metric in metrics:
            found.append(
                paired_difference(
                    {user: values[metric] for user, values in base.items()},
                    {user: values[metric] for user, values in users.items()},
                    metric=metric,
                    names=(reference, name),
                    confidence=confidence,
                    resamples=resamples,
                    seed=seed,
                )
            )
    return found
