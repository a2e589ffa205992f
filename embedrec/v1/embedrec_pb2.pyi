from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Pooling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOLING_UNSPECIFIED: _ClassVar[Pooling]
    POOLING_MEAN: _ClassVar[Pooling]
    POOLING_CLS: _ClassVar[Pooling]

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_AVERAGE_VECTOR: _ClassVar[Strategy]
    STRATEGY_BEST_SCORE: _ClassVar[Strategy]

class ProfilePart(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROFILE_PART_UNSPECIFIED: _ClassVar[ProfilePart]
    PROFILE_PART_USER_VECTOR: _ClassVar[ProfilePart]
    PROFILE_PART_TEXT: _ClassVar[ProfilePart]
    PROFILE_PART_ITEM: _ClassVar[ProfilePart]

class EmbeddingType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMBEDDING_TYPE_UNSPECIFIED: _ClassVar[EmbeddingType]
    EMBEDDING_TYPE_FLOAT: _ClassVar[EmbeddingType]
    EMBEDDING_TYPE_INT8: _ClassVar[EmbeddingType]
    EMBEDDING_TYPE_UINT8: _ClassVar[EmbeddingType]
    EMBEDDING_TYPE_BINARY: _ClassVar[EmbeddingType]
    EMBEDDING_TYPE_UBINARY: _ClassVar[EmbeddingType]

class ScoreFunction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORE_FUNCTION_UNSPECIFIED: _ClassVar[ScoreFunction]
    SCORE_FUNCTION_LOG1P: _ClassVar[ScoreFunction]
    SCORE_FUNCTION_VALUE: _ClassVar[ScoreFunction]
    SCORE_FUNCTION_GAUSS: _ClassVar[ScoreFunction]
    SCORE_FUNCTION_EXP: _ClassVar[ScoreFunction]
    SCORE_FUNCTION_LINEAR: _ClassVar[ScoreFunction]
POOLING_UNSPECIFIED: Pooling
POOLING_MEAN: Pooling
POOLING_CLS: Pooling
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_AVERAGE_VECTOR: Strategy
STRATEGY_BEST_SCORE: Strategy
PROFILE_PART_UNSPECIFIED: ProfilePart
PROFILE_PART_USER_VECTOR: ProfilePart
PROFILE_PART_TEXT: ProfilePart
PROFILE_PART_ITEM: ProfilePart
EMBEDDING_TYPE_UNSPECIFIED: EmbeddingType
EMBEDDING_TYPE_FLOAT: EmbeddingType
EMBEDDING_TYPE_INT8: EmbeddingType
EMBEDDING_TYPE_UINT8: EmbeddingType
EMBEDDING_TYPE_BINARY: EmbeddingType
EMBEDDING_TYPE_UBINARY: EmbeddingType
SCORE_FUNCTION_UNSPECIFIED: ScoreFunction
SCORE_FUNCTION_LOG1P: ScoreFunction
SCORE_FUNCTION_VALUE: ScoreFunction
SCORE_FUNCTION_GAUSS: ScoreFunction
SCORE_FUNCTION_EXP: ScoreFunction
SCORE_FUNCTION_LINEAR: ScoreFunction

class EmbedRequest(_message.Message):
    __slots__ = ("texts", "normalize", "truncate", "pooling", "prompt_name", "dimensions", "model", "embedding_type")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_TYPE_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    normalize: bool
    truncate: bool
    pooling: Pooling
    prompt_name: str
    dimensions: int
    model: str
    embedding_type: EmbeddingType
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., normalize: _Optional[bool] = ..., truncate: _Optional[bool] = ..., pooling: _Optional[_Union[Pooling, str]] = ..., prompt_name: _Optional[str] = ..., dimensions: _Optional[int] = ..., model: _Optional[str] = ..., embedding_type: _Optional[_Union[EmbeddingType, str]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("values", "dim", "token_counts", "codes", "code_bytes")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    CODE_BYTES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    dim: int
    token_counts: _containers.RepeatedScalarFieldContainer[int]
    codes: bytes
    code_bytes: int
    def __init__(self, values: _Optional[_Iterable[float]] = ..., dim: _Optional[int] = ..., token_counts: _Optional[_Iterable[int]] = ..., codes: _Optional[bytes] = ..., code_bytes: _Optional[int] = ...) -> None: ...

class TextPair(_message.Message):
    __slots__ = ("a", "b")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    a: str
    b: str
    def __init__(self, a: _Optional[str] = ..., b: _Optional[str] = ...) -> None: ...

class SimilarityRequest(_message.Message):
    __slots__ = ("query", "candidates", "pairs", "model")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    query: str
    candidates: _containers.RepeatedScalarFieldContainer[str]
    pairs: _containers.RepeatedCompositeFieldContainer[TextPair]
    model: str
    def __init__(self, query: _Optional[str] = ..., candidates: _Optional[_Iterable[str]] = ..., pairs: _Optional[_Iterable[_Union[TextPair, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class RerankRequest(_message.Message):
    __slots__ = ("query", "documents", "top_n", "return_documents", "model")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    query: str
    documents: _containers.RepeatedScalarFieldContainer[str]
    top_n: int
    return_documents: bool
    model: str
    def __init__(self, query: _Optional[str] = ..., documents: _Optional[_Iterable[str]] = ..., top_n: _Optional[int] = ..., return_documents: _Optional[bool] = ..., model: _Optional[str] = ...) -> None: ...

class RerankResult(_message.Message):
    __slots__ = ("index", "relevance_score", "document")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    index: int
    relevance_score: float
    document: str
    def __init__(self, index: _Optional[int] = ..., relevance_score: _Optional[float] = ..., document: _Optional[str] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("results", "model", "tokens")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RerankResult]
    model: str
    tokens: int
    def __init__(self, results: _Optional[_Iterable[_Union[RerankResult, _Mapping]]] = ..., model: _Optional[str] = ..., tokens: _Optional[int] = ...) -> None: ...

class SimilarityResponse(_message.Message):
    __slots__ = ("scores",)
    SCORES_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, scores: _Optional[_Iterable[float]] = ...) -> None: ...

class WeightedText(_message.Message):
    __slots__ = ("text", "weight")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    text: str
    weight: float
    def __init__(self, text: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class WeightedItem(_message.Message):
    __slots__ = ("id", "weight")
    ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    id: str
    weight: float
    def __init__(self, id: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("user_vector", "user_vector_weight", "texts", "items", "exclude_ids", "exclude_history", "k", "filter_values", "explain", "min_score", "offset", "ignore_unknown_items", "where", "diversity", "strategy", "approximate", "rerank", "score_formula")
    USER_VECTOR_FIELD_NUMBER: _ClassVar[int]
    USER_VECTOR_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_IDS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_HISTORY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_VALUES_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    IGNORE_UNKNOWN_ITEMS_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATE_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    SCORE_FORMULA_FIELD_NUMBER: _ClassVar[int]
    user_vector: _containers.RepeatedScalarFieldContainer[float]
    user_vector_weight: float
    texts: _containers.RepeatedCompositeFieldContainer[WeightedText]
    items: _containers.RepeatedCompositeFieldContainer[WeightedItem]
    exclude_ids: _containers.RepeatedScalarFieldContainer[str]
    exclude_history: bool
    k: int
    filter_values: _containers.RepeatedScalarFieldContainer[str]
    explain: bool
    min_score: float
    offset: int
    ignore_unknown_items: bool
    where: _containers.RepeatedCompositeFieldContainer[Condition]
    diversity: Diversity
    strategy: Strategy
    approximate: ApproximateSearch
    rerank: RecommendRerank
    score_formula: ScoreFormula
    def __init__(self, user_vector: _Optional[_Iterable[float]] = ..., user_vector_weight: _Optional[float] = ..., texts: _Optional[_Iterable[_Union[WeightedText, _Mapping]]] = ..., items: _Optional[_Iterable[_Union[WeightedItem, _Mapping]]] = ..., exclude_ids: _Optional[_Iterable[str]] = ..., exclude_history: _Optional[bool] = ..., k: _Optional[int] = ..., filter_values: _Optional[_Iterable[str]] = ..., explain: _Optional[bool] = ..., min_score: _Optional[float] = ..., offset: _Optional[int] = ..., ignore_unknown_items: _Optional[bool] = ..., where: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., diversity: _Optional[_Union[Diversity, _Mapping]] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., approximate: _Optional[_Union[ApproximateSearch, _Mapping]] = ..., rerank: _Optional[_Union[RecommendRerank, _Mapping]] = ..., score_formula: _Optional[_Union[ScoreFormula, _Mapping]] = ...) -> None: ...

class RecommendRerank(_message.Message):
    __slots__ = ("candidates", "model", "query")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    candidates: int
    model: str
    query: str
    def __init__(self, candidates: _Optional[int] = ..., model: _Optional[str] = ..., query: _Optional[str] = ...) -> None: ...

class ApproximateSearch(_message.Message):
    __slots__ = ("ef", "nprobe")
    EF_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    ef: int
    nprobe: int
    def __init__(self, ef: _Optional[int] = ..., nprobe: _Optional[int] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("field", "any_of", "none_of", "gte", "gt", "lte", "lt")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    NONE_OF_FIELD_NUMBER: _ClassVar[int]
    GTE_FIELD_NUMBER: _ClassVar[int]
    GT_FIELD_NUMBER: _ClassVar[int]
    LTE_FIELD_NUMBER: _ClassVar[int]
    LT_FIELD_NUMBER: _ClassVar[int]
    field: str
    any_of: _containers.RepeatedScalarFieldContainer[str]
    none_of: _containers.RepeatedScalarFieldContainer[str]
    gte: float
    gt: float
    lte: float
    lt: float
    def __init__(self, field: _Optional[str] = ..., any_of: _Optional[_Iterable[str]] = ..., none_of: _Optional[_Iterable[str]] = ..., gte: _Optional[float] = ..., gt: _Optional[float] = ..., lte: _Optional[float] = ..., lt: _Optional[float] = ...) -> None: ...

class Diversity(_message.Message):
    __slots__ = ("field", "max_per_value")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MAX_PER_VALUE_FIELD_NUMBER: _ClassVar[int]
    field: str
    max_per_value: int
    def __init__(self, field: _Optional[str] = ..., max_per_value: _Optional[int] = ...) -> None: ...

class Contribution(_message.Message):
    __slots__ = ("part", "index", "item_id", "score")
    PART_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    part: ProfilePart
    index: int
    item_id: str
    score: float
    def __init__(self, part: _Optional[_Union[ProfilePart, str]] = ..., index: _Optional[int] = ..., item_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("id", "score", "top_contribution", "rerank_score", "similarity", "score_terms")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TOP_CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    RERANK_SCORE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_TERMS_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    top_contribution: Contribution
    rerank_score: float
    similarity: float
    score_terms: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., top_contribution: _Optional[_Union[Contribution, _Mapping]] = ..., rerank_score: _Optional[float] = ..., similarity: _Optional[float] = ..., score_terms: _Optional[_Iterable[float]] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "unknown_item_ids", "unknown_item_count", "warnings", "index_loading")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    INDEX_LOADING_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    unknown_item_count: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    index_loading: bool
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ..., unknown_item_count: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ..., index_loading: _Optional[bool] = ...) -> None: ...

class RecommendBatchRequest(_message.Message):
    __slots__ = ("users",)
    USERS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[RecommendRequest]
    def __init__(self, users: _Optional[_Iterable[_Union[RecommendRequest, _Mapping]]] = ...) -> None: ...

class RecommendBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RecommendResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[RecommendResponse, _Mapping]]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("model_name", "dim", "max_length", "pooling", "normalize", "provider", "model_sha256", "item_count", "items_sha256", "server_version", "max_texts_per_request", "max_chars_per_text", "max_total_chars", "max_k", "max_history_items", "max_exclude_ids", "runtime_version", "max_batch_size", "max_batch_tokens", "max_queued_texts", "server_instance", "items_filter_field", "max_batch_users", "max_filter_values", "instances", "tuning", "sessions", "prompts", "default_prompt_name", "query_prompt_name", "items_prompt_name", "max_offset", "hidden_item_count", "items_fields", "max_conditions", "items_scan", "items_code_bytes", "items_engine", "items_index", "items_approximate", "items_store_error", "models", "max_score_terms", "score_formula", "items_index_loading", "items_index_loading_detail", "items_live_recall", "items_live_recall_samples", "items_live_recall_k", "items_live_recall_error", "model_variant", "int8_target", "int8_agreement_fp32_items", "int8_agreement_int8_items", "items_precision", "int8_host_warning")
    class PromptsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ItemsFieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_SHA256_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXTS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_CHARS_PER_TEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOTAL_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    MAX_HISTORY_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_EXCLUDE_IDS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_TEXTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FILTER_FIELD_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_USERS_FIELD_NUMBER: _ClassVar[int]
    MAX_FILTER_VALUES_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    TUNING_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    QUERY_PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELDS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_SCAN_FIELD_NUMBER: _ClassVar[int]
    ITEMS_CODE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ITEMS_ENGINE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_INDEX_FIELD_NUMBER: _ClassVar[int]
    ITEMS_APPROXIMATE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_STORE_ERROR_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_SCORE_TERMS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FORMULA_FIELD_NUMBER: _ClassVar[int]
    ITEMS_INDEX_LOADING_FIELD_NUMBER: _ClassVar[int]
    ITEMS_INDEX_LOADING_DETAIL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_LIVE_RECALL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_LIVE_RECALL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ITEMS_LIVE_RECALL_K_FIELD_NUMBER: _ClassVar[int]
    ITEMS_LIVE_RECALL_ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_VARIANT_FIELD_NUMBER: _ClassVar[int]
    INT8_TARGET_FIELD_NUMBER: _ClassVar[int]
    INT8_AGREEMENT_FP32_ITEMS_FIELD_NUMBER: _ClassVar[int]
    INT8_AGREEMENT_INT8_ITEMS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PRECISION_FIELD_NUMBER: _ClassVar[int]
    INT8_HOST_WARNING_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    dim: int
    max_length: int
    pooling: Pooling
    normalize: bool
    provider: str
    model_sha256: str
    item_count: int
    items_sha256: str
    server_version: str
    max_texts_per_request: int
    max_chars_per_text: int
    max_total_chars: int
    max_k: int
    max_history_items: int
    max_exclude_ids: int
    runtime_version: str
    max_batch_size: int
    max_batch_tokens: int
    max_queued_texts: int
    server_instance: str
    items_filter_field: str
    max_batch_users: int
    max_filter_values: int
    instances: int
    tuning: str
    sessions: int
    prompts: _containers.ScalarMap[str, str]
    default_prompt_name: str
    query_prompt_name: str
    items_prompt_name: str
    max_offset: int
    hidden_item_count: int
    items_fields: _containers.ScalarMap[str, str]
    max_conditions: int
    items_scan: str
    items_code_bytes: int
    items_engine: str
    items_index: str
    items_approximate: bool
    items_store_error: str
    models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    max_score_terms: int
    score_formula: str
    items_index_loading: bool
    items_index_loading_detail: str
    items_live_recall: float
    items_live_recall_samples: int
    items_live_recall_k: int
    items_live_recall_error: float
    model_variant: str
    int8_target: str
    int8_agreement_fp32_items: float
    int8_agreement_int8_items: float
    items_precision: str
    int8_host_warning: str
    def __init__(self, model_name: _Optional[str] = ..., dim: _Optional[int] = ..., max_length: _Optional[int] = ..., pooling: _Optional[_Union[Pooling, str]] = ..., normalize: _Optional[bool] = ..., provider: _Optional[str] = ..., model_sha256: _Optional[str] = ..., item_count: _Optional[int] = ..., items_sha256: _Optional[str] = ..., server_version: _Optional[str] = ..., max_texts_per_request: _Optional[int] = ..., max_chars_per_text: _Optional[int] = ..., max_total_chars: _Optional[int] = ..., max_k: _Optional[int] = ..., max_history_items: _Optional[int] = ..., max_exclude_ids: _Optional[int] = ..., runtime_version: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., max_batch_tokens: _Optional[int] = ..., max_queued_texts: _Optional[int] = ..., server_instance: _Optional[str] = ..., items_filter_field: _Optional[str] = ..., max_batch_users: _Optional[int] = ..., max_filter_values: _Optional[int] = ..., instances: _Optional[int] = ..., tuning: _Optional[str] = ..., sessions: _Optional[int] = ..., prompts: _Optional[_Mapping[str, str]] = ..., default_prompt_name: _Optional[str] = ..., query_prompt_name: _Optional[str] = ..., items_prompt_name: _Optional[str] = ..., max_offset: _Optional[int] = ..., hidden_item_count: _Optional[int] = ..., items_fields: _Optional[_Mapping[str, str]] = ..., max_conditions: _Optional[int] = ..., items_scan: _Optional[str] = ..., items_code_bytes: _Optional[int] = ..., items_engine: _Optional[str] = ..., items_index: _Optional[str] = ..., items_approximate: _Optional[bool] = ..., items_store_error: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ..., max_score_terms: _Optional[int] = ..., score_formula: _Optional[str] = ..., items_index_loading: _Optional[bool] = ..., items_index_loading_detail: _Optional[str] = ..., items_live_recall: _Optional[float] = ..., items_live_recall_samples: _Optional[int] = ..., items_live_recall_k: _Optional[int] = ..., items_live_recall_error: _Optional[float] = ..., model_variant: _Optional[str] = ..., int8_target: _Optional[str] = ..., int8_agreement_fp32_items: _Optional[float] = ..., int8_agreement_int8_items: _Optional[float] = ..., items_precision: _Optional[str] = ..., int8_host_warning: _Optional[str] = ...) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("name", "task", "model_name", "dim", "max_length", "onnx_sha256", "activation", "variant", "int8_target", "int8_agreement", "int8_host_warning")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ONNX_SHA256_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    INT8_TARGET_FIELD_NUMBER: _ClassVar[int]
    INT8_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    INT8_HOST_WARNING_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: str
    model_name: str
    dim: int
    max_length: int
    onnx_sha256: str
    activation: str
    variant: str
    int8_target: str
    int8_agreement: float
    int8_host_warning: str
    def __init__(self, name: _Optional[str] = ..., task: _Optional[str] = ..., model_name: _Optional[str] = ..., dim: _Optional[int] = ..., max_length: _Optional[int] = ..., onnx_sha256: _Optional[str] = ..., activation: _Optional[str] = ..., variant: _Optional[str] = ..., int8_target: _Optional[str] = ..., int8_agreement: _Optional[float] = ..., int8_host_warning: _Optional[str] = ...) -> None: ...

class ItemFieldValue(_message.Message):
    __slots__ = ("values", "number")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    values: StringList
    number: float
    def __init__(self, values: _Optional[_Union[StringList, _Mapping]] = ..., number: _Optional[float] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class ItemUpsert(_message.Message):
    __slots__ = ("id", "text", "vector", "fields")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ItemFieldValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ItemFieldValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    vector: FloatList
    fields: _containers.MessageMap[str, ItemFieldValue]
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., vector: _Optional[_Union[FloatList, _Mapping]] = ..., fields: _Optional[_Mapping[str, ItemFieldValue]] = ...) -> None: ...

class FloatList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ItemUpsert]
    def __init__(self, items: _Optional[_Iterable[_Union[ItemUpsert, _Mapping]]] = ...) -> None: ...

class UpsertItemsResponse(_message.Message):
    __slots__ = ("inserted", "updated", "item_count")
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    inserted: int
    updated: int
    item_count: int
    def __init__(self, inserted: _Optional[int] = ..., updated: _Optional[int] = ..., item_count: _Optional[int] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteItemsResponse(_message.Message):
    __slots__ = ("deleted", "unknown_ids", "item_count")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_IDS_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    unknown_ids: _containers.RepeatedScalarFieldContainer[str]
    item_count: int
    def __init__(self, deleted: _Optional[int] = ..., unknown_ids: _Optional[_Iterable[str]] = ..., item_count: _Optional[int] = ...) -> None: ...

class HideItemsRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RestoreItemsRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ItemVisibilityResponse(_message.Message):
    __slots__ = ("changed", "unknown_ids", "hidden_count")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_IDS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    changed: int
    unknown_ids: _containers.RepeatedScalarFieldContainer[str]
    hidden_count: int
    def __init__(self, changed: _Optional[int] = ..., unknown_ids: _Optional[_Iterable[str]] = ..., hidden_count: _Optional[int] = ...) -> None: ...

class ListHiddenItemsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListHiddenItemsResponse(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReloadItemsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadItemsResponse(_message.Message):
    __slots__ = ("items_sha256", "item_count", "previous_items_sha256", "changed")
    ITEMS_SHA256_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_ITEMS_SHA256_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    items_sha256: str
    item_count: int
    previous_items_sha256: str
    changed: bool
    def __init__(self, items_sha256: _Optional[str] = ..., item_count: _Optional[int] = ..., previous_items_sha256: _Optional[str] = ..., changed: _Optional[bool] = ...) -> None: ...

class ScoreFormula(_message.Message):
    __slots__ = ("terms", "expression")
    TERMS_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.RepeatedCompositeFieldContainer[ScoreTerm]
    expression: str
    def __init__(self, terms: _Optional[_Iterable[_Union[ScoreTerm, _Mapping]]] = ..., expression: _Optional[str] = ...) -> None: ...

class ScoreTerm(_message.Message):
    __slots__ = ("field", "function", "weight", "origin", "origin_now", "scale", "offset", "decay", "missing")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_NOW_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DECAY_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    field: str
    function: ScoreFunction
    weight: float
    origin: float
    origin_now: bool
    scale: float
    offset: float
    decay: float
    missing: float
    def __init__(self, field: _Optional[str] = ..., function: _Optional[_Union[ScoreFunction, str]] = ..., weight: _Optional[float] = ..., origin: _Optional[float] = ..., origin_now: _Optional[bool] = ..., scale: _Optional[float] = ..., offset: _Optional[float] = ..., decay: _Optional[float] = ..., missing: _Optional[float] = ...) -> None: ...
