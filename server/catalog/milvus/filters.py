"""Milvus filter expressions: a query's restrictions (hidden, exclusions, filter values, `where`
conditions) as one expression Milvus evaluates inside its exact search."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from embedrec.server.catalog.fields import CheckedCondition
from embedrec.server.catalog.milvus.schema import milvus_field
from embedrec.server.catalog.store import NO_EFFORT, SearchEffort, Selection


@dataclass(frozen=True)
class MilvusSelection(Selection):
    """What one query may return, as a Milvus filter expression, and how far an approximate
    index's search walks for it."""

    expression: str
    effort: SearchEffort = NO_EFFORT
    # The part of `expression` that filters by the catalog's fields (filter values, `where`), for
    # estimating the share of rows it admits (milvus.filtered); empty: none.
    restriction: str = ""


def condition_expressions(condition: CheckedCondition) -> list[str]:
    column = milvus_field(condition.field)
    if condition.kind == "categorical":
        parts = []
        if condition.any_of is not None:
            parts.append(f"ARRAY_CONTAINS_ANY({column}, {literal(list(condition.any_of))})")
        if condition.none_of:
            parts.append(f"not ARRAY_CONTAINS_ANY({column}, {literal(list(condition.none_of))})")
        return parts
    # No value (NaN) never matches a range: every comparison with NaN is false, so an open lower
    # end still compares, against the lowest double (numeric values are finite).
    parts = []
    if not math.isinf(condition.low):
        parts.append(f"{column} {'>=' if condition.low_inclusive else '>'} {number(condition.low)}")
    else:
        parts.append(f"{column} >= {number(-math.inf)}")
    if not math.isinf(condition.high):
        parts.append(f"{column} {'<=' if condition.high_inclusive else '<'} {number(condition.high)}")
    elif not condition.high_inclusive:
        parts.append(f"{column} < {number(math.inf)}")
    return parts


def literal(values: list[str]) -> str:
    """A Milvus list literal of strings (JSON string escapes are Milvus's)."""
    return "[" + ", ".join(json.dumps(value, ensure_ascii=False) for value in values) + "]"


def number(value: float) -> str:
    if math.isinf(value):  # beyond every double: an open end compares against the largest one
        return "1.7976931348623157e308" if value > 0 else "-1.7976931348623157e308"
    return repr(float(value))
