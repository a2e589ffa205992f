"""Reading a catalog (JSON Lines or CSV, optionally gzip-compressed) one row at a time.

Rows are streamed, never loaded whole; `validate_catalog` reports every offender with its line
number (duplicate ids, empty ids or texts, rows that fail to parse).
"""

from __future__ import annotations

import array
import csv
import gzip
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from embedrec.server.catalog.mmap.item_ids import id_hash
from embedrec.server.catalog.store import MAX_ID_BYTES

MAX_LISTED_OFFENDERS = 20


class CatalogError(Exception):
    """The catalog has rows that cannot be built; the message lists them."""


@dataclass(frozen=True, slots=True)
class CatalogRow:
    """One catalog row: its 1-based line number, id and text (None when a field is unusable),
    and the value of the filter field ("" when the row lacks it or none was asked for)."""

    line: int
    item_id: str | None
    text: str | None
    error: str | None = None
    filter_value: str = ""
    # The raw values of the extra fields asked for (iter_catalog's `fields`), by name.
    fields: dict[str, object] = field(default_factory=dict)


def iter_catalog(
    path: Path,
    *,
    id_field: str = "id",
    text_field: str = "text",
    filter_field: str = "",
    fields: tuple[str, ...] = (),
) -> Iterator[CatalogRow]:
    """Yield the rows of `path` (.jsonl/.ndjson/.json lines or .csv, each optionally .gz), with
    the raw values of `fields` in each row's `fields`.

    A row that fails to parse is yielded with `error` set, not raised, so validation can list
    all of them.
    """
    suffixes = [suffix.lower() for suffix in path.suffixes]
    compressed = suffixes[-1:] == [".gz"]
    kind = suffixes[-2] if compressed and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    with _open_text(path, compressed) as handle:
        if kind == ".csv":
            yield from _iter_csv(handle, id_field, text_field, filter_field, fields)
        else:
            yield from _iter_jsonl(handle, id_field, text_field, filter_field, fields)


def validate_catalog(
    path: Path,
    *,
    id_field: str = "id",
    text_field: str = "text",
    filter_field: str = "",
    fields: tuple[str, ...] = (),
    numeric_fields: tuple[str, ...] = (),
) -> int:
    """Check every row of `path`; return the number of items. `fields` and `numeric_fields` must
    be columns of a CSV catalog (JSON rows may lack them: no value); numeric fields' values must
    be numbers (see `parse_number`).

    Raises CatalogError listing (up to MAX_LISTED_OFFENDERS per kind) rows that fail to parse,
    empty ids, empty texts, ids with line breaks, ids over MAX_ID_BYTES, non-numeric values, and duplicate ids with
    their lines: before anything is embedded.
    """
    # Duplicates are found by 64-bit id hashes (8 bytes per row, not a dict of every id), and
    # only the colliding hashes' ids are looked at again, in a second pass.
    id_hashes = array.array("Q")
    problems: dict[str, list[str]] = {
        "unparsable rows": [],
        "empty ids": [],
        "empty texts": [],
        "ids with line breaks": [],
        f"ids longer than {MAX_ID_BYTES} bytes": [],
        "non-numeric values": [],
        "duplicate ids": [],
    }
    count = 0
    rows = iter_catalog(
        path, id_field=id_field, text_field=text_field, filter_field=filter_field, fields=(*fields, *numeric_fields)
    )
    for row in rows:
        count += 1
        if row.error is not None:
            problems["unparsable rows"].append(f"line {row.line}: {row.error}")
            continue
        if not row.item_id or not row.item_id.strip():
            problems["empty ids"].append(f"line {row.line}")
        elif "\n" in row.item_id or "\r" in row.item_id:
            problems["ids with line breaks"].append(f"line {row.line}")
        elif len(row.item_id.encode("utf-8")) > MAX_ID_BYTES:  # requests could never name it
            problems[f"ids longer than {MAX_ID_BYTES} bytes"].append(f"line {row.line}")
        else:
            id_hashes.append(id_hash(row.item_id))
        if not row.text or not row.text.strip():
            problems["empty texts"].append(f"line {row.line}")
        for name in numeric_fields:
            if parse_number(row.fields.get(name)) is NOT_A_NUMBER:
                problems["non-numeric values"].append(f"line {row.line}: {name}={row.fields.get(name)!r}")
    problems["duplicate ids"] = _duplicates(path, id_hashes, id_field, text_field)
    found = {kind: rows for kind, rows in problems.items() if rows}
    if found:
        raise CatalogError(f"{path}: " + "; ".join(_describe(kind, rows) for kind, rows in found.items()))
    if count == 0:
        raise CatalogError(f"{path}: the catalog has no rows")
    return count


