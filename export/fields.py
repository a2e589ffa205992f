"""Writing the catalog fields Recommend filters on as memory-mapped columns (see
embedrec.server.catalog.fields for the layout and the conditions).

One streaming pass over the catalog after the embedding: memory grows with the number of
values (4 bytes each), never with the texts. A numeric field's value must be a number (or a
numeric string in CSV); missing or null is "no value". A categorical field's value is a string
or number, or a JSON list of them for several values.
"""

from __future__ import annotations

import array
import json
from pathlib import Path

import numpy as np

from embedrec.export.catalog import NOT_A_NUMBER, CatalogError, iter_catalog, parse_number
from embedrec.server.catalog.fields import FIELDS_DIR

MAX_LISTED = 20


def write_columns(
    catalog: Path,
    output: Path,
    count: int,
    *,
    categorical: list[str],
    numeric: list[str],
    id_field: str,
    text_field: str,
) -> dict[str, str]:
    """Write one column per field into `output`/fields; return {name: kind} for the manifest.
    Raises CatalogError listing rows whose numeric values are not numbers."""
    if not categorical and not numeric:
        return {}
    overlap = set(categorical) & set(numeric)
    if overlap:
        raise CatalogError(f"fields {sorted(overlap)} are given as both categorical and numeric")
    directory = output / FIELDS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    numbers = {name: np.full(count, np.nan, dtype=np.float64) for name in numeric}
    codes = {name: array.array("i") for name in categorical}
    offsets = {name: array.array("q", [0]) for name in categorical}
    code_of: dict[str, dict[str, int]] = {name: {} for name in categorical}
    bad: list[str] = []
    rows = iter_catalog(catalog, id_field=id_field, text_field=text_field, fields=(*categorical, *numeric))
    for position, row in enumerate(rows):
        if row.error is not None:  # validated before the build: only a catalog changed meanwhile
            raise CatalogError(f"{catalog}: line {row.line}: {row.error}")
        for name in numeric:
            value = parse_number(row.fields.get(name))
            if value is NOT_A_NUMBER:  # validated before the build: only a catalog changed meanwhile
                bad.append(f"line {row.line}: {name}={row.fields.get(name)!r}")
            elif isinstance(value, float):
                numbers[name][position] = value
        for name in categorical:
            for label in _labels(row.fields.get(name)):
                codes[name].append(code_of[name].setdefault(label, len(code_of[name])))
            offsets[name].append(len(codes[name]))
    if bad:
        more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise CatalogError(f"{catalog}: {len(bad)} non-numeric values: {', '.join(bad[:MAX_LISTED])}{more}")
    for name, values in numbers.items():
        np.save(directory / f"{name}.npy", values)
    for name in categorical:
        np.save(directory / f"{name}.offsets.npy", np.frombuffer(offsets[name], dtype=np.int64))
        np.save(directory / f"{name}.codes.npy", np.frombuffer(codes[name], dtype=np.int32))
        (directory / f"{name}.values.json").write_text(json.dumps(list(code_of[name]), ensure_ascii=False) + "\n")
    return {**dict.fromkeys(categorical, "categorical"), **dict.fromkeys(numeric, "numeric")}


def _labels(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return list(dict.fromkeys(str(entry) for entry in value if entry is not None and entry != ""))
    if isinstance(value, dict):
        return []
    return [str(value)]
