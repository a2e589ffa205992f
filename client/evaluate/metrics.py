"""Ranking metrics per user (HitRate, Recall, NDCG, MRR at each k) from ir-measures, and the
catalog-level ones (coverage, novelty as mean popularity rank).

ir-measures (on trec_eval, through pytrec_eval) computes the ranking metrics: the reference
implementations IR research reports with, so the figures mean what they mean elsewhere. trec_eval
ranks a run by score and breaks ties by document id, so each list is given strictly decreasing
scores from its rank: the order the recommender returned is the order evaluated.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# Our name -> ir-measures' name of the same measure at a cutoff. Success@k: 1 when any held-out
# item is in the top k (hit rate); R@k: the fraction of held-out items in the top k; nDCG@k with
# binary gains; RR@k: 1/rank of the first held-out item within the top k, else 0.
MEASURES = {"HitRate": "Success", "Recall": "R", "NDCG": "nDCG", "MRR": "RR"}


def metric_names(ks: Sequence[int]) -> list[str]:
    """The metric names computed for cutoffs `ks`, grouped by metric: HitRate@1, HitRate@10, …"""
    return [f"{name}@{k}" for name in MEASURES for k in ks]


def ranking_metrics(
    held_out: Mapping[str, Sequence[str]], recommended: Mapping[str, Sequence[str]], ks: Sequence[int]
) -> dict[str, dict[str, float]]:
    """{user: {"HitRate@k": …, "Recall@k": …, "NDCG@k": …, "MRR@k": …}} for every user of
    `held_out` (the items to find; at least one each), `recommended` the ranked ids per user (a
    user missing from it, or with no items, scores 0 everywhere)."""
    import ir_measures

    names = {
        ir_measures.parse_measure(f"{library}@{k}"): f"{ours}@{k}" for ours, library in MEASURES.items() for k in ks
    }
    qrels = [ir_measures.Qrel(user, item, 1) for user, items in held_out.items() for item in items]
    run = [
        ir_measures.ScoredDoc(user, item, float(len(items) - rank))
        for user, items in recommended.items()
        if user in held_out
        for rank, item in enumerate(_distinct(items))
    ]
    results = {user: dict.fromkeys(names.values(), 0.0) for user in held_out}
    for metric in ir_measures.iter_calc(list(names), qrels, run):
        results[metric.query_id][names[metric.measure]] = float(metric.value)
    return results


def _distinct(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def popularity_ranks(counts: Mapping[str, int], universe: Sequence[str]) -> dict[str, float]:
    """Each item of `universe` by its popularity rank in `counts` (1 = most interacted with; ties
    share their average rank, so items never seen share the rank in the middle of the tail)."""
    values = np.asarray([counts.get(item, 0) for item in universe], dtype=np.float64)
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return dict(zip(universe, ranks.tolist(), strict=True))


def novelty(recommended: Sequence[str], ranks: Mapping[str, float]) -> float | None:
    """The mean popularity rank of `recommended` (higher: less popular, more novel); None when
    it is empty. Items outside `ranks` take the rank after the last."""
    if not recommended:
        return None
    tail = len(ranks) + 1.0
    return float(np.mean([ranks.get(item, tail) for item in recommended]))


def coverage(recommended: Iterable[Sequence[str]], catalog_size: int) -> float:
    """The fraction of the catalog's `catalog_size` items recommended to anyone."""
    distinct = {item for items in recommended for item in items}
    return len(distinct) / catalog_size if catalog_size else 0.0


def interaction_counts(histories: Iterable[Iterable[str]]) -> Counter[str]:
    """How many users interacted with each item (each history counted once per item)."""
    counts: Counter[str] = Counter()
    for items in histories:
        counts.update(set(items))
    return counts


def mean_metrics(per_user: Mapping[str, Mapping[str, float]], names: Sequence[str]) -> dict[str, float]:
    """The mean of each metric in `names` over the users of `per_user` (0 for none)."""
    if not per_user:
        return dict.fromkeys(names, 0.0)
    return {name: float(np.mean([values[name] for values in per_user.values()])) for name in names}
