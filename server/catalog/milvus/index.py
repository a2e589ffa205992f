"""The vector index of an embedrec collection in Milvus, and how a search walks it.

FLAT (the default) scores every eligible row: the exact answer, the memory-mapped store's.
HNSW and IVF_FLAT are approximate: a search visits part of the rows (HNSW: a graph walk whose
candidate list is `ef` long; IVF_FLAT: the `nprobe` nearest of `nlist` clusters), so an item of
the true top k can be missed. Their recall is measured in `make bench-milvus`; Info reports the
index and whether it is approximate. The index is chosen at build time
(`export-items --milvus-index`), recorded in the collection's properties, and can be changed by a
later sync without rewriting the rows. Search effort is a server setting (--milvus-ef,
--milvus-nprobe), which one request may override (RecommendRequest.approximate).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from embedrec.server.catalog.store import NO_EFFORT, SearchEffort, refuse_effort
from embedrec.server.errors import ConfigurationError, InvalidArgument

IndexKind = Literal["FLAT", "HNSW", "IVF_FLAT"]
INDEX_KINDS: tuple[IndexKind, ...] = ("FLAT", "HNSW", "IVF_FLAT")
# Milvus's own ranges for the build and search parameters (knowhere, 2.3 through 2.5).
HNSW_M_RANGE = (2, 2048)
HNSW_EF_CONSTRUCTION_RANGE = (1, 2**31 - 1)
IVF_NLIST_RANGE = (1, 65_536)
MAX_EF = 32_768
MAX_NPROBE = 65_536
# Defaults: Milvus's documented starting points for HNSW (M, efConstruction) and nlist ~ 4·√n at
# 100k-1M rows. The search defaults (ef, nprobe) are the ones `make bench-milvus` measured.
DEFAULT_BUILD_PARAMS: dict[IndexKind, dict[str, int]] = {
    "FLAT": {},
    "HNSW": {"M": 16, "efConstruction": 200},
    "IVF_FLAT": {"nlist": 1024},
}
# 1M real-like rows x 384, M=16, efConstruction=200 (make bench-milvus, 2026-11-30): recall@10
# 0.95 at ef 128, 0.988 at 256, 0.997 at 512 (8 ms a query against FLAT's 129 ms).
DEFAULT_EF = 512
DEFAULT_NPROBE = 32
INDEX_PROPERTY = "embedrec.index"


@dataclass(frozen=True)
class VectorIndex:
    """The index of a collection's vectors: its kind and build parameters."""

    kind: IndexKind = "FLAT"
    params: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, kind: str, **overrides: int | None) -> VectorIndex:
        """The index `kind` with its default build parameters, `overrides` (None: the default)
        applied. ValueError naming the parameter for an unknown kind, a parameter the kind does
        not take, or one out of Milvus's range."""
        if kind not in INDEX_KINDS:
            raise ValueError(f"index {kind!r} is not one of {', '.join(INDEX_KINDS)}")
        params = dict(DEFAULT_BUILD_PARAMS[kind])
        for name, value in overrides.items():
            if value is None:
                continue
            if name not in params:
                raise ValueError(f"{name} is not a parameter of a {kind} index")
            params[name] = value
        ranges = {"M": HNSW_M_RANGE, "efConstruction": HNSW_EF_CONSTRUCTION_RANGE, "nlist": IVF_NLIST_RANGE}
        for name, value in params.items():
            low, high = ranges[name]
            if not low <= value <= high:
                raise ValueError(f"{kind} {name} must be in [{low}, {high}], got {value}")
        return cls(kind, params)

    @property
    def approximate(self) -> bool:
        """Whether a search may miss an item of the true top k."""
        return self.kind != "FLAT"

    def describe(self) -> str:
        """E.g. "FLAT" or "HNSW M=16 efConstruction=200"."""
        return " ".join([self.kind, *(f"{name}={value}" for name, value in self.params.items())])

    def add_to(self, index_params: Any, field_name: str) -> None:
        """Add this index on `field_name` (inner product) to pymilvus's IndexParams."""
        index_params.add_index(field_name=field_name, index_type=self.kind, metric_type="IP", params=self.params)

    def property_value(self) -> str:
        """The collection property recording this index."""
        return json.dumps({"kind": self.kind, "params": self.params}, sort_keys=True)

    @classmethod
    def from_properties(cls, properties: dict[str, str], where: str) -> VectorIndex:
        """The index a collection's properties record (FLAT when they record none: collections
        built before indexes were selectable). ConfigurationError naming `where` when unreadable."""
        value = properties.get(INDEX_PROPERTY)
        if value is None:
            return cls()
        try:
            recorded = json.loads(value)
            return cls.of(str(recorded["kind"]), **{str(k): int(v) for k, v in recorded["params"].items()})
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ConfigurationError(f"{where}: its index property {value[:80]!r} is unreadable ({error})") from None


