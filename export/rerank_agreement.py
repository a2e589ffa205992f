"""Rerank agreement: how closely a reranker variant orders candidates like the fp32 reranker.

Each query (the first words of a sample text) gets a candidate list (its own text and others
from the sample, seeded); both rerankers score every pair. Reported: the share of fp32's top-N
the variant also puts in its top-N, and the share of candidate pairs the two order the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

TOP_N = 5
QUERIES = 40
CANDIDATES = 20
QUERY_WORDS = 3

Score = Callable[[Sequence[tuple[str, str]]], np.ndarray]


def order_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The share of item pairs (i < j) that two score vectors order the same way; pairs the
    reference ties are not counted (1.0 when there is nothing to order)."""
    left, right = np.triu_indices(len(reference), k=1)
    reference_sign = np.sign(reference[left] - reference[right])
    counted = reference_sign != 0
    if not counted.any():
        return 1.0
    same = reference_sign[counted] == np.sign(candidate[left] - candidate[right])[counted]
    return float(same.mean())


def top_n_overlap(reference: np.ndarray, candidate: np.ndarray, n: int) -> float:
    """|top-n of reference ∩ top-n of candidate| / n (ties: lower index first)."""
    best_reference = set(np.argsort(-reference, kind="stable")[:n].tolist())
    best_candidate = set(np.argsort(-candidate, kind="stable")[:n].tolist())
    return len(best_reference & best_candidate) / min(n, len(reference))


def rerank_agreement(
    reference: Score, variant: Score, texts: Sequence[str], *, top_n: int = TOP_N, seed: int = 0
) -> dict[str, Any]:
    """The variant's scores against the fp32 reranker's on queries made from `texts` (see the
    module); {"queries", "candidates", "top_n", "top_n_agreement", "order_agreement"}.
    ValueError when there are fewer than 2 texts."""
    if len(texts) < 2:
        raise ValueError("rerank agreement needs at least 2 texts")
    rng = random.Random(seed)
    overlaps, orders = [], []
    per_query = min(CANDIDATES, len(texts))
    for index in rng.sample(range(len(texts)), min(QUERIES, len(texts))):
        query = " ".join(texts[index].split()[:QUERY_WORDS]) or texts[index]
        others = [row for row in rng.sample(range(len(texts)), per_query) if row != index][: per_query - 1]
        pairs = [(query, texts[row]) for row in [index, *others]]
        expected, measured = np.asarray(reference(pairs), np.float64), np.asarray(variant(pairs), np.float64)
        overlaps.append(top_n_overlap(expected, measured, top_n))
        orders.append(order_agreement(expected, measured))
    return {
        "queries": len(overlaps),
        "candidates": per_query,
        "top_n": top_n,
        "top_n_agreement": round(float(np.mean(overlaps)), 4),
        "order_agreement": round(float(np.mean(orders)), 4),
    }
