"""Target specs on the command line: `[LABEL=]ADDRESS[;OPTION=VALUE...]`, so one server can be
evaluated twice with different Recommend options (with and without rerank, two ef values):

    127.0.0.1:50051
    fp32=127.0.0.1:50051
    rerank=127.0.0.1:50051;rerank=true;rerank_candidates=100
    hnsw-ef64=10.0.0.5:50051;ef=64
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from embedrec.client.models import UserProfile, condition_of

# Option name -> how its text becomes the UserProfile field's value.
_LISTS = {"exclude_ids", "filter_values"}
_INTS = {"ef", "nprobe", "rerank_candidates"}
_FLOATS = {"min_score"}
_BOOLS = {"rerank"}
_TEXTS = {"strategy", "rerank_model", "rerank_query"}
OPTION_NAMES = ("where", "diversity", *sorted(_LISTS | _INTS | _FLOATS | _BOOLS | _TEXTS))


def parse_target(spec: str, base: UserProfile) -> tuple[str, str, UserProfile]:
    """(label, address, options) of a target spec; options start from `base` (the command's
    flags) and each OPTION=VALUE overrides one: where (repeatable, e.g. where=price<100),
    diversity=FIELD=N, exclude_ids / filter_values (A|B), ef, nprobe, rerank_candidates,
    min_score, rerank (true/false), strategy, rerank_model, rerank_query. ValueError naming the
    part otherwise."""
    head, *parts = [part.strip() for part in spec.split(";")]
    label, found, address = head.partition("=")
    if not found:
        label, address = head, head
    if not address or not label:
        raise ValueError(f"target {spec[:60]!r}: give [LABEL=]HOST:PORT[;OPTION=VALUE...]")
    changes: dict[str, Any] = {}
    where = list(base.where)
    for part in filter(None, parts):
        name, found, value = part.partition("=")
        name = name.strip().replace("-", "_")
        if not found or name not in OPTION_NAMES:
            raise ValueError(f"target {label!r}: {part[:40]!r} is not OPTION=VALUE; options: {', '.join(OPTION_NAMES)}")
        if name == "where":
            condition_of(value)  # raises ValueError naming the condition
            where.append(value)
        else:
            changes[name] = _value(name, value.strip(), label)
    return label, address, dataclasses.replace(base, where=where, **changes)


def _value(name: str, value: str, label: str) -> Any:
    try:
        if name in _LISTS:
            return [part for part in value.split("|") if part]
        if name in _INTS:
            return int(value)
        if name in _FLOATS:
            return float(value)
    except ValueError:
        raise ValueError(f"target {label!r}: {name}={value[:20]!r} is not a number") from None
    if name in _BOOLS:
        if value.lower() not in BOOLEANS:
            raise ValueError(f"target {label!r}: {name}={value[:20]!r}: use true or false")
        return BOOLEANS[value.lower()]
    if name == "diversity":
        field, _, limit = value.partition("=")
        if not field or not limit.isdigit():
            raise ValueError(f"target {label!r}: diversity takes FIELD=N, e.g. diversity=brand=2")
        return (field, int(limit))
    return value


BOOLEANS: Mapping[str, bool] = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