def _duplicates(path: Path, id_hashes: array.array[int], id_field: str, text_field: str) -> list[str]:
    """Every repeated id with its first line and the repeat's line (second pass, only when some
    hashes repeat)."""
    hashes = np.frombuffer(id_hashes, dtype=np.uint64) if id_hashes else np.zeros(0, dtype=np.uint64)
    ordered = np.sort(hashes)
    repeated = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not repeated:
        return []
    first_line_of: dict[str, int] = {}
    duplicates = []
    for row in iter_catalog(path, id_field=id_field, text_field=text_field):
        if row.item_id is None or id_hash(row.item_id) not in repeated:
            continue
        if row.item_id in first_line_of:
            duplicates.append(f"{row.item_id!r} (lines {first_line_of[row.item_id]} and {row.line})")
        else:
            first_line_of[row.item_id] = row.line
    return duplicates


def _describe(kind: str, rows: list[str]) -> str:
    listed = ", ".join(rows[:MAX_LISTED_OFFENDERS])
    more = f" and {len(rows) - MAX_LISTED_OFFENDERS} more" if len(rows) > MAX_LISTED_OFFENDERS else ""
    return f"{len(rows)} {kind}: {listed}{more}"


def _open_text(path: Path, compressed: bool) -> IO[str]:
    if compressed:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _iter_jsonl(
    handle: IO[str], id_field: str, text_field: str, filter_field: str, fields: tuple[str, ...]
) -> Iterator[CatalogRow]:
    for line_number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            yield CatalogRow(line_number, None, None, f"invalid JSON ({error.args[0] if error.args else error})")
            continue
        if not isinstance(record, dict):
            yield CatalogRow(line_number, None, None, "not a JSON object")
            continue
        filter_value = _as_text(record.get(filter_field)) if filter_field else None
        yield CatalogRow(
            line_number,
            _as_text(record.get(id_field)),
            _as_text(record.get(text_field)),
            None,
            filter_value or "",
            {name: record.get(name) for name in fields},
        )


def _iter_csv(
    handle: IO[str], id_field: str, text_field: str, filter_field: str, fields: tuple[str, ...]
) -> Iterator[CatalogRow]:
    reader = csv.DictReader(handle)
    wanted = {id_field, text_field, *([filter_field] if filter_field else []), *fields}
    missing = wanted - set(reader.fieldnames or ())
    if missing:
        yield CatalogRow(1, None, None, f"header lacks column(s) {sorted(missing)}")
        return
    try:
        for record in reader:
            filter_value = _as_text(record.get(filter_field)) if filter_field else None
            yield CatalogRow(
                reader.line_num,
                _as_text(record.get(id_field)),
                _as_text(record.get(text_field)),
                None,
                filter_value or "",
                {name: record.get(name) for name in fields},
            )
    except csv.Error as error:
        yield CatalogRow(reader.line_num, None, None, f"invalid CSV ({error})")


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    return str(value)


NOT_A_NUMBER = object()


def parse_number(value: object) -> float | object | None:
    """A numeric field's value: a finite float, None when missing (None or ""), NOT_A_NUMBER
    otherwise (booleans, text that is not a number, NaN or infinities, lists)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return NOT_A_NUMBER
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else NOT_A_NUMBER
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return NOT_A_NUMBER
        return number if math.isfinite(number) else NOT_A_NUMBER
    return NOT_A_NUMBER
