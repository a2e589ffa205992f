"""What an interaction says about a user (a like, a dislike, a text) and the profile a caller
would send for that user's history: history items weighted, dislikes negative, texts as texts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from embedrec.client.evaluate.interactions import Interaction
from embedrec.client.models import UserProfile

DEFAULT_NEGATIVE_EVENTS = frozenset({"dislike", "thumbs_down", "negative", "skip", "hide", "return"})
# Items the user was shown or already has, without liking or disliking them: never recommended
# to that user again (exclude_ids), but no part of the profile.
DEFAULT_SEEN_EVENTS = frozenset({"seen", "impression", "exclude"})


@dataclass(frozen=True)
class Feedback:
    """How rows are read as liking or disliking: an `event` in `negative_events`, a weight below
    `dislike_below` (a rating scale's "did not like"; None: no such threshold) or a negative weight
    is a dislike; other item rows are likes, weighted by their positive weight when `use_weights`
    (else 1). A dislike weighs `-dislike_weight` in the profile. An event in `seen_events` only
    keeps its item out of that user's recommendations."""

    negative_events: frozenset[str] = DEFAULT_NEGATIVE_EVENTS
    seen_events: frozenset[str] = DEFAULT_SEEN_EVENTS
    dislike_below: float | None = None
    use_weights: bool = True
    dislike_weight: float = 1.0

    def is_positive(self, row: Interaction) -> bool:
        """Whether `row` is an item the user liked (a candidate to hold out and to find)."""
        return row.item is not None and self.weight_of(row) > 0

    def weight_of(self, row: Interaction) -> float:
        """The profile weight of `row`: > 0 for a like, < 0 for a dislike, 0 for seen only."""
        if row.event is not None and row.event in self.seen_events:
            return 0.0
        if row.event is not None and row.event in self.negative_events:
            return -self.dislike_weight
        if row.weight is not None:
            if row.weight < 0 or (self.dislike_below is not None and row.weight < self.dislike_below):
                return -self.dislike_weight
            if self.use_weights and row.weight > 0:
                return row.weight
        return 1.0


@dataclass(frozen=True)
class ProfileLimits:
    """The server's limits a profile must fit (Info): the most recent rows are kept."""

    max_history_items: int = 1_000
    max_texts: int = 64


@dataclass(frozen=True)
class BuiltProfile:
    """The profile of one user's history: item weights (summed over repeats, dislikes < 0),
    texts, how many history rows did not fit the server's limits, the liked items, and the
    items only to exclude (seen, or liked and disliked in equal measure)."""

    item_weights: dict[str, float]
    texts: list[str]
    dropped: int = 0
    positives: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)


def build_profile(history: Sequence[Interaction], feedback: Feedback, limits: ProfileLimits) -> BuiltProfile:
    """The profile a caller would send for `history` (oldest first): each item's weights summed
    (an item liked then disliked may cancel out and is left out), user texts once each; when the
    history has more items or texts than the limits allow, the most recent are kept."""
    weights: dict[str, float] = {}
    texts: dict[str, None] = {}
    for row in history:
        if row.item is not None:
            weights[row.item] = weights.get(row.item, 0.0) + feedback.weight_of(row)
        if row.text is not None:
            texts.pop(row.text, None)
            texts[row.text] = None  # re-inserted: the dict keeps the most recent order
    kept = {item: weight for item, weight in weights.items() if weight != 0}
    dropped = max(0, len(kept) - limits.max_history_items) + max(0, len(texts) - limits.max_texts)
    recent_items = dict(list(kept.items())[-limits.max_history_items :]) if limits.max_history_items else {}
    recent_texts = list(texts)[-limits.max_texts :] if limits.max_texts else []
    positives = [item for item, weight in recent_items.items() if weight > 0]
    excluded = [item for item, weight in weights.items() if weight == 0]
    return BuiltProfile(recent_items, recent_texts, dropped, positives, excluded)


def user_profile(built: BuiltProfile, k: int, options: UserProfile) -> UserProfile | None:
    """The UserProfile asking for `k` items for `built`, with the Recommend `options` (filters,
    conditions, diversity, rerank, approximate effort) of the target: history and seen items
    excluded, unknown history ids skipped. None when the profile has nothing positive to recommend from."""
    if not built.positives and not built.texts and options.vector is None:
        return None
    return dataclasses.replace(
        options,
        k=k,
        texts={text: 1.0 for text in built.texts} or None,
        item_ids=built.item_weights or None,
        exclude_ids=[*options.exclude_ids, *built.excluded],
        exclude_history=True,
        ignore_unknown_items=True,
        explain=False,
        offset=0,
    )
