"""The served catalog: a read-only memory-mapped item matrix, its ids and optional filter field.

Nothing grows with the catalog in private memory: the matrix, the id index and the filter codes
are memory maps (`np.load(..., mmap_mode="r")`), so the page cache holds them once, shared by
every process that maps them, and opening a million-item directory takes as long as a small one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embedrec.server.errors import ConfigurationError, InvalidArgument, NotFound
from embedrec.server.fields import CategoricalColumn, Column, ConditionSpec, compile_conditions, load_columns
from embedrec.server.hidden import HiddenItems
from embedrec.server.item_ids import ItemIds
from embedrec.server.manifest import (
    ITEMS_FILTER_CODES,
    ITEMS_FILTER_VALUES,
    ITEMS_LAYOUT,
    ITEMS_MATRIX,
    ItemsManifest,
    read_items_manifest,
)
from embedrec.server.profiles import Contribution
from embedrec.server.topk import CodeArray, FloatArray, IndexArray, RowFilter, top_k

# A query whose filter lets fewer than this fraction of the items through (estimated on
# PREFILTER_SAMPLE_ROWS rows) scores only its eligible rows instead of scanning the matrix.
PREFILTER_FRACTION = 0.02
PREFILTER_SAMPLE_ROWS = 4096
PREFILTER_CHUNK_ROWS = 1 << 18


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: its id, its row in the matrix, its cosine score and, when asked
    for, the profile part that contributed most to that score."""

    item_id: str
    score: float
    row: int
    contribution: Contribution | None = None


@dataclass(frozen=True)
class Query:
    """One user's search: a unit profile vector (dim,) and the rows it may return
    (`ItemIndex.row_filter`)."""

    profile: FloatArray
    row_filter: RowFilter
    min_score: float | None = None
    # Scores rows itself instead of profile . row (e.g. best_score): a block (rows, dim) -> (rows,).
    scorer: Callable[[FloatArray], FloatArray] | None = None


