"""Catalog fields stored beside the item matrix, and the conditions Recommend filters with.

Each field chosen at build (`export-items --field NAME`, `--numeric-field NAME`) is a memory-mapped
column in the item directory's `fields/`:

- categorical: every item has zero or more string values (a JSON list gives several), stored as
  `NAME.offsets.npy` (int64, n+1) and `NAME.codes.npy` (int32 codes, item i's values are
  codes[offsets[i]:offsets[i+1]]) with `NAME.values.json` (code -> value);
- numeric: `NAME.npy`, float64, NaN where the item has no value.

A request's conditions are ANDed; each tests only the candidate rows a search hands it (the rows
that passed the score threshold), so filtering never costs a second scan and stays exact: k
items come back whenever k eligible items exist.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from embedrec.server.errors import ConfigurationError, InvalidArgument, quoted

FIELDS_DIR = "fields"
FieldKind = Literal["categorical", "numeric"]
Rows = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


class CategoricalColumn:
    """Zero or more string values per item."""

    kind: FieldKind = "categorical"

    def __init__(self, offsets: Rows, codes: npt.NDArray[np.int32], values: list[str]) -> None:
        self.offsets = offsets
        self.codes = codes
        self.values = values
        self.code_of = {value: code for code, value in enumerate(values)}

    @classmethod
    def single_valued(cls, codes: npt.NDArray[np.int32], values: list[str]) -> CategoricalColumn:
        """A column with exactly one value per item (the legacy filter field); code -1 or an
        empty value means none."""
        offsets = np.arange(codes.shape[0] + 1, dtype=np.int64)
        return cls(offsets, codes, values)

    def codes_of(self, values: Sequence[str]) -> npt.NDArray[np.int32]:
        """The codes of the values this column has (others match nothing)."""
        return np.asarray([self.code_of[value] for value in values if value in self.code_of], dtype=np.int32)

    def has_any(self, rows: Rows, codes: npt.NDArray[np.int32]) -> Mask:
        """For each of `rows`, whether it has at least one of `codes`."""
        starts, stops = self.offsets[rows], self.offsets[rows + 1]
        lengths = stops - starts
        total = int(lengths.sum())
        found = np.zeros(rows.shape, dtype=np.bool_)
        if total == 0 or codes.size == 0:
            return found
        owner = np.repeat(np.arange(rows.size), lengths)
        within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        hits = np.isin(self.codes[np.repeat(starts, lengths) + within], codes)
        found[owner[hits]] = True
        return found

    def value_codes(self, row: int) -> npt.NDArray[np.int32]:
        """The codes of one row's values."""
        codes: npt.NDArray[np.int32] = np.asarray(self.codes[self.offsets[row] : self.offsets[row + 1]])
        return codes


class NumericColumn:
    """One float value per item, NaN when it has none."""

    kind: FieldKind = "numeric"

    def __init__(self, values: npt.NDArray[np.float64]) -> None:
        self.values = values


Column = CategoricalColumn | NumericColumn


@dataclass(frozen=True)
class ConditionSpec:
    """One condition as requested (see Condition in the proto)."""

    field: str
    any_of: Sequence[str] = ()
    none_of: Sequence[str] = ()
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None


@dataclass(frozen=True)
class CheckedCondition:
    """A condition that passed validation against the catalog's field kinds: a categorical one
    has any_of and/or none_of values, a numeric one a non-empty range [low, high] whose ends
    may be open. What every item store turns into its own filter."""

    field: str
    kind: FieldKind
    any_of: tuple[str, ...] | None = None
    none_of: tuple[str, ...] | None = None
    low: float = -math.inf
    low_inclusive: bool = True
    high: float = math.inf
    high_inclusive: bool = True


@dataclass(frozen=True)
class CompiledCondition:
    """A condition bound to its column: `keep(rows)` says which rows satisfy it."""

    column: Column
    any_codes: npt.NDArray[np.int32] | None = None
    none_codes: npt.NDArray[np.int32] | None = None
    low: float = -math.inf
    low_inclusive: bool = True
    high: float = math.inf
    high_inclusive: bool = True

    def keep(self, rows: Rows) -> Mask:
        """True for each of `rows` that satisfies the condition."""
        column = self.column
        if isinstance(column, NumericColumn):
            values = np.asarray(column.values[rows])
            keep = (values >= self.low) if self.low_inclusive else (values > self.low)
            keep &= (values <= self.high) if self.high_inclusive else (values < self.high)
            return keep  # NaN (no value) compares False: never matches a range
        keep = np.ones(rows.shape, dtype=np.bool_)
        if self.any_codes is not None:
            keep &= column.has_any(rows, self.any_codes)
        if self.none_codes is not None and self.none_codes.size:
            keep &= ~column.has_any(rows, self.none_codes)
        return keep


