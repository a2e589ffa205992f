"""Count and size limits of every request message, checked before any per-element work.

One table (`request_limits`) says how many entries each repeated field of a request may hold
and how many bytes each string field. It is enforced as early as each format allows:

- protobuf (gRPC): `wire_limits.check_wire` walks the encoded request's records *before* it is
  decoded and stops at the first field past its limit, so a request of 4 million empty `users`
  costs 65 records of work, not 4 million decoded messages (~280 ms of GIL-holding C here).
- JSON (HTTP): `json_limits.check_json_structure` bounds nesting depth, the entries of any one
  array or object, and the values in all (vectorised over the raw bytes, before the parser
  allocates a single object); `json_limits.check_json` then checks the parsed document against
  the message's fields (types, names, counts) before json_format walks it, so nothing
  downstream recurses into or echoes what the schema does not allow.

Transport-free beyond protobuf descriptors: both edges call these with the same limits, and the
messages name the field (with its path) and the limit.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from embedrec.server.catalog.store import MAX_ID_BYTES
from embedrec.server.errors import InvalidArgument
from embedrec.server.limits import Limits

FIELDS_PER_ITEM = 256  # ItemUpsert.fields entries


@dataclass(frozen=True)
class CountLimit:
    """At most `limit` entries (or bytes), named `name` in messages (a setting or what it
    derives from)."""

    limit: int
    name: str


# Names and values (prompt_name, where[].field, filter values...) are short; texts and ids have
# their own limits.
DEFAULT_STRING_BYTES = CountLimit(1024, "names and values")


@dataclass(frozen=True)
class IntegerRange:
    """An integer field's valid values, low to high, named `name` in messages (a setting)."""

    low: int
    high: int
    name: str = ""


# What an unset field would mean is never what was wanted: JSON says "missing" before parsing.
REQUIRED_FIELDS = frozenset(
    {
        ("RecommendRequest", "k"),
        ("WeightedText", "text"),
        ("WeightedItem", "id"),
        ("Condition", "field"),
        ("TextPair", "a"),
        ("TextPair", "b"),
    }
)


@dataclass(frozen=True)
class LimitTable:
    """The limits of the request messages, keyed by (message name, field name): `counts` for
    repeated fields, `string_bytes` for string fields (UTF-8 bytes; None: texts, whose limit in
    characters the service checks with its own message; any string field not listed holds at
    most DEFAULT_STRING_BYTES)."""

    counts: Mapping[tuple[str, str], CountLimit]
    string_bytes: Mapping[tuple[str, str], CountLimit | None]
    # Integer fields with a range of their own (the core checks it; JSON's type errors quote it)
    # and the fields a request must set: both as (message name, field name).
    ranges: Mapping[tuple[str, str], IntegerRange] = field(default_factory=dict)
    required: frozenset[tuple[str, str]] = frozenset()
    # What a checker derives from the table per message type, by full name (e.g. the wire walk's
    # plans): built once, since a table lives as long as its limits (`request_limits` is cached).
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def count(self, message: str, field: str) -> CountLimit | None:
        """The count limit of `message`.`field`, if it has one."""
        return self.counts.get((message, field))

    def string(self, message: str, field: str) -> CountLimit | None:
        """The byte limit of the string field `message`.`field` (None: none on the wire)."""
        return self.string_bytes.get((message, field), DEFAULT_STRING_BYTES)


@functools.cache
def request_limits(limits: Limits, dim: int) -> LimitTable:
    """The limits of every request message under `limits`; `dim` bounds the vectors (built once
    per pair)."""
    ranges = {
        ("RecommendRequest", "k"): IntegerRange(1, limits.max_k, "max_k"),
        ("RecommendRequest", "offset"): IntegerRange(0, limits.max_offset, "max_offset"),
    }
    return LimitTable(_count_limits(limits, dim), _string_limits(), ranges, REQUIRED_FIELDS)


class _HasDim(Protocol):
    @property
    def dim(self) -> int: ...


