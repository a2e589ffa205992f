"""The served catalog: a read-only memory-mapped item matrix, its ids and optional filter field.

Nothing grows with the catalog in private memory: the matrix, the id index and the filter codes
are memory maps (`np.load(..., mmap_mode="r")`), so the page cache holds them once, shared by
every process that maps them, and opening a million-item directory takes as long as a small one.
"""

from __future__ import annotations

import json
import logging
import mmap
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embedrec.results import VisibilityResult
from embedrec.server.catalog.exact import exact_scores_of
from embedrec.server.catalog.fields import (
    CategoricalColumn,
    Column,
    ConditionSpec,
    NumericColumn,
    compile_conditions,
    load_columns,
    unmatched_warnings,
)
from embedrec.server.catalog.mmap.codes import codes_for
from embedrec.server.catalog.mmap.hidden import HiddenItems
from embedrec.server.catalog.mmap.item_ids import ItemIds
from embedrec.server.catalog.mmap.item_texts import ItemTexts
from embedrec.server.catalog.mmap.scan import PackedCodes, ScanKind, ScanStats, exact_top_k
from embedrec.server.catalog.mmap.topk import CodeArray, FloatArray, IndexArray, RowFilter, top_k
from embedrec.server.catalog.score_formula import Float64Array, PriorCache, ScoreFormula
from embedrec.server.catalog.store import (
    NO_EFFORT,
    History,
    Query,
    Recommendation,
    SearchEffort,
    StoreDescription,
    check_distinct,
    refuse_effort,
    unknown_ids_error,
)
from embedrec.server.errors import ConfigurationError, InvalidArgument, quoted
from embedrec.server.manifest import (
    ITEMS_FILTER_CODES,
    ITEMS_FILTER_VALUES,
    ITEMS_LAYOUT,
    ITEMS_MATRIX,
    ItemsManifest,
    read_items_manifest,
)

# A query whose filter lets fewer than this fraction of the items through (estimated on
# PREFILTER_SAMPLE_ROWS rows) scores only its eligible rows instead of scanning the matrix.
PREFILTER_FRACTION = 0.02
PREFILTER_SAMPLE_ROWS = 4096
PREFILTER_CHUNK_ROWS = 1 << 18
NORM_CHUNK_ROWS = 1 << 16

logger = logging.getLogger(__name__)