class ItemIndex:
    """An item matrix directory (written by `embedrec export-items`) opened for search."""

    def __init__(self, items_dir: Path) -> None:
        """Map `items_dir`'s matrix, ids and filter codes read-only and read its manifest.

        Raises ConfigurationError when files are missing, of an older layout, or disagree with
        the manifest.
        """
        self.directory = items_dir
        self.manifest: ItemsManifest = read_items_manifest(items_dir)
        if self.manifest.layout != ITEMS_LAYOUT:
            raise ConfigurationError(
                f"{items_dir} has item layout {self.manifest.layout}; this server reads {ITEMS_LAYOUT}: "
                "rebuild the items (embedrec export-items --force)"
            )
        try:
            self.matrix: npt.NDArray[np.float32] = np.load(items_dir / ITEMS_MATRIX, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"item matrix in {items_dir} unreadable: {error}") from None
        if self.matrix.dtype != np.float32 or self.manifest.dtype != "float32":
            raise ConfigurationError(
                f"{items_dir}: item matrix has dtype {self.matrix.dtype} (manifest: {self.manifest.dtype}); "
                "this server reads float32: rebuild the items"
            )
        expected = (self.manifest.item_count, self.manifest.dim)
        if self.matrix.shape != expected:
            raise ConfigurationError(
                f"{items_dir}: matrix shape {self.matrix.shape} disagrees with the manifest's {expected}; "
                "rebuild the items"
            )
        self.ids = ItemIds(items_dir, self.manifest.item_count)
        self.hidden = HiddenItems(items_dir, self.ids, self.manifest.item_count)
        self.filter_field = self.manifest.filter_field
        self._filter_codes: CodeArray | None = None
        self._code_of: dict[str, int] = {}
        self._sample: IndexArray | None = None  # rows on which a filter's selectivity is estimated
        self.columns: dict[str, Column] = load_columns(items_dir, self.manifest.fields, self.manifest.item_count)
        if self.filter_field:
            self._load_filter(items_dir)

    def _load_filter(self, items_dir: Path) -> None:
        try:
            codes: CodeArray = np.load(items_dir / ITEMS_FILTER_CODES, mmap_mode="r")
            values = json.loads((items_dir / ITEMS_FILTER_VALUES).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"filter field of {items_dir} unreadable: {error}") from None
        if codes.shape != (self.manifest.item_count,) or not isinstance(values, list):
            raise ConfigurationError(f"filter field of {items_dir} disagrees with the manifest; rebuild the items")
        self._filter_codes = codes
        self._code_of = {str(value): code for code, value in enumerate(values)}
        self.columns.setdefault(self.filter_field, CategoricalColumn.single_valued(codes, [str(v) for v in values]))

    def __len__(self) -> int:
        return self.manifest.item_count

    def rows_of(self, item_ids: Sequence[str], *, field: str) -> IndexArray:
        """Row numbers of `item_ids`; raises NotFound naming `field` and the unknown ids, and
        InvalidArgument when an id is given twice."""
        _check_distinct(item_ids, field)
        rows = self.ids.find(item_ids)
        unknown = [item_id for item_id, row in zip(item_ids, rows.tolist(), strict=True) if row < 0]
        if unknown:
            shown = ", ".join(repr(item_id[:64]) for item_id in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise NotFound(f"{field}: unknown item id(s) {shown}{more}")
        return rows

    def known_rows_and_unknown_ids(self, item_ids: Sequence[str], *, field: str) -> tuple[IndexArray, list[int]]:
        """Like `rows_of`, but unknown ids are skipped: (rows of the known ids, in order; the
        positions in `item_ids` of the unknown ones)."""
        _check_distinct(item_ids, field)
        rows = self.ids.find(item_ids)
        unknown = [position for position, row in enumerate(rows.tolist()) if row < 0]
        return rows[rows >= 0], unknown

    def known_rows(self, item_ids: Sequence[str]) -> IndexArray:
        """Row numbers of the ids in `item_ids` that exist; unknown ids are skipped."""
        rows = self.ids.find(item_ids)
        return rows[rows >= 0]

    def vectors(self, rows: IndexArray) -> FloatArray:
        """The item vectors at `rows`, float32 (len(rows), dim)."""
        return np.asarray(self.matrix[rows], dtype=np.float32)

    def row_filter(
        self,
        excluded_rows: IndexArray,
        filter_values: Sequence[str],
        *,
        field: str,
        conditions: Sequence[ConditionSpec] = (),
        conditions_field: str = "where",
    ) -> RowFilter:
        """The RowFilter for one query; InvalidArgument naming `field` when the catalog has no
        filter field, or naming `conditions_field`[i] for a bad condition. Values the catalog
        does not have match nothing."""
        blocked = self.hidden.snapshot.mask  # this call's snapshot: hides after it do not change it
        compiled = tuple(compile_conditions(conditions, self.columns, field=conditions_field))
        if not filter_values:
            return RowFilter(excluded_rows, blocked=blocked, conditions=compiled)
        if self._filter_codes is None:
            raise InvalidArgument(
                f"{field} given, but the served items have no filter field "
                "(build them with embedrec export-items --filter-field NAME)"
            )
        allowed = np.asarray([self._code_of[value] for value in filter_values if value in self._code_of], np.int32)
        return RowFilter(excluded_rows, self._filter_codes, allowed, blocked, compiled)

    def categorical(self, name: str, *, field: str) -> CategoricalColumn:
        """The categorical column `name`; InvalidArgument naming `field` otherwise."""
        column = self.columns.get(name)
        if not isinstance(column, CategoricalColumn):
            known = ", ".join(sorted(key for key, value in self.columns.items() if value.kind == "categorical"))
            raise InvalidArgument(
                f"{field}: {name!r} is not a categorical field of the items (they have: {known or 'none'})"
            )
        return column

    def search(self, queries: Sequence[Query], k: int, *, threads: int = 0) -> list[list[Recommendation]]:
        """The k best items for each query in one pass over the matrix, best first (exact; equal
        scores in catalog order); `threads` as in top_k."""
        found: list[tuple[IndexArray, FloatArray]] = [(np.zeros(0, np.int64), np.zeros(0, np.float32))] * len(queries)
        selective = set()
        for position, query in enumerate(queries):
            eligible = self._selective_rows(query.row_filter)
            if eligible is not None:  # few eligible rows: score only those
                found[position] = self._top_k_of_rows(query, eligible, k)
                selective.add(position)
        plain = [p for p, query in enumerate(queries) if query.scorer is None and p not in selective]
        if plain:
            profiles = np.stack([queries[p].profile for p in plain]).astype(np.float32, copy=False)
            for position, result in zip(
                plain,
                top_k(
                    self.matrix,
                    profiles,
                    k,
                    filters=[queries[p].row_filter for p in plain],
                    threads=threads,
                    min_scores=[queries[p].min_score for p in plain],
                ),
                strict=True,
            ):
                found[position] = result
        for position, query in enumerate(queries):
            if query.scorer is not None and position not in selective:  # its own pass: a scorer is one query's
                (found[position],) = top_k(
                    self.matrix,
                    query.profile[None, :],
                    k,
                    filters=query.row_filter,
                    threads=threads,
                    min_scores=[query.min_score],
                    scorer=_as_column(query.scorer),
                )
        return [
            [
                Recommendation(item_id, float(score), int(row))
                for item_id, row, score in zip(self.ids.ids_at(rows), rows, scores, strict=True)
            ]
            for rows, scores in found
        ]

    def _selective_rows(self, row_filter: RowFilter) -> IndexArray | None:
        """Every row `row_filter` lets through, when its conditions or filter values let fewer
        than PREFILTER_FRACTION of the items through (estimated on a fixed sample of rows); None
        otherwise (the scan's candidate check is then cheaper than finding them all)."""
        if not row_filter.conditions and row_filter.row_codes is None:
            return None
        if self._sample is None:
            count = len(self)
            picked = np.random.default_rng(0).choice(count, min(count, PREFILTER_SAMPLE_ROWS), replace=False)
            self._sample = np.sort(picked).astype(np.int64)
        if row_filter.keep(self._sample).mean() >= PREFILTER_FRACTION:
            return None
        parts = []
        for start in range(0, len(self), PREFILTER_CHUNK_ROWS):
            rows = np.arange(start, min(start + PREFILTER_CHUNK_ROWS, len(self)), dtype=np.int64)
            parts.append(rows[row_filter.keep(rows)])
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _top_k_of_rows(self, query: Query, rows: IndexArray, k: int) -> tuple[IndexArray, FloatArray]:
        """Exact top-k of `query` among `rows` (ascending): scores of those rows only, best first,
        equal scores by row, at least its min_score."""
        vectors = np.asarray(self.matrix[rows], dtype=np.float32)
        scores: FloatArray = (
            query.scorer(vectors) if query.scorer is not None else vectors @ query.profile.astype(np.float32)
        ).astype(np.float32, copy=False)
        if query.min_score is not None:
            passing = scores >= np.float32(query.min_score)
            rows, scores = rows[passing], scores[passing]
        order = np.lexsort((rows, -scores))[:k]
        return rows[order], scores[order]


def _check_distinct(item_ids: Sequence[str], field: str) -> None:
    seen: set[str] = set()
    for item_id in item_ids:
        if item_id in seen:
            raise InvalidArgument(f"{field} has duplicate id {item_id[:64]!r}; give each item once")
        seen.add(item_id)


def _as_column(scorer: Callable[[FloatArray], FloatArray]) -> Callable[[npt.NDArray[np.floating]], FloatArray]:
    """`scorer`'s (rows,) scores as the (rows, 1) block top_k expects."""

    def column(block: npt.NDArray[np.floating]) -> FloatArray:
        scores: FloatArray = scorer(np.asarray(block, dtype=np.float32))[:, None]
        return scores

    return column