# The default of signatures and dataclasses: an exact index.
FLAT = VectorIndex()


def check_effort(effort: SearchEffort, index: VectorIndex, *, field: str, exact_reason: str = "") -> SearchEffort:
    """`effort` if it fits `index`, else InvalidArgument naming `field`.ef / `field`.nprobe and the
    limit: a parameter the index does not take (any, on an exact index: `exact_reason` says why
    the items are searched exactly), or one out of range."""
    if not effort.is_set() or not index.approximate:
        return refuse_effort(
            effort, field=field, reason=exact_reason or f"the served collection has a {index.kind} index"
        )
    takes = "ef" if index.kind == "HNSW" else "nprobe"
    if (effort.ef and takes != "ef") or (effort.nprobe and takes != "nprobe"):
        wrong = "nprobe" if takes == "ef" else "ef"
        raise InvalidArgument(
            f"{field}.{wrong}: the served collection's index is {index.kind}, which takes {takes}",
            field=f"{field}.{wrong}",
        )
    if effort.ef > MAX_EF:
        raise InvalidArgument(f"{field}.ef is {effort.ef}; the limit is {MAX_EF}", field=f"{field}.ef")
    if effort.nprobe > MAX_NPROBE or effort.nprobe > index.params.get("nlist", MAX_NPROBE):
        limit = min(MAX_NPROBE, index.params.get("nlist", MAX_NPROBE))
        raise InvalidArgument(
            f"{field}.nprobe is {effort.nprobe}; the limit is {limit} (the index's nlist)", field=f"{field}.nprobe"
        )
    return effort


def search_params(index: VectorIndex, effort: SearchEffort, limit: int) -> dict[str, Any]:
    """pymilvus search parameters for `limit` results on `index` with `effort` (unset parameters:
    DEFAULT_EF, DEFAULT_NPROBE; HNSW's ef is raised to the limit: Milvus refuses a smaller one,
    IVF_FLAT's nprobe capped at nlist)."""
    if index.kind == "HNSW":
        return {"metric_type": "IP", "params": {"ef": max(effort.ef or DEFAULT_EF, limit)}}
    if index.kind == "IVF_FLAT":
        nprobe = min(effort.nprobe or DEFAULT_NPROBE, index.params["nlist"])
        return {"metric_type": "IP", "params": {"nprobe": nprobe}}
    return {"metric_type": "IP"}


def server_effort(effort: SearchEffort, index: VectorIndex) -> SearchEffort:
    """The server's effort for `index`, the one place its defaults are filled: HNSW's ef (unset:
    DEFAULT_EF), IVF_FLAT's nprobe (unset: DEFAULT_NPROBE, at most the index's nlist), the other
    setting ignored (one configuration serves collections with either index); ConfigurationError
    when out of range."""
    kept = NO_EFFORT
    if index.kind == "HNSW":
        kept = SearchEffort(ef=effort.ef or DEFAULT_EF)
    elif index.kind == "IVF_FLAT":
        kept = SearchEffort(nprobe=effort.nprobe or min(DEFAULT_NPROBE, index.params["nlist"]))
    try:
        return check_effort(kept, index, field="--milvus-ef/--milvus-nprobe")
    except InvalidArgument as error:
        raise ConfigurationError(str(error)) from None


def harder_effort(effort: SearchEffort, index: VectorIndex) -> SearchEffort | None:
    """4x `effort` (a selection's: the server's defaults filled) on the approximate `index`,
    None when it is exact or at its maximum."""
    if index.kind == "HNSW":
        return SearchEffort(ef=min(4 * effort.ef, MAX_EF)) if effort.ef < MAX_EF else None
    if index.kind == "IVF_FLAT":
        nlist = index.params["nlist"]
        return SearchEffort(nprobe=min(4 * effort.nprobe, nlist)) if effort.nprobe < nlist else None
    return None