class _HasEncoder(Protocol):
    @property
    def encoder(self) -> _HasDim: ...


class _Served(Protocol):
    @property
    def limits(self) -> Limits: ...

    @property
    def models(self) -> _HasEncoder: ...


def limits_of(service: _Served) -> LimitTable:
    """The request limits of what `service` serves (its limits and its default model's dim)."""
    return request_limits(service.limits, service.models.encoder.dim)


def _string_limits() -> Mapping[tuple[str, str], CountLimit | None]:
    # Texts are bounded by the message size here; max_chars_per_text is checked in characters later.
    text = None
    item_id = CountLimit(MAX_ID_BYTES, "item ids")
    return {
        ("EmbedRequest", "texts"): text,
        ("SimilarityRequest", "query"): text,
        ("SimilarityRequest", "candidates"): text,
        ("RerankRequest", "query"): text,
        ("RerankRequest", "documents"): text,
        ("TextPair", "a"): text,
        ("TextPair", "b"): text,
        ("WeightedText", "text"): text,
        ("ItemUpsert", "text"): text,
        ("WeightedItem", "id"): item_id,
        ("RecommendRequest", "exclude_ids"): item_id,
        ("ItemUpsert", "id"): item_id,
        ("DeleteItemsRequest", "ids"): item_id,
        ("HideItemsRequest", "ids"): item_id,
        ("RestoreItemsRequest", "ids"): item_id,
    }


def _count_limits(limits: Limits, dim: int) -> Mapping[tuple[str, str], CountLimit]:
    texts = CountLimit(limits.max_texts_per_request, "max_texts_per_request")
    values = CountLimit(limits.max_filter_values, "max_filter_values")
    ids = CountLimit(limits.max_exclude_ids, "max_exclude_ids")
    vector = CountLimit(dim, "the model's dim")
    return {
        ("EmbedRequest", "texts"): texts,
        ("SimilarityRequest", "candidates"): CountLimit(limits.max_texts_per_request - 1, "max_texts_per_request - 1"),
        ("SimilarityRequest", "pairs"): CountLimit(limits.max_texts_per_request // 2, "max_texts_per_request / 2"),
        ("RerankRequest", "documents"): CountLimit(limits.max_texts_per_request - 1, "max_texts_per_request - 1"),
        ("RecommendRequest", "user_vector"): vector,
        ("RecommendRequest", "texts"): texts,
        ("RecommendRequest", "items"): CountLimit(limits.max_history_items, "max_history_items"),
        ("RecommendRequest", "exclude_ids"): ids,
        ("RecommendRequest", "filter_values"): values,
        ("RecommendRequest", "where"): CountLimit(limits.max_conditions, "max_conditions"),
        ("Condition", "any_of"): values,
        ("ScoreFormula", "terms"): CountLimit(limits.max_score_terms, "max_score_terms"),
        ("Condition", "none_of"): values,
        ("RecommendBatchRequest", "users"): CountLimit(limits.max_batch_users, "max_batch_users"),
        ("UpsertItemsRequest", "items"): texts,
        ("ItemUpsert", "fields"): CountLimit(FIELDS_PER_ITEM, "fields per item"),
        ("StringList", "values"): values,
        ("FloatList", "values"): vector,
        ("DeleteItemsRequest", "ids"): ids,
        ("HideItemsRequest", "ids"): ids,
        ("RestoreItemsRequest", "ids"): ids,
    }


def too_long(path: str, limit: CountLimit) -> InvalidArgument:
    """The error for the string at `path` longer than `limit` UTF-8 bytes."""
    return InvalidArgument(f"{path} is longer than {limit.limit} bytes (the limit of {limit.name})")


def too_many(path: str, limit: CountLimit, count: int | None = None) -> InvalidArgument:
    """The error for `path` holding more than `limit` entries (`count` when known)."""
    has = f"{count} entries" if count is not None else f"more than {limit.limit} entries"
    return InvalidArgument(f"{path} has {has}; the limit is {limit.name}={limit.limit}")
