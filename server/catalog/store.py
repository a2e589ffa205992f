"""The item store: what Recommend needs from a catalog, whatever holds it.

Two implementations: `embedrec.server.catalog.mmap.store.ItemIndex` (the memory-mapped matrix of
an item directory, the default) and `embedrec.server.catalog.milvus.store.MilvusItems` (a Milvus
collection: Milvus Lite in a local file, a Milvus server or a cluster). This module and the rest
of the catalog core know neither: a store's own types (its selection, how it reads a search
effort) stay in its package. The service speaks only this
protocol, so profiles, exclusions, filters, diversity, explanations and the hidden set mean the
same on both; a test suite runs every Recommend behaviour against each.

Every method may block (file pages, network): call them off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from embedrec.results import Contribution, VisibilityResult
from embedrec.server.catalog.fields import ConditionSpec, FieldKind
from embedrec.server.catalog.live_recall import RecallEstimate
from embedrec.server.catalog.score_formula import Float64Array, ScoreFormula
from embedrec.server.errors import InvalidArgument, NotFound, quoted
from embedrec.server.inference.pooling import FloatArray

if TYPE_CHECKING:  # live.py names this module's types: only the type checker follows the loop
    from embedrec.server.catalog.live import LiveItemStore

StoreKind = Literal["mmap", "milvus"]
# The longest item id, in UTF-8 bytes, anywhere: catalogs, requests, Milvus (its VARCHAR key limit).
MAX_ID_BYTES = 4096


class Selection:
    """What one query may return, compiled by the store that will search it (its `selection`):
    one value from the request's handler to the store's search, opaque to everything between.
    Each store subclasses it (the memory-mapped store's RowFilter, Milvus's MilvusSelection) and
    refuses another store's."""

    __slots__ = ()


@dataclass(frozen=True)
class SearchEffort:
    """How far an approximate index's search walks, as a request or the server asks for it:
    HNSW's ef, IVF_FLAT's nprobe (0: not set). The store reads it (an exact store refuses any)."""

    ef: int = 0
    nprobe: int = 0

    def is_set(self) -> bool:
        """Whether either parameter is given."""
        return bool(self.ef or self.nprobe)

    def or_else(self, default: SearchEffort) -> SearchEffort:
        """This effort, `default`'s parameters where this one has none."""
        return SearchEffort(self.ef or default.ef, self.nprobe or default.nprobe)


# The default of signatures and dataclasses: no effort given.
NO_EFFORT = SearchEffort()


