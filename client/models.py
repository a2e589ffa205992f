"""The client's plain types (a user profile, results, server info) and their conversion from and
to the protobuf messages.

Shared by the synchronous and the asyncio client, so both speak the same types and build the
same requests; only the call itself differs between them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt

# The admin results are defined once, for server and client alike; re-exported here.
from embedrec.results import Contribution as Contribution
from embedrec.results import DeleteResult as DeleteResult
from embedrec.results import ReloadResult as ReloadResult
from embedrec.results import UpsertResult as UpsertResult
from embedrec.results import VisibilityResult as VisibilityResult
from embedrec.v1 import embedrec_pb2 as pb

POOLING_NAMES = {pb.POOLING_MEAN: "mean", pb.POOLING_CLS: "cls", pb.POOLING_UNSPECIFIED: "unspecified"}
POOLING_VALUES = {"mean": pb.POOLING_MEAN, "cls": pb.POOLING_CLS, None: pb.POOLING_UNSPECIFIED}

Weighted = Mapping[str, float] | Iterable[str] | None


PART_NAMES: dict[int, str] = {
    pb.PROFILE_PART_USER_VECTOR: "user_vector",
    pb.PROFILE_PART_TEXT: "text",
    pb.PROFILE_PART_ITEM: "item",
}


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: its id, cosine score and, with explain=True, its top contribution;
    with a rerank stage, the cross-encoder's score (None for an item without a text). Under a
    score formula `score` is the formula's, `similarity` its cosine part and, with explain=True,
    `score_terms` each term's part (in the formula's order)."""

    id: str
    score: float
    contribution: Contribution | None = None
    rerank_score: float | None = None
    similarity: float | None = None
    score_terms: tuple[float, ...] = ()


def visibility_of(response: pb.ItemVisibilityResponse) -> VisibilityResult:
    """A VisibilityResult from an ItemVisibilityResponse."""
    return VisibilityResult(response.changed, list(response.unknown_ids), response.hidden_count)


@dataclass(frozen=True)
class NewItem:
    """An item for UpsertItems: its id, a text (embedded by the server with the items' document
    prompt) or a vector, and field values by name: a string or a list of strings for a
    categorical field, a number for a numeric one."""

    id: str
    text: str | None = None
    vector: Sequence[float] | None = None
    fields: Mapping[str, str | Sequence[str] | float] = field(default_factory=dict)


def upsert_request_of(items: Sequence[NewItem | Mapping[str, Any]]) -> pb.UpsertItemsRequest:
    """An UpsertItemsRequest from NewItems or mappings with their keys (id, text or vector, fields)."""
    request = pb.UpsertItemsRequest()
    for one in items:
        item = one if isinstance(one, NewItem) else NewItem(**one)
        if item.text is not None and item.vector is not None:
            raise ValueError(f"item {item.id!r}: give a text or a vector, not both")
        message = request.items.add(id=item.id)
        if item.text is not None:
            message.text = item.text
        if item.vector is not None:
            message.vector.values.extend(float(value) for value in item.vector)
        for name, value in item.fields.items():
            if isinstance(value, bool):
                raise TypeError(f"field {name!r}: give a string, strings or a number, not a bool")
            if isinstance(value, str):
                message.fields[name].values.values.append(value)
            elif isinstance(value, int | float):
                message.fields[name].number = float(value)
            else:
                message.fields[name].values.values.extend(str(part) for part in value)
    return request


def upsert_result_of(response: pb.UpsertItemsResponse) -> UpsertResult:
    """An UpsertResult from an UpsertItemsResponse."""
    return UpsertResult(response.inserted, response.updated, response.item_count)


def delete_result_of(response: pb.DeleteItemsResponse) -> DeleteResult:
    """A DeleteResult from a DeleteItemsResponse."""
    return DeleteResult(response.deleted, list(response.unknown_ids), response.item_count)


