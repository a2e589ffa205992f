"""What the server answers beyond vectors and ids, in plain Python (a recommendation's top
contribution, the admin operations' results): one definition for the server that produces them
and the client that reads them back (dependency-free, so the client still installs
with grpcio, protobuf and numpy only and never imports the server)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PartKind = Literal["user_vector", "text", "item"]


@dataclass(frozen=True)
class Contribution:
    """The profile part with the largest share of an item's score: `part` is "user_vector",
    "text" or "item", `index` its position (from 0) in the request's texts or item_ids, `item_id`
    the history item's id (None for other parts), `score` its share (all parts' shares sum to the score; with
    best_score, the cosine to the liked part)."""

    part: str  # a PartKind; a str so a client keeps working when a newer server adds a kind
    index: int
    item_id: str | None
    score: float


@dataclass(frozen=True)
class ReloadResult:
    """What EmbedRecAdmin.ReloadItems did: the matrix now served, the one before, whether it changed."""

    items_sha256: str
    item_count: int
    previous_items_sha256: str
    changed: bool


@dataclass(frozen=True)
class VisibilityResult:
    """What HideItems or RestoreItems did: ids that changed state, ids the catalog lacks, and
    how many items are hidden now."""

    changed: int
    unknown_ids: list[str]
    hidden_count: int


@dataclass(frozen=True)
class UpsertResult:
    """What UpsertItems did: ids new to the collection, ids replaced, items in it now."""

    inserted: int
    updated: int
    item_count: int


@dataclass(frozen=True)
class DeleteResult:
    """What DeleteItems did: ids removed, ids the collection lacks, items in it now."""

    deleted: int
    unknown_ids: list[str]
    item_count: int