def refuse_effort(effort: SearchEffort, *, field: str, reason: str) -> SearchEffort:
    """`effort` when it is unset, else InvalidArgument naming `field`.ef / `field`.nprobe: the
    items are searched exactly (`reason` says why), so no effort applies."""
    if effort.is_set():
        given = "ef" if effort.ef else "nprobe"
        raise InvalidArgument(
            f"{field}.{given} given, but the served items are searched exactly ({reason}); leave it unset",
            field=f"{field}.{given}",
        )
    return effort


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: its id, its score (the cosine, or with a score formula the
    formula's score), its position in the catalog (the row of the matrix; ties are broken by it)
    and, when asked for, the profile part that contributed most to its similarity."""

    item_id: str
    score: float
    row: int
    contribution: Contribution | None = None
    # The cross-encoder's score when a rerank stage ordered the results (None otherwise, or for
    # an item without a text).
    rerank_score: float | None = None
    # The item's vector when the store returned it with the result (Milvus), for explanations.
    vector: FloatArray | None = field(default=None, compare=False, repr=False)
    # With a score formula: the similarity part of `score` and, explained, each term's part (in
    # the formula's order): score = float64(similarity) + the sum of the parts.
    similarity: float | None = None
    score_terms: tuple[float, ...] = ()


@dataclass(frozen=True)
class Query:
    """One user's search: a unit profile vector (dim,), the items it may return (the store's
    `selection`), an optional score floor, and an optional scorer replacing profile . item."""

    profile: FloatArray
    row_filter: Selection
    min_score: float | None = None
    # Scores rows itself instead of profile . row (e.g. best_score): a block (rows, dim) -> (rows,).
    scorer: Callable[[FloatArray], FloatArray] | None = None
    # time.monotonic() by which the answer is needed (None: none); a networked store bounds its
    # calls by it.
    deadline: float | None = None
    # With a scorer (best_score): the unit vectors of the liked and disliked parts, (n, dim), for
    # a store that cannot run the scorer over every item (Milvus walks their neighbours).
    liked: FloatArray | None = None
    disliked: FloatArray | None = None
    # Rank by this score formula (similarity + weighted terms of numeric fields); min_score then
    # applies to the formula's score.
    formula: ScoreFormula | None = None


@dataclass(frozen=True)
class History:
    """The vectors of a profile's history items, in request order without the unknown ids
    (`unknown_positions`, only when unknown ids are ignored), and the store's handle on them
    for excluding them from the results (None: exclude nothing)."""

    vectors: FloatArray
    unknown_positions: list[int]
    handle: object


@dataclass(frozen=True)
class StoreDescription:
    """What Info and the model check read from a store."""

    kind: StoreKind
    location: str
    item_count: int
    items_sha256: str
    model_onnx_sha256: str
    model_name: str
    dim: int
    filter_field: str
    prompt_name: str
    prompt: str
    hidden_count: int
    fields: dict[str, FieldKind]
    # The memory-mapped store's first pass ("int8" or "float32", embedrec.server.catalog.mmap.scan)
    # and the bytes of packed codes it holds; empty / 0 for Milvus.
    scan: str = ""
    code_bytes: int = 0
    # What serves the items when it is not embedrec itself: "milvus v2.3.5-lite", "milvus
    # milvus_lite-3.2.2" (the version Milvus reports); empty for the memory-mapped store.
    engine_version: str = ""
    # The Milvus store's vector index ("FLAT (exact)", "HNSW M=16 efConstruction=200, ef 512
    # (approximate)"); empty for the matrix, always exact.
    index: str = ""
    approximate: bool = False
    # Empty while the store answers; else how long it has not and why (store_health).
    store_error: str = ""
    # Empty while an approximate index searches every row through the index it built; else what
    # still waits and for how long (milvus.readiness: Milvus answers from an interim index).
    index_loading: str = ""
    # The live recall@k estimate of an approximate store's searches (live_recall); None: not measured.
    live_recall: RecallEstimate | None = None


class ItemStore(Protocol):
    """A catalog Recommend can search (see the module docstring)."""

    def describe(self) -> StoreDescription:
        """The store's identity, size and fields (cheap: no catalog scan)."""
        ...

    def history(
        self, item_ids: Sequence[str], *, field: str, ignore_unknown: bool, deadline: float | None = None
    ) -> History:
        """The vectors of `item_ids`. Raises InvalidArgument naming `field` for an id given twice,
        and NotFound naming `field` and the unknown ids unless `ignore_unknown`; a networked
        store bounds its calls by `deadline` (time.monotonic())."""
        ...

    def selection(
        self,
        history: History,
        exclude_ids: Sequence[str],
        filter_values: Sequence[str],
        *,
        field: str,
        conditions: Sequence[ConditionSpec] = (),
        conditions_field: str = "where",
        effort: SearchEffort = NO_EFFORT,
        effort_field: str = "approximate",
    ) -> Selection:
        """What one query may return: not hidden, not in `history` nor `exclude_ids` (unknown ids
        are ignored), with one of `filter_values` in the filter field when given, and every
        condition met; with an approximate index, how far its search walks (`effort`).
        InvalidArgument naming `field` when the catalog has no filter field,
        `conditions_field`[i] for a bad condition, `effort_field` for an effort the store's
        search does not take."""
        ...

    def check_categorical(self, name: str, *, field: str) -> None:
        """InvalidArgument naming `field` unless `name` is a categorical field of the items."""
        ...

    def unmatched_values(
        self, filter_values: Sequence[str], conditions: Sequence[ConditionSpec], *, field: str, conditions_field: str
    ) -> list[str]:
        """Warnings for the `filter_values` and the conditions' any_of/none_of values that no item
        has (after `selection` accepted them), naming `field` or `conditions_field`[i]; a store
        that cannot tell cheaply returns none."""
        ...

    def field_values(self, chosen: Sequence[Recommendation], name: str) -> list[Sequence[Hashable]]:
        """The values of the categorical field `name` of each of `chosen`."""
        ...

    def search(self, queries: Sequence[Query], k: int, *, threads: int = 0) -> list[list[Recommendation]]:
        """The k best items of each query, best first, exact, equal scores in catalog order;
        `threads` caps the threads of a local product (0: one per core)."""
        ...

    def vectors_of(self, chosen: Sequence[Recommendation]) -> FloatArray:
        """The vectors of `chosen` (len, dim) float32."""
        ...

    def prepare_formula(self, formula: ScoreFormula, *, field: str) -> None:
        """Ready `formula` for searches (a store may compute its prior part of every item now);
        InvalidArgument naming `field` when it is not finite for some item."""
        ...

    def numeric_values(self, chosen: Sequence[Recommendation], name: str) -> Float64Array:
        """The values of the numeric field `name` of each of `chosen` (NaN: none)."""
        ...

    def texts_of(self, chosen: Sequence[Recommendation], deadline: float | None = None) -> list[str] | None:
        """The texts of `chosen` ("" for an item stored without one), for a rerank stage; None
        when the store holds no texts (built before they were stored)."""
        ...

    def hide(self, item_ids: Sequence[str]) -> VisibilityResult:
        """Hide the known `item_ids` from the next search on, persistently."""
        ...

    def restore(self, item_ids: Sequence[str]) -> VisibilityResult:
        """Show `item_ids` again from the next search on, persistently."""
        ...

    def hidden_ids(self) -> Sequence[str]:
        """Every hidden id, sorted."""
        ...

    def live(self) -> LiveItemStore | None:
        """This store as one that takes changes while serving (UpsertItems, DeleteItems), or
        None when it is read-only (rebuilt offline)."""
        ...


def stored_vectors(chosen: Sequence[Recommendation], dim: int) -> FloatArray:
    """The vectors a store attached to `chosen` (len, dim); ValueError when one lacks it."""
    if any(one.vector is None for one in chosen):
        raise ValueError("a recommendation has no vector attached")
    if not chosen:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([np.asarray(one.vector, dtype=np.float32) for one in chosen])


def check_distinct(item_ids: Sequence[str], field: str) -> None:
    """InvalidArgument naming `field` when an id is given twice."""
    seen: set[str] = set()
    for item_id in item_ids:
        if item_id in seen:
            raise InvalidArgument(f"{field} has duplicate id {quoted(item_id)}; give each item once", field=field)
        seen.add(item_id)


def unknown_ids_error(field: str, unknown: Sequence[str]) -> NotFound:
    """The NotFound naming `field` and (the first few of) the `unknown` ids."""
    shown = ", ".join(quoted(item_id) for item_id in unknown[:5])
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    skip = ""
    if field.endswith("items"):  # history: skipping them is an option of the request
        skip = " (set ignore_unknown_items, the CLI's --ignore-unknown-items, to skip them)"
    return NotFound(f"{field}: unknown item id(s) {shown}{more}{skip}", field=field)
