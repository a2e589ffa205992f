"""Reading interaction logs: JSON Lines or CSV (optionally gzipped) rows of user, item and the
optional timestamp, weight or rating, event type and user text.

A row the reader cannot use (invalid JSON, no user, neither an item nor a text, a timestamp or
weight that is not a number) is counted with its line number and reason, never raised: a log
of a million rows with a few bad ones still evaluates, and the report says what was dropped.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# A few bad rows are quoted in the report; the rest are only counted.
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Columns:
    """Which column holds what: a name, or the first of several names a row has."""

    user: tuple[str, ...] = ("user", "user_id", "userId")
    item: tuple[str, ...] = ("item", "item_id", "itemId")
    timestamp: tuple[str, ...] = ("timestamp", "time", "ts")
    weight: tuple[str, ...] = ("rating", "weight")
    event: tuple[str, ...] = ("event", "event_type")
    text: tuple[str, ...] = ("text", "query", "review")


@dataclass(frozen=True)
class Interaction:
    """One row of a log: `user` did `event` (None: an unnamed positive interaction) on `item`
    (None: a text-only row, e.g. a search query), at `timestamp` (seconds; None: unknown), with
    `weight` (a rating or weight; None: none given) and a user `text`; `position` is its row
    number in the log, the order used when there are no timestamps."""

    user: str
    item: str | None
    timestamp: float | None = None
    weight: float | None = None
    event: str | None = None
    text: str | None = None
    position: int = 0


@dataclass
class ReadReport:
    """What reading a log kept and dropped: rows read, malformed rows (count, a few examples)."""

    rows: int = 0
    malformed: int = 0
    examples: list[str] = field(default_factory=list)

    def reject(self, line: int, reason: str) -> None:
        """Count row `line` as malformed for `reason`."""
        self.malformed += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"line {line}: {reason}")


def read_interactions(path: Path, columns: Columns | None = None) -> tuple[list[Interaction], ReadReport]:
    """The usable interactions of the log at `path` (.jsonl/.json/.csv, optionally .gz), in log
    order, and a report of the malformed rows. Raises OSError when the file cannot be read and
    ValueError for a CSV whose header has no user or no item/text column."""
    columns = columns or Columns()
    report = ReadReport()
    found: list[Interaction] = []
    with open_text(path) as handle:
        for line, record in iter_records(handle, path):
            report.rows += 1
            if isinstance(record, str):
                report.reject(line, record)
                continue
            parsed = _interaction(record, columns, line)
            if isinstance(parsed, str):
                report.reject(line, parsed)
            else:
                found.append(parsed)
    return found, report


def open_text(path: Path) -> IO[str]:
    """`path` opened for reading text (gunzipped when its name ends in .gz)."""
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def iter_records(handle: IO[str], path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, record) for each row of a JSON Lines or CSV file; a record is a dict, or a
    string saying why the row is not one."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".csv"):
        yield from _csv_records(handle)
        return
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            yield number, "invalid JSON"
            continue
        yield number, record if isinstance(record, dict) else "not a JSON object"


def _csv_records(handle: IO[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(handle)
    try:
        for record in reader:
            yield reader.line_num, record
    except csv.Error as error:
        yield reader.line_num, f"invalid CSV ({str(error)[:80]})"


def _first(record: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = record.get(name)
        if value is not None and value != "":
            return value
    return None


def _interaction(record: dict[str, Any], columns: Columns, line: int) -> Interaction | str:
    user, item, text = (_text(_first(record, names)) for names in (columns.user, columns.item, columns.text))
    if user is None:
        return "no user"
    if item is None and text is None:
        return "neither an item nor a text"
    timestamp = parse_timestamp(_first(record, columns.timestamp))
    weight = parse_number(_first(record, columns.weight))
    if isinstance(timestamp, str):
        return timestamp
    if isinstance(weight, str):
        return f"weight: {weight}"
    event = _text(_first(record, columns.event))
    return Interaction(user, item, timestamp, weight, event.lower() if event else None, text, line)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list | bool):
        return None
    value = str(value).strip()
    return value or None


def parse_number(value: Any) -> float | str | None:
    """A finite float from a number or numeric text; None when missing; a reason otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return "not a number"
    try:
        number = float(value)
    except ValueError:
        return f"{str(value)[:20]!r} is not a number"
    return number if math.isfinite(number) else "not a finite number"


def parse_timestamp(value: Any) -> float | str | None:
    """Seconds from a number (epoch seconds, or milliseconds when above 1e11) or ISO 8601 text;
    None when missing; a reason otherwise. Naive ISO times are taken as UTC."""
    number = parse_number(value)
    if isinstance(number, float):
        return number / 1000 if abs(number) > 1e11 else number
    if number is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return f"timestamp {str(value)[:20]!r} is neither a number nor ISO 8601"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def read_catalog_ids(path: Path, id_field: str = "id") -> list[str]:
    """The item ids of a catalog (JSON Lines or CSV, as export-items reads), in file order;
    rows without an id are skipped. Raises OSError when the file cannot be read."""
    ids: list[str] = []
    with open_text(path) as handle:
        for _, record in iter_records(handle, path):
            if isinstance(record, dict) and (item := _text(record.get(id_field))) is not None:
                ids.append(item)
    return ids
