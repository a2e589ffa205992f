"""Retrieval agreement: how much of the fp32 model's top-k a variant returns.

Cosine to fp32 says little a user feels; a recommendation list that changes one item in seven
is felt. So a variant is measured where it is used: queries from a catalog sample against that
sample as items, each query's own row left out (it would be the trivial first hit on both
sides). Two figures: the variant's queries against the variant's items (everything re-embedded
with it), and the variant's queries against fp32 items (items built once at fp32, queries
served by the variant: export.items and server.loading allow that pairing).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from embedrec.client.loadtest.workload import WORDS

TOP_K = 10
QUERY_COUNT = 300
GENERATED_TEXTS = 1000

Embed = Callable[[Sequence[str]], np.ndarray]


def top_k_rows(queries: np.ndarray, items: np.ndarray, k: int, leave_out: np.ndarray | None = None) -> np.ndarray:
    """Indices (queries, k) of each query's k highest dot products with `items`, best first
    (ties: the lower index first); row `leave_out[i]` never counts for query i."""
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    if leave_out is not None:
        scores[np.arange(len(queries)), leave_out] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


def top_k_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over rows of |reference row ∩ candidate row| / k for two (queries, k) index arrays:
    the share of the reference's top-k the candidate returns, order ignored."""
    if reference.shape != candidate.shape or reference.ndim != 2 or not reference.size:
        raise ValueError(f"need two equal non-empty (queries, k) arrays, got {reference.shape} and {candidate.shape}")
    shared = [len(set(left.tolist()) & set(right.tolist())) for left, right in zip(reference, candidate, strict=True)]
    return float(np.mean(shared) / reference.shape[1])


def retrieval_agreement(
    reference_vectors: np.ndarray,
    variant_vectors: np.ndarray,
    *,
    k: int = TOP_K,
    queries: int = QUERY_COUNT,
    seed: int = 0,
) -> dict[str, Any]:
    """Agreement of a variant with fp32 on one set of texts, embedded by both (rows match,
    L2-normalised): `queries` rows (a seeded sample) each search all rows but their own.

    Returns {"texts", "queries", "k", "variant_vs_variant", "variant_vs_fp32_items",
    "mean_cosine", "min_cosine"}. ValueError when there are not more than k texts.
    """
    count = len(reference_vectors)
    if variant_vectors.shape != reference_vectors.shape or count <= k:
        raise ValueError(f"agreement needs more than {k} texts embedded by both models (got {count})")
    chosen = np.array(sorted(random.Random(seed).sample(range(count), min(queries, count))))
    expected = top_k_rows(reference_vectors[chosen], reference_vectors, k, chosen)
    symmetric = top_k_rows(variant_vectors[chosen], variant_vectors, k, chosen)
    asymmetric = top_k_rows(variant_vectors[chosen], reference_vectors, k, chosen)
    cosines = np.sum(reference_vectors.astype(np.float64) * variant_vectors, axis=1)
    return {
        "texts": count,
        "queries": len(chosen),
        "k": k,
        "variant_vs_variant": round(top_k_agreement(expected, symmetric), 4),
        "variant_vs_fp32_items": round(top_k_agreement(expected, asymmetric), 4),
        "mean_cosine": round(float(cosines.mean()), 6),
        "min_cosine": round(float(cosines.min()), 6),
    }


def generated_texts(count: int = GENERATED_TEXTS, seed: int = 7) -> list[str]:
    """`count` seeded texts of 4-24 common English words: the sample when no catalog is given
    (word salad, so it measures the arithmetic, not a catalog's structure)."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(4, 24))) for _ in range(count)]


def embed_in_batches(embed: Embed, texts: Sequence[str], batch: int = 32) -> np.ndarray:
    """`embed` over `texts` in length-sorted batches of `batch` (the way an item build runs,
    and int8 scales depend on the batch), rows back in the texts' order."""
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    vectors: np.ndarray | None = None
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        embedded = embed([texts[row] for row in rows])
        if vectors is None:
            vectors = np.zeros((len(texts), embedded.shape[1]), dtype=np.float32)
        vectors[rows] = embedded
    if vectors is None:
        raise ValueError("no texts to embed")
    return vectors
