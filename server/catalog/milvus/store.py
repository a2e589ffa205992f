"""The Milvus item store: the items in a Milvus collection (Milvus Lite, a server or a cluster).

For catalogs past one machine or changing all day: Milvus holds the vectors (an exact FLAT
index, inner product on unit rows = cosine), the fields and the hidden flags; embedrec keeps the
model, the profiles and the ranking rules, so Recommend answers as it does on the memory-mapped
matrix:

- every restriction (hidden items, exclusions, history, filter values, `where` conditions) is a
  Milvus filter expression, applied by Milvus inside its exact search: no over-fetching, k
  results whenever k eligible items exist;
- equal scores are ordered by catalog position (the build's row, kept in `position`): a search
  fetches past k until the last fetched score is below the k-th, then sorts by (score desc,
  position, id);
- best_score is exact by a threshold walk: the nearest items of every liked part and the
  farthest of every disliked part are fetched deeper until the k-th best score found beats the
  bound on any unseen item (the best liked threshold plus the best disliked one), with a full
  scan of the eligible items as the last resort.

The collection is built and kept in sync by `embedrec export-items --store milvus`
(embedrec.export.milvus_sync) and changed live by the admin RPCs UpsertItems/DeleteItems. Its
properties record the model it was embedded with; the server refuses another model's collection.
pymilvus is imported only when this store is chosen. Every call is bounded by the request's
deadline (else --milvus-timeout-s); a failing call answers UNAVAILABLE for Recommend while Embed
keeps working.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Hashable, Sequence

import numpy as np

from embedrec.results import DeleteResult, UpsertResult, VisibilityResult
from embedrec.server.catalog.exact import float32_error_bound
from embedrec.server.catalog.fields import ConditionSpec, check_conditions
from embedrec.server.catalog.live import ItemRow
from embedrec.server.catalog.live_recall import LiveRecall
from embedrec.server.catalog.milvus.calls import (
    ID_BATCH,
    MilvusCalls,
    MilvusUnreachableError,
    connect,
    error_message,
    milvus_errors,
)
from embedrec.server.catalog.milvus.filtered import (
    UNPLANNED,
    AdmittedCounts,
    FilterPlan,
    SegmentSizes,
    plan_for,
    planned_effort,
    searched_in_parts,
)
from embedrec.server.catalog.milvus.filters import MilvusSelection, condition_expressions, literal
from embedrec.server.catalog.milvus.formula import FieldRanges, formula_search, numeric_values
from embedrec.server.catalog.milvus.index import (
    VectorIndex,
    check_effort,
    harder_effort,
    search_params,
    server_effort,
)
from embedrec.server.catalog.milvus.ranking import (
    MAX_TOPK,
    TIE_MARGIN,
    best_score,
    every_row,
    exact_scores_for,
    rescored,
    scored_here,
    selection_of,
    sorted_hits,
)
from embedrec.server.catalog.milvus.readiness import index_readiness, is_milvus_server, segment_sizes
from embedrec.server.catalog.milvus.schema import (
    CONTENT_HASH,
    HIDDEN,
    ID,
    LAYOUT,
    POSITION,
    PROPERTY_PREFIX,
    TEXT,
    VECTOR,
    CollectionInfo,
    alter_properties,
    entity,
    milvus_field,
)
from embedrec.server.catalog.score_formula import Float64Array, ScoreFormula
from embedrec.server.catalog.store import (
    NO_EFFORT,
    History,
    Query,
    Recommendation,
    SearchEffort,
    StoreDescription,
    check_distinct,
    stored_vectors,
    unknown_ids_error,
)
from embedrec.server.catalog.store_health import StoreHealth
from embedrec.server.errors import ConfigurationError, DeadlineExpired, InvalidArgument, Unavailable, quoted
from embedrec.server.inference.pooling import FloatArray

# Rows are unit vectors (export-items and UpsertItems normalise them); the margin covers rounding.
UNIT_ROW_NORM = 1.001


class MilvusItems:
    """A Milvus collection opened for search (embedrec.server.catalog.store.ItemStore), and its live
    changes (upsert, delete, hide, restore; one at a time per process)."""

    def __init__(
        self,
        uri: str,
        collection: str,
        *,
        token: str = "",
        timeout: float = 10.0,
        effort: SearchEffort = NO_EFFORT,
        health: StoreHealth | None = None,
        live_recall: LiveRecall | None = None,
        exact_check_rows: int = 100_000,
    ) -> None:
        """Connect, read the collection's properties and load it. `effort`: the search effort of
        an approximate index when a request sets none (unset: milvus.index's defaults); `health`
        records every call's outcome (the server's, kept across reloads); `live_recall` samples the
        searches of an approximate index for an exact re-check by a scan of at most
        `exact_check_rows` eligible rows (exact_ids). Raises
        MilvusUnreachableError when Milvus does not answer, ConfigurationError when the
        collection is missing or not embedrec's, or `effort` does not fit its index."""
        self.uri = uri
        self.collection = collection
        self.timeout = timeout
        self.health = health if health is not None else StoreHealth()
        self.client = connect(uri, token, timeout)
        self.location = f"milvus {uri} collection {collection}"
        self.calls = MilvusCalls(self.client, collection, self.location, timeout, self.health)
        self._open_collection()
        self.filter_field = self.info.filter_field
        self.live_recall = live_recall if self.index.approximate else None
        self.exact_check_rows = exact_check_rows
        self._admitted = AdmittedCounts(lambda expression: self.calls.count(expression, None))
        self._segments = SegmentSizes(
            lambda: self.calls.call(functools.partial(segment_sizes, self.client, collection), None)
        )
        self.effort = server_effort(effort, self.index)  # every selection's effort falls back on it
        self._changes = threading.Lock()
        self._field_ranges = FieldRanges()  # a score formula's bound; forgotten on every change
        self._item_count = 0
        self._hidden_count = 0
        # Milvus Lite cannot tell whether its index serves (and needs not: it has no interim one).
        self._tells_readiness = self.index.approximate and is_milvus_server(uri)
        try:
            self.refresh_counts()
            self.check_index()
        except Unavailable as error:
            raise MilvusUnreachableError(str(error)) from None

    def _open_collection(self) -> None:
        """Read the collection's properties (its model, layout and index) and load it."""
        collection, timeout = self.collection, self.timeout
        try:
            if not self.client.has_collection(collection, timeout=timeout):
                raise ConfigurationError(
                    f"{self.location} does not exist; build it with embedrec export-items --store milvus"
                )
            described = self.client.describe_collection(collection, timeout=timeout)
            properties = dict(described.get("properties") or {})
            self.has_texts = any(field.get("name") == TEXT for field in described.get("fields", []))
            self.info = CollectionInfo.from_properties(properties, self.location)
            self.index = VectorIndex.from_properties(properties, self.location)
            if self.info.layout != LAYOUT:
                raise ConfigurationError(
                    f"{self.location} has layout {self.info.layout}; this server reads {LAYOUT}: rebuild it"
                )
            self.client.load_collection(collection, timeout=timeout)
            self.server_version = str(self.client.get_server_version(timeout=timeout))
        except milvus_errors() as error:
            raise MilvusUnreachableError(f"{self.location} unreachable: {error_message(error)}") from None

    # -- ItemStore ------------------------------------------------------------------------------

    def describe(self) -> StoreDescription:
        """The collection's identity (from its properties) and its counts as last refreshed."""
        info = self.info
        return StoreDescription(
            kind="milvus",
            location=self.location,
            item_count=self._item_count,
            items_sha256=info.items_sha256,
            model_onnx_sha256=info.model_onnx_sha256,
            model_name=info.model_name,
            dim=info.dim,
            filter_field=info.filter_field,
            prompt_name=info.prompt_name,
            prompt=info.prompt,
            hidden_count=self._hidden_count,
            fields=dict(info.fields),
            engine_version=f"milvus {self.server_version}",
            store_error=self.health.describe_error(),
            index_loading=self.health.describe_index_loading(),
            live_recall=self.live_recall.estimate() if self.live_recall is not None else None,
            index=self._index_description(),
            approximate=self.index.approximate,
        )

    def _index_description(self) -> str:
        if self.index.kind == "HNSW":
            return f"{self.index.describe()}, ef {self.effort.ef} (approximate)"
        if self.index.kind == "IVF_FLAT":
            return f"{self.index.describe()}, nprobe {self.effort.nprobe} (approximate)"
        return f"{self.index.describe()} (exact)"

    def refresh_counts(self, deadline: float | None = None) -> None:
        """Re-count the items and the hidden ones (Info reports the counts of the last refresh:
        at open, after this server's changes, and on ReloadItems)."""
        self._item_count = self.calls.count("", deadline)
        self._hidden_count = self.calls.count(f"{HIDDEN} == true", deadline)

    def history(
        self, item_ids: Sequence[str], *, field: str, ignore_unknown: bool, deadline: float | None = None
    ) -> History:
        """The vectors of `item_ids` (ItemStore.history); the handle is the known ids."""
        check_distinct(item_ids, field)
        found = self.calls.rows(item_ids, [VECTOR], deadline)
        unknown = [position for position, item_id in enumerate(item_ids) if item_id not in found]
        if unknown and not ignore_unknown:
            raise unknown_ids_error(field, [item_ids[position] for position in unknown])
        known = [item_id for item_id in item_ids if item_id in found]
        vectors = (
            np.asarray([found[item_id][VECTOR] for item_id in known], dtype=np.float32)
            if known
            else np.zeros((0, self.info.dim), dtype=np.float32)
        )
        return History(vectors, unknown, known)

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
    ) -> MilvusSelection:
        """The filter expression of one query and its search effort (ItemStore.selection)."""
        effort = check_effort(effort, self.index, field=effort_field).or_else(self.effort)
        parts = [f"{HIDDEN} == false"]
        restrictions: list[str] = []
        history_ids = history.handle if isinstance(history.handle, list) else []
        excluded = list(dict.fromkeys([*exclude_ids, *history_ids]))
        if excluded:
            parts.append(f"{ID} not in {literal(excluded)}")
        if filter_values:
            if not self.filter_field:
                raise InvalidArgument(
                    f"{field} given, but the served items have no filter field "
                    "(build them with embedrec export-items --filter-field NAME)",
                    field=field,
                )
            restrictions.append(
                f"ARRAY_CONTAINS_ANY({milvus_field(self.filter_field)}, {literal(list(filter_values))})"
            )
        for condition in check_conditions(conditions, self.info.fields, field=conditions_field):
            restrictions.extend(condition_expressions(condition))
        return MilvusSelection(" and ".join(parts + restrictions), effort, " and ".join(restrictions))

    def check_categorical(self, name: str, *, field: str) -> None:
        """InvalidArgument naming `field` unless `name` is a categorical field of the items."""
        if self.info.fields.get(name) != "categorical":
            known = ", ".join(sorted(key for key, kind in self.info.fields.items() if kind == "categorical"))
            raise InvalidArgument(
                f"{field}: {quoted(name)} is not a categorical field of the items (they have: {known or 'none'})",
                field=field,
            )

    def unmatched_values(
        self, filter_values: Sequence[str], conditions: Sequence[ConditionSpec], *, field: str, conditions_field: str
    ) -> list[str]:
        """None: telling would cost Milvus a query per value (ItemStore.unmatched_values)."""
        return []

    def field_values(self, chosen: Sequence[Recommendation], name: str) -> list[Sequence[Hashable]]:
        """The values of the categorical field `name` of each of `chosen` (one query)."""
        column = milvus_field(name)
        found = self.calls.rows([one.item_id for one in chosen], [column], None)
        return [tuple(found.get(one.item_id, {}).get(column) or ()) for one in chosen]

    def search(self, queries: Sequence[Query], k: int, *, threads: int = 0) -> list[list[Recommendation]]:
        """The k best items of each query (ItemStore.search): queries with the same selection and
        no scorer share one Milvus search."""
        found: list[list[Recommendation]] = [[] for _ in queries]
        groups: dict[MilvusSelection, list[int]] = {}
        for position, query in enumerate(queries):
            if query.formula is not None:
                found[position] = formula_search(self, self._field_ranges, query, k, exact_scores_for)
            elif query.scorer is not None:
                found[position] = best_score(self, query, k)
            else:
                groups.setdefault(selection_of(query), []).append(position)
        for selection, positions in groups.items():
            deadlines = [deadline for p in positions if (deadline := queries[p].deadline) is not None]
            ranked = self._ranked(
                np.stack([queries[p].profile for p in positions]).astype(np.float32),
                selection,
                k,
                min(deadlines) if deadlines else None,
            )
            for position, recommendations in zip(positions, ranked, strict=True):
                if self.live_recall is not None:
                    ids = [one.item_id for one in recommendations]
                    self.live_recall.offer(self._exact_check, queries[position].profile, selection, k, ids)
                floor = queries[position].min_score
                if floor is not None:
                    recommendations = [one for one in recommendations if np.float32(one.score) >= np.float32(floor)]
                found[position] = recommendations
        return found

    def vectors_of(self, chosen: Sequence[Recommendation]) -> FloatArray:
        """The vectors the search returned with `chosen`."""
        return stored_vectors(chosen, self.info.dim)

    def prepare_formula(self, formula: ScoreFormula, *, field: str) -> None:
        """Nothing ahead: the formula's bound is computed by its searches (milvus.formula)."""

    def numeric_values(self, chosen: Sequence[Recommendation], name: str) -> Float64Array:
        """The values of the numeric field `name` of `chosen` (NaN: none; one query)."""
        return numeric_values(self, chosen, [name], None)[name]

    def texts_of(self, chosen: Sequence[Recommendation], deadline: float | None = None) -> list[str] | None:
        """The stored texts of `chosen` (None for a collection built before texts were stored)."""
        if not self.has_texts:
            return None
        found = self.calls.rows([one.item_id for one in chosen], [TEXT], deadline)
        return [str(found.get(one.item_id, {}).get(TEXT) or "") for one in chosen]

    def hide(self, item_ids: Sequence[str]) -> VisibilityResult:
        """Set the hidden flag of the known `item_ids` (upserting their rows)."""
        return self._set_hidden(item_ids, True)

    def restore(self, item_ids: Sequence[str]) -> VisibilityResult:
        """Clear the hidden flag of the known `item_ids`."""
        return self._set_hidden(item_ids, False)

    def hidden_ids(self) -> Sequence[str]:
        """Every hidden id, sorted."""
        return sorted(row[ID] for row in self.calls.scan(f"{HIDDEN} == true", [ID], None))

    def live(self) -> MilvusItems:
        """This collection: it takes upserts and deletes while serving."""
        return self

    # -- availability ---------------------------------------------------------------------------

    def probe(self, timeout: float) -> bool:
        """Whether Milvus answers a count of the collection within `timeout`, recorded in
        `health` (a call's own deadline passing is not the store's failure; the probe's is)."""
        try:
            self.calls.count("", time.monotonic() + timeout)
            self.check_index(time.monotonic() + timeout)
            return True
        except Unavailable:
            return False
        except DeadlineExpired:
            self.health.failed(f"no answer within {timeout:g} s")
            return False

    def check_index(self, deadline: float | None = None) -> None:
        """Record in `health` whether Milvus searches the built index for every row yet
        (milvus.readiness; at open, and on every background probe). Raises Unavailable."""
        if not self._tells_readiness:
            self.health.index_loading("")
            return
        readiness = self.calls.call(lambda timeout: index_readiness(self.client, self.collection, timeout), deadline)
        if readiness is None:
            self._tells_readiness = False
        self.health.index_loading(readiness.describe() if readiness is not None else "")

    def close_when_idle(self, timeout: float) -> None:
        """Close the Milvus client once the calls running now are done (at most `timeout`
        seconds): a reloaded store's old client. pymilvus shares one connection per address
        among its clients, so the new store's connection stays open. Its live recall thread
        ends first (the new store samples with its own)."""
        if self.live_recall is not None:
            self.live_recall.close(timeout)
        self.calls.close_when_idle(timeout)

    # -- live changes ---------------------------------------------------------------------------

    def upsert(self, rows: Sequence[ItemRow], deadline: float | None = None) -> UpsertResult:
        """Insert or replace `rows` (vectors already unit length, fields of the collection's).
        A replaced item keeps its position and hidden flag; new items go to the end of the
        catalog order."""
        with self._changes:
            existing = self.calls.rows([row.item_id for row in rows], [POSITION, HIDDEN], deadline)
            next_position = self.info.next_position
            records = []
            for row in rows:
                previous = existing.get(row.item_id)
                if previous is None:
                    position, hidden = next_position, False
                    next_position += 1
                else:
                    position, hidden = int(previous[POSITION]), bool(previous[HIDDEN])
                record = entity(row, position, hidden, self.info.fields)
                if not self.has_texts:  # a collection built before texts were stored
                    del record[TEXT]
                records.append(record)
            if next_position != self.info.next_position:
                self._set_next_position(next_position, deadline)
            for start in range(0, len(records), ID_BATCH):
                batch = records[start : start + ID_BATCH]
                self.calls.call(functools.partial(self.client.upsert, self.collection, batch), deadline)
            self.calls.flush(deadline)
            self._segments.invalidate()  # the rows' new segment: small, unindexed
            self._field_ranges.invalidate()  # new values may widen a field's range
            self.refresh_counts(deadline)
            return UpsertResult(len(rows) - len(existing), len(existing), self._item_count)

    def delete(self, item_ids: Sequence[str], deadline: float | None = None) -> DeleteResult:
        """Remove `item_ids`; unknown ids are reported, not an error."""
        with self._changes:
            existing = self.calls.rows(item_ids, [ID], deadline)
            known = [item_id for item_id in dict.fromkeys(item_ids) if item_id in existing]
            for start in range(0, len(known), ID_BATCH):
                batch = known[start : start + ID_BATCH]
                self.calls.call(functools.partial(self.client.delete, self.collection, ids=batch), deadline)
            if known:
                self.calls.flush(deadline)
            self.refresh_counts(deadline)
            unknown = [item_id for item_id in item_ids if item_id not in existing]
            return DeleteResult(len(known), unknown, self._item_count)

    # -- Milvus calls ---------------------------------------------------------------------------

    def _ranked(
        self, profiles: FloatArray, selection: MilvusSelection, wanted: int, deadline: float | None
    ) -> list[list[Recommendation]]:
        """Each profile's `wanted` best items by their exact score (embedrec.server.catalog.mmap.scan,
        recomputed from the vectors Milvus returns), ordered by (score desc, position, id):
        fetched past `wanted` until the last fetched item cannot beat the wanted-th (or all were
        fetched). An approximate index that returns fewer than `wanted` (IVF_FLAT's probed
        clusters or HNSW's filtered walk held too few eligible items) is searched again with 4x
        the effort, up to its maximum (IVF_FLAT: every cluster, exact)."""
        limit = min(wanted + TIE_MARGIN, MAX_TOPK)
        plan = self._filter_plan(selection)
        if plan.exact:
            return scored_here(self, profiles, selection.expression, wanted, deadline)
        selection = planned_effort(selection, plan)
        # Milvus's float32 scores differ from the exact score (rescored here, the memory-mapped
        # store's) by at most this: an item not fetched could still beat the wanted-th by 2x it.
        slack = 2 * float32_error_bound(profiles, UNIT_ROW_NORM)
        while True:
            results, deeper, short = [], False, False
            search = functools.partial(self._ranked_raw, profiles, limit=limit, deadline=deadline)
            for index, raw in enumerate(searched_in_parts(search, selection, POSITION, plan.parts, limit)):
                short |= len(raw) < wanted
                ranked = rescored(raw, functools.partial(exact_scores_for, profiles[index]), None)
                cut_ties = (
                    len(ranked) == limit
                    and len(ranked) > wanted
                    and ranked[-1].score >= ranked[wanted - 1].score - slack[index]
                )
                deeper |= cut_ties and limit < MAX_TOPK
                results.append(ranked[:wanted])
            harder = harder_effort(selection.effort, self.index) if short else None
            if harder is not None:
                selection = MilvusSelection(selection.expression, harder)
                continue
            if not deeper:
                return results
            limit = min(4 * limit, MAX_TOPK)

    def _filter_plan(self, selection: MilvusSelection) -> FilterPlan:
        """How a search with `selection` runs on an approximate index (milvus.filtered: slices and
        ef on HNSW only); unplanned on FLAT or without a restriction."""
        if not self.index.approximate or not selection.restriction:
            return UNPLANNED
        admitted = self._admitted.admitted(f"{HIDDEN} == false and {selection.restriction}")
        plan = plan_for(admitted, self._item_count - self._hidden_count, self._segments.layout())
        return plan if plan.exact or self.index.kind == "HNSW" else UNPLANNED

    def exact_ids(self, profile: FloatArray, selection: MilvusSelection, k: int) -> list[str] | None:
        """The exact top-k ids of `profile` among the rows `selection` admits, ordered as a search
        orders them, by a scan of those rows; None when they are more than `exact_check_rows`."""
        if self.calls.count(selection.expression, None) > self.exact_check_rows:
            return None
        every = every_row(self, selection.expression, None)
        return [one.item_id for one in rescored(every, functools.partial(exact_scores_for, profile), None)[:k]]

    def _exact_check(self, profile: object, selection: object, k: int) -> list[str] | None:
        assert isinstance(selection, MilvusSelection)
        return self.exact_ids(np.asarray(profile, dtype=np.float32), selection, k)

    def _ranked_raw(
        self, profiles: FloatArray, selection: MilvusSelection, *, limit: int, deadline: float | None
    ) -> list[list[Recommendation]]:
        hits = self.calls.call(
            lambda timeout: self.client.search(
                self.collection,
                data=np.asarray(profiles, dtype=np.float32).tolist(),
                filter=selection.expression,
                limit=limit,
                anns_field=VECTOR,
                output_fields=[POSITION, VECTOR],
                search_params=search_params(self.index, selection.effort, limit),
                timeout=timeout,
            ),
            deadline,
        )
        return [sorted_hits(one) for one in hits]

    def _set_hidden(self, item_ids: Sequence[str], hidden: bool) -> VisibilityResult:
        with self._changes:
            fields = [POSITION, HIDDEN, VECTOR, CONTENT_HASH, *(milvus_field(name) for name in self.info.fields)]
            fields += [TEXT] if self.has_texts else []
            existing = self.calls.rows(item_ids, fields, None)
            changing = [row for item_id, row in existing.items() if bool(row[HIDDEN]) != hidden]
            for row in changing:
                row[HIDDEN] = hidden
                row[VECTOR] = np.asarray(row[VECTOR], dtype=np.float32).tolist()
            for start in range(0, len(changing), ID_BATCH):
                batch = changing[start : start + ID_BATCH]
                self.calls.call(functools.partial(self.client.upsert, self.collection, batch), None)
            if changing:
                self.calls.flush(None)
                self._segments.invalidate()
            self.refresh_counts()
            unknown = [item_id for item_id in item_ids if item_id not in existing]
            return VisibilityResult(len(changing), unknown, self._hidden_count)

    def _set_next_position(self, next_position: int, deadline: float | None) -> None:
        key = PROPERTY_PREFIX + "next_position"
        self.calls.call(
            lambda timeout: alter_properties(self.client, self.collection, {key: str(next_position)}, timeout),
            deadline,
        )
        self.info = CollectionInfo.from_properties({**self.info.properties(), key: str(next_position)}, self.location)