class ItemIndex:
    """An item matrix directory (written by `embedrec export-items`) opened for search: the
    memory-mapped item store (embedrec.server.catalog.store.ItemStore). Searches are exact
    whichever `scan` (embedrec.server.catalog.mmap.scan): "int8" reads the codes first and rescores
    the few rows that may enter the top k, "float32" reads the whole matrix."""

    def __init__(self, items_dir: Path, *, scan: ScanKind = "int8", stats: ScanStats | None = None) -> None:
        """Map `items_dir`'s matrix, ids and filter codes read-only and read its manifest; for the
        int8 scan, read (or, for a directory built without them, build) its codes and pack them.
        `stats` counts the scans (a fresh ScanStats by default).

        Raises ConfigurationError when files are missing, of an older layout, or disagree with
        the manifest or the matrix (the code file included, named in the message).
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
        self.texts = ItemTexts.open(items_dir, self.manifest.item_count)
        self.filter_field = self.manifest.filter_field
        self._filter_codes: CodeArray | None = None
        self._code_of: dict[str, int] = {}
        self._sample: IndexArray | None = None  # rows on which a filter's selectivity is estimated
        self.columns: dict[str, Column] = load_columns(items_dir, self.manifest.fields, self.manifest.item_count)
        if self.filter_field:
            self._load_filter(items_dir)
        self.priors = PriorCache(self._numeric_column)
        self.scan: ScanKind = scan
        self.stats = stats if stats is not None else ScanStats()
        self.packed: PackedCodes | None = None
        if scan == "int8":
            codes = codes_for(items_dir, self.matrix, self.manifest.items_sha256, logger)
            try:
                self.packed = PackedCodes(codes)
            except ImportError:
                raise ConfigurationError(
                    "the int8 scan needs the numkong package (pip install 'embedrec[server]'); "
                    "or serve with --scan float32"
                ) from None
            self.row_norm = codes.book.row_norm
            _read_randomly(self.matrix)  # only rescored rows are read: no read-ahead around them
        else:
            self.row_norm = _largest_row_norm(self.matrix)

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

    def describe(self) -> StoreDescription:
        """The directory's manifest, size, hidden count and fields."""
        manifest = self.manifest
        return StoreDescription(
            kind="mmap",
            location=str(self.directory),
            item_count=manifest.item_count,
            items_sha256=manifest.items_sha256,
            model_onnx_sha256=manifest.model_onnx_sha256,
            model_name=manifest.model_name,
            dim=manifest.dim,
            filter_field=self.filter_field,
            prompt_name=manifest.prompt_name,
            prompt=manifest.prompt,
            hidden_count=len(self.hidden.snapshot),
            fields={name: column.kind for name, column in self.columns.items()},
            scan=self.scan,
            code_bytes=self.packed.nbytes if self.packed is not None else 0,
        )

    def history(
        self, item_ids: Sequence[str], *, field: str, ignore_unknown: bool, deadline: float | None = None
    ) -> History:
        """The vectors of `item_ids` (see ItemStore.history; local, so no deadline); the handle is
        their rows."""
        if ignore_unknown:
            rows, unknown = self.known_rows_and_unknown_ids(item_ids, field=field)
        else:
            rows, unknown = self.rows_of(item_ids, field=field), []
        return History(self.vectors(rows), unknown, rows)

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
    ) -> RowFilter:
        """The RowFilter of one query (see ItemStore.selection); an effort is refused: the
        matrix is always searched exactly."""
        refuse_effort(effort, field=effort_field, reason="the memory-mapped matrix")
        history_rows = np.asarray(history.handle if history.handle is not None else (), dtype=np.int64)
        excluded = np.concatenate([self.known_rows(exclude_ids), history_rows])
        return self.row_filter(
            excluded, filter_values, field=field, conditions=conditions, conditions_field=conditions_field
        )

    def check_categorical(self, name: str, *, field: str) -> None:
        """InvalidArgument naming `field` unless `name` is a categorical field."""
        self.categorical(name, field=field)

    def unmatched_values(
        self, filter_values: Sequence[str], conditions: Sequence[ConditionSpec], *, field: str, conditions_field: str
    ) -> list[str]:
        """Warnings for values no item has (see ItemStore.unmatched_values): dictionary look-ups only."""
        warnings = unmatched_warnings(field, self.filter_field or "", filter_values, self._code_of)
        for index, condition in enumerate(conditions):
            column = self.columns.get(condition.field)
            if isinstance(column, CategoricalColumn):
                for name in ("any_of", "none_of"):
                    path = f"{conditions_field}[{index}].{name}"
                    warnings += unmatched_warnings(path, condition.field, getattr(condition, name), column.code_of)
        return warnings

    def field_values(self, chosen: Sequence[Recommendation], name: str) -> list[Sequence[Hashable]]:
        """The value codes of the categorical field `name` of each of `chosen`."""
        column = self.categorical(name, field="field")
        return [column.value_codes(one.row).tolist() for one in chosen]

    def vectors_of(self, chosen: Sequence[Recommendation]) -> FloatArray:
        """The matrix rows of `chosen`."""
        return self.vectors(np.asarray([one.row for one in chosen], dtype=np.int64))

    def texts_of(self, chosen: Sequence[Recommendation], deadline: float | None = None) -> list[str] | None:
        """The catalog texts of `chosen` (None for a directory built without texts)."""
        return self.texts.texts_at([one.row for one in chosen]) if self.texts is not None else None

    def prepare_formula(self, formula: ScoreFormula, *, field: str) -> None:
        """Compute (or find cached) the formula's prior part of every item; InvalidArgument
        naming `field` when it is not finite for some item."""
        self.priors.prior(formula, field=field)

    def numeric_values(self, chosen: Sequence[Recommendation], name: str) -> Float64Array:
        """The values of the numeric field `name` of `chosen` (NaN: none)."""
        return np.asarray(self._numeric_column(name)[[one.row for one in chosen]], dtype=np.float64)

    def _numeric_column(self, name: str) -> Float64Array:
        column = self.columns.get(name)
        if not isinstance(column, NumericColumn):
            raise InvalidArgument(f"{quoted(name)} is not a numeric field of the items")
        values: Float64Array = column.values
        return values

    def hide(self, item_ids: Sequence[str]) -> VisibilityResult:
        """Hide `item_ids` (see HiddenItems.hide)."""
        return self.hidden.hide(item_ids)

    def restore(self, item_ids: Sequence[str]) -> VisibilityResult:
        """Restore `item_ids` (see HiddenItems.restore)."""
        return self.hidden.restore(item_ids)

    def hidden_ids(self) -> Sequence[str]:
        """The hidden ids, sorted."""
        return self.hidden.snapshot.ids

    def live(self) -> None:
        """None: a memory-mapped build is read-only (rebuilt with export-items, then reloaded)."""
        return None

    def rows_of(self, item_ids: Sequence[str], *, field: str) -> IndexArray:
        """Row numbers of `item_ids`; raises NotFound naming `field` and the unknown ids, and
        InvalidArgument when an id is given twice."""
        check_distinct(item_ids, field)
        rows = self.ids.find(item_ids)
        unknown = [item_id for item_id, row in zip(item_ids, rows.tolist(), strict=True) if row < 0]
        if unknown:
            raise unknown_ids_error(field, unknown)
        return rows

    def known_rows_and_unknown_ids(self, item_ids: Sequence[str], *, field: str) -> tuple[IndexArray, list[int]]:
        """Like `rows_of`, but unknown ids are skipped: (rows of the known ids, in order; the
        positions in `item_ids` of the unknown ones)."""
        check_distinct(item_ids, field)
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
                "(build them with embedrec export-items --filter-field NAME)",
                field=field,
            )
        allowed = np.asarray([self._code_of[value] for value in filter_values if value in self._code_of], np.int32)
        return RowFilter(excluded_rows, self._filter_codes, allowed, blocked, compiled)

    def categorical(self, name: str, *, field: str) -> CategoricalColumn:
        """The categorical column `name`; InvalidArgument naming `field` otherwise."""
        column = self.columns.get(name)
        if not isinstance(column, CategoricalColumn):
            known = ", ".join(sorted(key for key, value in self.columns.items() if value.kind == "categorical"))
            raise InvalidArgument(
                f"{field}: {quoted(name)} is not a categorical field of the items (they have: {known or 'none'})",
                field=field,
            )
        return column

    def search(self, queries: Sequence[Query], k: int, *, threads: int = 0) -> list[list[Recommendation]]:
        """The k best items for each query in one pass over the matrix per score formula (normally
        one: none, or the server's), best first (exact; equal scores in catalog order); `threads`
        as in top_k."""
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        found: list[tuple[IndexArray, npt.NDArray[np.floating]]] = [empty] * len(queries)
        filters = [_row_filter_of(query) for query in queries]
        priors = [None if query.formula is None else self.priors.prior(query.formula) for query in queries]
        passes: dict[ScoreFormula | None, list[int]] = {}
        for position, query in enumerate(queries):
            eligible = self._selective_rows(filters[position])
            if eligible is not None:  # few eligible rows: score only those
                found[position] = self._top_k_of_rows(query, eligible, k, priors[position])
            elif query.scorer is not None:  # its own pass: a scorer is one query's
                (found[position],) = top_k(
                    self.matrix,
                    query.profile[None, :],
                    k,
                    filters=filters[position],
                    threads=threads,
                    min_scores=[query.min_score],
                    scorer=_as_column(query.scorer),
                    prior=priors[position],
                )
            else:
                passes.setdefault(query.formula, []).append(position)
        for positions in passes.values():
            profiles = np.stack([queries[p].profile for p in positions]).astype(np.float32, copy=False)
            results = exact_top_k(
                self.matrix,
                profiles,
                k,
                scan=self.scan,
                row_norm=self.row_norm,
                packed=self.packed,
                filters=[filters[p] for p in positions],
                min_scores=[queries[p].min_score for p in positions],
                threads=threads,
                stats=self.stats,
                prior=priors[positions[0]],
            )
            for position, result in zip(positions, results, strict=True):
                found[position] = result
        return [self._recommendations(query, *one) for query, one in zip(queries, found, strict=True)]

    def _recommendations(
        self, query: Query, rows: IndexArray, scores: npt.NDArray[np.floating]
    ) -> list[Recommendation]:
        """The found rows as Recommendations; under a formula with their similarity part (the
        same exact score the ranking summed: it depends only on the row and the query)."""
        ids = self.ids.ids_at(rows)
        if query.formula is None:
            return [Recommendation(i, float(score), int(row)) for i, row, score in zip(ids, rows, scores, strict=True)]
        similarities = self._similarities(query, rows)
        return [
            Recommendation(i, float(score), int(row), similarity=float(similarity))
            for i, row, score, similarity in zip(ids, rows, scores, similarities, strict=True)
        ]

    def _similarities(self, query: Query, rows: IndexArray) -> FloatArray:
        """The exact similarity of `rows` for `query` (its scorer's, or the scans' exact score)."""
        if query.scorer is not None:
            return query.scorer(np.asarray(self.matrix[rows], dtype=np.float32)).astype(np.float32)
        return exact_scores_of(self.matrix, rows, query.profile)

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

    def _top_k_of_rows(
        self, query: Query, rows: IndexArray, k: int, prior: Float64Array | None
    ) -> tuple[IndexArray, npt.NDArray[np.floating]]:
        """Exact top-k of `query` among `rows` (ascending): scores of those rows only (under a
        formula, float64(similarity) + `prior`), best first, equal scores by row, at least its
        min_score."""
        # The scans' exact score, so the answer does not depend on the path.
        scores: npt.NDArray[np.floating] = self._similarities(query, rows)
        if prior is not None:
            scores = scores.astype(np.float64) + prior[rows]
        if query.min_score is not None:
            passing = scores >= scores.dtype.type(query.min_score)
            rows, scores = rows[passing], scores[passing]
        order = np.lexsort((rows, -scores))[:k]
        return rows[order], scores[order]