@dataclass(frozen=True)
class ServerInfo:
    """What the server runs: model, provider, items and limits (see InfoResponse). Every
    InfoResponse field is here once: each `max_*` field but max_length in `limits` by its name,
    the others as attributes of the same name (a test checks this against the proto)."""

    model_name: str
    dim: int
    max_length: int
    pooling: str
    normalize: bool
    provider: str
    model_sha256: str
    item_count: int
    items_sha256: str
    server_version: str
    runtime_version: str
    server_instance: str
    limits: dict[str, int]
    items_filter_field: str = ""
    instances: int = 1
    tuning: str = ""
    sessions: int = 1
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str = ""
    query_prompt_name: str = ""
    items_prompt_name: str = ""
    hidden_item_count: int = 0
    items_fields: dict[str, str] = dataclasses.field(default_factory=dict)
    items_scan: str = ""
    items_code_bytes: int = 0
    items_engine: str = ""
    items_index: str = ""
    items_approximate: bool = False
    items_store_error: str = ""
    items_index_loading: bool = False
    items_index_loading_detail: str = ""
    items_live_recall: float = 0.0
    items_live_recall_samples: int = 0
    items_live_recall_k: int = 0
    items_live_recall_error: float = 0.0
    models: list[ModelInfo] = dataclasses.field(default_factory=list)
    score_formula: str = ""
    model_variant: str = "fp32"
    int8_target: str = ""
    int8_agreement_fp32_items: float = 0.0
    int8_agreement_int8_items: float = 0.0
    items_precision: str = ""
    int8_host_warning: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """A model the server serves (ServerInfo.models): what calls name it by, its task ("embed"
    or "rerank"), source model, dim, max length, ONNX checksum, a reranker's activation, and its
    variant, int8 target, measured int8 agreement and host warning (see ServedModel)."""

    name: str
    task: str
    model_name: str
    dim: int
    max_length: int
    onnx_sha256: str
    activation: str = ""
    variant: str = "fp32"
    int8_target: str = ""
    int8_agreement: float = 0.0
    int8_host_warning: str = ""


@dataclass(frozen=True)
class RerankHit:
    """One reranked document: its position in the request, its relevance score, and its text
    when asked for."""

    index: int
    score: float
    document: str | None = None


