"""What the admin operations answer, in plain Python: one definition for the server that
produces them and the client that reads them back (dependency-free, so the client still installs
with grpcio, protobuf and numpy only and never imports the server)."""

from __future__ import annotations

from dataclasses import dataclass


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