def _read_randomly(matrix: npt.NDArray[np.floating]) -> None:
    """Tell the kernel that `matrix`'s memory map is read at random (no read-ahead)."""
    mapping = getattr(matrix, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_RANDOM)


def _largest_row_norm(matrix: npt.NDArray[np.floating]) -> float:
    """The largest row norm of `matrix` (the float32 scan's error bound needs it), rounded up."""
    largest = 0.0
    for start in range(0, matrix.shape[0], NORM_CHUNK_ROWS):
        block = np.asarray(matrix[start : start + NORM_CHUNK_ROWS], dtype=np.float64)
        largest = max(largest, float(np.sqrt(np.einsum("ij,ij->i", block, block).max(initial=0.0))))
    return largest * (1.0 + 1e-9)


def _row_filter_of(query: Query) -> RowFilter:
    if not isinstance(query.row_filter, RowFilter):
        raise TypeError(f"a query on the memory-mapped store needs a RowFilter, got {type(query.row_filter).__name__}")
    return query.row_filter


def _as_column(scorer: Callable[[FloatArray], FloatArray]) -> Callable[[npt.NDArray[np.floating]], FloatArray]:
    """`scorer`'s (rows,) scores as the (rows, 1) block top_k expects."""

    def column(block: npt.NDArray[np.floating]) -> FloatArray:
        scores: FloatArray = scorer(np.asarray(block, dtype=np.float32))[:, None]
        return scores

    return column