def check_conditions(
    specs: Sequence[ConditionSpec], kinds: Mapping[str, FieldKind], *, field: str
) -> list[CheckedCondition]:
    """Validate every condition against the catalog's fields (name -> kind); InvalidArgument
    naming `field`[i] for an unknown field, a condition of the wrong kind for its field, or an
    empty one."""
    checked = []
    for index, spec in enumerate(specs):
        name = f"{field}[{index}]"
        kind = kinds.get(spec.field)
        if kind is None:
            known = ", ".join(f"{key} ({value})" for key, value in sorted(kinds.items())) or "none"
            raise InvalidArgument(
                f"{name}: the items have no field {quoted(spec.field)} (they have: {known})", field=name
            )
        bounds = (spec.gte, spec.gt, spec.lte, spec.lt)
        has_range = any(bound is not None for bound in bounds)
        has_values = bool(spec.any_of or spec.none_of)
        if kind == "numeric":
            if has_values:
                raise InvalidArgument(
                    f"{name}: {quoted(spec.field)} is numeric; use gte/gt/lte/lt, not any_of/none_of", field=name
                )
            checked.append(_numeric(name, spec))
        else:
            if has_range:
                raise InvalidArgument(
                    f"{name}: {quoted(spec.field)} is categorical; use any_of/none_of, not a range", field=name
                )
            if not has_values:
                raise InvalidArgument(f"{name}: give any_of or none_of values for {quoted(spec.field)}", field=name)
            checked.append(
                CheckedCondition(
                    spec.field,
                    "categorical",
                    any_of=tuple(spec.any_of) if spec.any_of else None,
                    none_of=tuple(spec.none_of) if spec.none_of else None,
                )
            )
    return checked


def unmatched_warnings(path: str, field_name: str, values: Sequence[str], code_of: Mapping[str, int]) -> list[str]:
    """A warning for each of `values` (requested at `path`) that the categorical field
    `field_name` (its values' codes: `code_of`) does not have, suggesting a value that differs
    only in case or spaces: values are matched exactly."""
    warnings = []
    for value in values:
        if value in code_of:
            continue
        close = next((other for other in _spellings(value) if other in code_of), None)
        hint = f"; did you mean {quoted(close)}?" if close is not None else ""
        warnings.append(
            f"{path}: no item has {quoted(value)} in {quoted(field_name)} (values match exactly, case included){hint}"
        )
    return warnings


def _spellings(value: str) -> tuple[str, ...]:
    stripped = value.strip()
    return (value.lower(), value.upper(), value.title(), value.capitalize(), stripped, stripped.lower())


def compile_conditions(
    specs: Sequence[ConditionSpec], columns: dict[str, Column], *, field: str
) -> list[CompiledCondition]:
    """Bind every condition to its column (validated as in `check_conditions`)."""
    compiled = []
    for condition in check_conditions(specs, {name: column.kind for name, column in columns.items()}, field=field):
        column = columns[condition.field]
        if isinstance(column, NumericColumn):
            compiled.append(
                CompiledCondition(
                    column,
                    low=condition.low,
                    low_inclusive=condition.low_inclusive,
                    high=condition.high,
                    high_inclusive=condition.high_inclusive,
                )
            )
        else:
            compiled.append(
                CompiledCondition(
                    column,
                    any_codes=column.codes_of(condition.any_of) if condition.any_of else None,
                    none_codes=column.codes_of(condition.none_of) if condition.none_of else None,
                )
            )
    return compiled


def _numeric(name: str, spec: ConditionSpec) -> CheckedCondition:
    for label, bound in (("gte", spec.gte), ("gt", spec.gt), ("lte", spec.lte), ("lt", spec.lt)):
        if bound is not None and math.isnan(bound):
            raise InvalidArgument(f"{name}.{label} is NaN", field=f"{name}.{label}")
    if (spec.gte is not None and spec.gt is not None) or (spec.lte is not None and spec.lt is not None):
        raise InvalidArgument(
            f"{name}: give at most one lower bound (gte or gt) and one upper bound (lte or lt)", field=name
        )
    if all(bound is None for bound in (spec.gte, spec.gt, spec.lte, spec.lt)):
        raise InvalidArgument(f"{name}: give a range for {quoted(spec.field)} (gte, gt, lte or lt)", field=name)
    low, low_inclusive = (spec.gte, True) if spec.gte is not None else (spec.gt, False)
    high, high_inclusive = (spec.lte, True) if spec.lte is not None else (spec.lt, False)
    low = -math.inf if low is None else low
    high = math.inf if high is None else high
    if low > high or (low == high and not (low_inclusive and high_inclusive)):
        raise InvalidArgument(f"{name}: the range of {quoted(spec.field)} is empty ({low} to {high})", field=name)
    return CheckedCondition(
        spec.field, "numeric", low=low, low_inclusive=low_inclusive, high=high, high_inclusive=high_inclusive
    )


def load_columns(items_dir: Path, kinds: dict[str, str], count: int) -> dict[str, Column]:
    """Map the columns `kinds` names (name -> "categorical" | "numeric") from `items_dir`/fields.
    Raises ConfigurationError when a file is missing or disagrees with `count`."""
    columns: dict[str, Column] = {}
    for name, kind in kinds.items():
        base = items_dir / FIELDS_DIR / name
        try:
            if kind == "numeric":
                values = np.load(f"{base}.npy", mmap_mode="r")
                if values.shape != (count,):
                    raise ValueError(f"{values.shape[0]} values for {count} items")
                columns[name] = NumericColumn(values)
            else:
                offsets = np.load(f"{base}.offsets.npy", mmap_mode="r")
                codes = np.load(f"{base}.codes.npy", mmap_mode="r")
                labels = json.loads(Path(f"{base}.values.json").read_text(encoding="utf-8"))
                if offsets.shape != (count + 1,) or int(offsets[-1]) != codes.shape[0]:
                    raise ValueError("offsets disagree with the item count or the codes")
                columns[name] = CategoricalColumn(offsets, codes, [str(label) for label in labels])
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"field {name!r} of {items_dir} unreadable: {error}; rebuild the items") from None
    return columns