def embed_request(
    texts: Sequence[str],
    normalize: bool | None,
    truncate: bool | None,
    pooling: str | None,
    prompt_name: str | None = None,
    dimensions: int | None = None,
    model: str = "",
) -> pb.EmbedRequest:
    """EmbedRequest for `texts`; None leaves an option to the server's default ("" model: the
    server's first)."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    request = pb.EmbedRequest(texts=list(texts), pooling=POOLING_VALUES[pooling], model=model)
    if normalize is not None:
        request.normalize = normalize
    if truncate is not None:
        request.truncate = truncate
    if prompt_name is not None:
        request.prompt_name = prompt_name
    if dimensions is not None:
        request.dimensions = dimensions
    return request


def embeddings_of(response: pb.EmbedResponse) -> npt.NDArray[np.float32]:
    """The (n, dim) float32 matrix of an EmbedResponse."""
    values = np.asarray(response.values, dtype=np.float32)
    return values.reshape(-1, response.dim) if response.dim else values.reshape(0, 0)


def similarity_request(
    query: str | None, candidates: Sequence[str] | None, pairs: Sequence[tuple[str, str]] | None, model: str = ""
) -> pb.SimilarityRequest:
    """SimilarityRequest in the query form or the pairs form."""
    if pairs is not None:
        return pb.SimilarityRequest(pairs=[pb.TextPair(a=a, b=b) for a, b in pairs], model=model)
    return pb.SimilarityRequest(query=query or "", candidates=list(candidates or ()), model=model)


def rerank_request(
    query: str, documents: Sequence[str], top_n: int | None, return_documents: bool, model: str
) -> pb.RerankRequest:
    """RerankRequest; None top_n: every document."""
    if isinstance(documents, str):
        raise TypeError("documents must be a sequence of strings, not one string")
    return pb.RerankRequest(
        query=query, documents=list(documents), top_n=top_n or 0, return_documents=return_documents, model=model
    )


def rerank_hits_of(response: pb.RerankResponse, with_documents: bool) -> list[RerankHit]:
    """RerankHits from a RerankResponse, best first."""
    return [
        RerankHit(result.index, float(result.relevance_score), result.document if with_documents else None)
        for result in response.results
    ]


@dataclass(frozen=True)
class UserProfile:
    """One user to recommend for: any of a vector, texts and history item ids, each weighted.

    `texts` and `item_ids` are sequences (weight 1 each) or {value: weight} mappings; history
    items are excluded from the results unless `exclude_history` is False; `exclude_ids` are
    never returned; `filter_values` keeps only items whose filter field has one of them;
    `explain` names each result's top contributing part. Negative weights are dislikes.
    `min_score` keeps only items scoring at least that; `offset` skips that many results (pages);
    `ignore_unknown_items` skips unknown history ids (listed in the result's `unknown_item_ids`)
    instead of failing. `ef` (HNSW) or `nprobe` (IVF_FLAT) sets how far an approximate Milvus
    index searches (0: the server's setting). `rerank` (or any rerank_ option) adds a
    cross-encoder stage over the best `rerank_candidates` (0: max(50, offset + k)) scored against
    `rerank_query` ("": the positive texts) by `rerank_model` ("": the first reranker); each
    result then has `rerank_score`. `score_formula` ranks by similarity plus weighted terms of
    numeric fields: its text ("0.08*log1p(popularity) + 0.2*gauss(published, origin=now,
    scale=604800)", "none": similarity alone; docs/score-formula.md) or a pb.ScoreFormula; None:
    the server's default formula. None leaves a field to the server's default (see
    RecommendRequest in the proto).
    """

    k: int = 10
    vector: npt.ArrayLike | None = None
    vector_weight: float | None = None
    texts: Weighted = None
    item_ids: Weighted = None
    exclude_ids: Iterable[str] = ()
    exclude_history: bool | None = None
    filter_values: Iterable[str] = ()
    explain: bool = False
    min_score: float | None = None
    offset: int = 0
    ignore_unknown_items: bool = False
    where: Iterable[str | Mapping[str, Any]] = ()
    diversity: tuple[str, int] | None = None
    strategy: str = "average_vector"
    ef: int = 0
    nprobe: int = 0
    rerank: bool = False
    rerank_candidates: int = 0
    rerank_model: str = ""
    rerank_query: str = ""
    score_formula: str | pb.ScoreFormula | None = None

    def to_request(self) -> pb.RecommendRequest:
        """The RecommendRequest for this profile."""
        if isinstance(self.filter_values, str) or isinstance(self.exclude_ids, str):
            raise TypeError("filter_values and exclude_ids must be sequences of strings, not one string")
        request = pb.RecommendRequest(
            k=self.k,
            exclude_ids=list(self.exclude_ids),
            filter_values=list(self.filter_values),
            explain=self.explain,
            offset=self.offset,
            ignore_unknown_items=self.ignore_unknown_items,
        )
        if self.min_score is not None:
            request.min_score = self.min_score
        if isinstance(self.where, str):
            raise TypeError("where must be a sequence of conditions, not one string")
        request.where.extend(condition_of(condition) for condition in self.where)
        if self.diversity is not None:
            request.diversity.field, request.diversity.max_per_value = self.diversity
        if self.strategy not in STRATEGY_VALUES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGY_VALUES)}, got {self.strategy!r}")
        request.strategy = STRATEGY_VALUES[self.strategy]
        if self.vector is not None:
            request.user_vector.extend(np.asarray(self.vector, dtype=np.float32).ravel().tolist())
        if self.vector_weight is not None:
            request.user_vector_weight = self.vector_weight
        for text, weight in _weighted(self.texts):
            entry = request.texts.add(text=text)
            if weight is not None:
                entry.weight = weight
        for item_id, weight in _weighted(self.item_ids):
            item = request.items.add(id=item_id)
            if weight is not None:
                item.weight = weight
        if self.exclude_history is not None:
            request.exclude_history = self.exclude_history
        if self.ef or self.nprobe:
            request.approximate.ef, request.approximate.nprobe = self.ef, self.nprobe
        if self.rerank or self.rerank_candidates or self.rerank_model or self.rerank_query:
            request.rerank.candidates = self.rerank_candidates
            request.rerank.model = self.rerank_model
            request.rerank.query = self.rerank_query
        if isinstance(self.score_formula, str):
            request.score_formula.SetInParent()  # set even when empty: similarity alone
            request.score_formula.expression = self.score_formula
        elif self.score_formula is not None:
            request.score_formula.CopyFrom(self.score_formula)
            request.score_formula.SetInParent()
        return request


class ProfileOptions(TypedDict, total=False):
    """Recommend's options by keyword: UserProfile's fields but k (a test keeps the two equal),
    for the keyword form of `recommend` on both clients."""

    vector: npt.ArrayLike | None
    vector_weight: float | None
    texts: Weighted
    item_ids: Weighted
    exclude_ids: Iterable[str]
    exclude_history: bool | None
    filter_values: Iterable[str]
    explain: bool
    min_score: float | None
    offset: int
    ignore_unknown_items: bool
    where: Iterable[str | Mapping[str, Any]]
    diversity: tuple[str, int] | None
    strategy: str
    ef: int
    nprobe: int
    rerank: bool
    rerank_candidates: int
    rerank_model: str
    rerank_query: str
    score_formula: str | pb.ScoreFormula | None


def profile_of(k: int, profile: UserProfile | None, options: ProfileOptions) -> UserProfile:
    """The profile `recommend` was called with: `profile` itself (then neither k nor options may
    be given), or one of k and the keyword `options`."""
    if profile is None:
        return UserProfile(k, **options)
    if options or k != UserProfile.k:
        raise TypeError("give either profile=UserProfile(...) or k and keyword options, not both")
    return profile


STRATEGY_VALUES = {"average_vector": pb.STRATEGY_AVERAGE_VECTOR, "best_score": pb.STRATEGY_BEST_SCORE}
CONDITION_OPERATORS = ("<=", ">=", "!=", "<", ">", "=")


def condition_of(condition: str | Mapping[str, Any]) -> pb.Condition:
    """A Condition from "price<100", "price>=10", "brand=acme|zenith" (any of), "brand!=acme"
    (none of), or a mapping of Condition's fields ({"field": "price", "lt": 100})."""
    if not isinstance(condition, str):
        return pb.Condition(**condition)
    for operator in CONDITION_OPERATORS:
        name, found, value = condition.partition(operator)
        if found and name.strip():
            name, value = name.strip(), value.strip()
            if operator in ("=", "!="):
                values = [part for part in value.split("|") if part]
                parsed = pb.Condition(field=name)
                (parsed.any_of if operator == "=" else parsed.none_of).extend(values)
                return parsed
            bound = {"<=": "lte", ">=": "gte", "<": "lt", ">": "gt"}[operator]
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{condition!r}: {value!r} is not a number") from None
            parsed = pb.Condition(field=name)
            setattr(parsed, bound, number)
            return parsed
    raise ValueError(f"{condition!r} is not a condition: use FIELD<N, FIELD>=N, FIELD=A|B or FIELD!=A")


class Recommendations(list[Recommendation]):
    """Recommended items, best first (a list), the history ids the server skipped as unknown
    (`unknown_item_ids`, with ignore_unknown_items: the first ones; `unknown_item_count` of them
    in all), the server's `warnings` (e.g. a filter value no item has: the answer is exact,
    perhaps not what was meant), and whether an approximate index was still loading
    (`index_loading`: the list may miss more of the true top k than usual)."""

    unknown_item_ids: list[str]
    unknown_item_count: int
    warnings: list[str]
    index_loading: bool = False


def recommendations_of(response: pb.RecommendResponse) -> Recommendations:
    """The items of a RecommendResponse, best first."""
    found = Recommendations(
        Recommendation(
            item.id,
            float(item.score),
            _contribution(item) if item.HasField("top_contribution") else None,
            float(item.rerank_score) if item.HasField("rerank_score") else None,
            float(item.similarity) if item.HasField("similarity") else None,
            tuple(float(part) for part in item.score_terms),
        )
        for item in response.items
    )
    found.unknown_item_ids = list(response.unknown_item_ids)
    found.unknown_item_count = response.unknown_item_count
    found.warnings = list(response.warnings)
    found.index_loading = response.index_loading
    return found


def recommend_batch_request(users: Sequence[UserProfile | Mapping[str, Any]]) -> pb.RecommendBatchRequest:
    """RecommendBatchRequest; each user a UserProfile (or a mapping of its fields)."""
    profiles = [user if isinstance(user, UserProfile) else UserProfile(**user) for user in users]
    return pb.RecommendBatchRequest(users=[profile.to_request() for profile in profiles])


def reload_result_of(response: pb.ReloadItemsResponse) -> ReloadResult:
    """A ReloadResult from a ReloadItemsResponse."""
    return ReloadResult(response.items_sha256, response.item_count, response.previous_items_sha256, response.changed)


def _contribution(item: pb.ScoredItem) -> Contribution:
    top = item.top_contribution
    item_id = top.item_id if top.HasField("item_id") else None
    return Contribution(PART_NAMES.get(top.part, str(top.part)), top.index, item_id, float(top.score))


def info_of(response: pb.InfoResponse) -> ServerInfo:
    """A ServerInfo from an InfoResponse."""
    names = [field.name for field in pb.InfoResponse.DESCRIPTOR.fields]
    attributes = {field.name for field in dataclasses.fields(ServerInfo)} - {"limits"}
    values: dict[str, Any] = {name: getattr(response, name) for name in names if name in attributes}
    values["pooling"] = POOLING_NAMES.get(response.pooling, str(response.pooling))
    values["prompts"] = dict(response.prompts)
    values["items_fields"] = dict(response.items_fields)
    values["models"] = [
        ModelInfo(
            m.name,
            m.task,
            m.model_name,
            m.dim,
            m.max_length,
            m.onnx_sha256,
            m.activation,
            m.variant or "fp32",
            m.int8_target,
            m.int8_agreement,
            m.int8_host_warning,
        )
        for m in response.models
    ]
    # max_length is the model's, an attribute: each field has one place (and `info` prints it once)
    limits = {name: getattr(response, name) for name in names if name.startswith("max_") and name not in attributes}
    return ServerInfo(**values, limits=limits)


def _weighted(values: Weighted) -> list[tuple[str, float | None]]:
    if values is None:
        return []
    if isinstance(values, str):
        raise TypeError("expected a sequence or mapping of strings, not one string")
    if isinstance(values, Mapping):
        return [(key, float(weight)) for key, weight in values.items()]
    return [(value, None) for value in values]
