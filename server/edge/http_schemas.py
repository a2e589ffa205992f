"""JSON Schemas (OpenAPI 3.1 dialect) of the HTTP routes' request and response bodies that are
not a proto message's JSON mapping (those are derived from the descriptors: `openapi`).

Optional request fields also take null (an explicit null means unset on every JSON route);
responses leave out an optional field rather than send null.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}


def array(items: Schema, **extra: Any) -> Schema:
    """An array of `items`."""
    return {"type": "array", "items": items, **extra}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None, *, request: bool = False) -> Schema:
    """An object with `required` and `optional` properties; in a request (`request`), each
    optional property also takes null."""
    optional = optional or {}
    if request:
        optional = {name: {"anyOf": [schema, {"type": "null"}]} for name, schema in optional.items()}
    schema: Schema = {"type": "object", "properties": {**required, **optional}}
    if required:
        schema["required"] = list(required)
    return schema


def one_or_many(item: Schema) -> Schema:
    """`item`, or a non-empty list of them."""
    return {"oneOf": [item, array(item, minItems=1)]}


# `param`: the wire path of the request field the refusal is about (docs/errors.md), else null.
PARAM: Schema = {"anyOf": [STRING, {"type": "null"}]}
OPENAI_ERROR = obj({"error": obj({"message": STRING, "type": STRING, "param": PARAM, "code": STRING})})
TEI_ERROR = obj(
    {
        "error": STRING,
        "error_type": {"enum": ["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]},
    }
)
COHERE_ERROR = obj({"message": STRING})
ERRORS = {"openai": OPENAI_ERROR, "tei": TEI_ERROR, "cohere": COHERE_ERROR}

OPENAI_EMBEDDINGS_REQUEST = obj(
    {"input": one_or_many(STRING), "model": STRING},
    {
        "encoding_format": {"enum": ["float", "base64"]},
        "dimensions": INTEGER,
        "user": STRING,
        "prompt_name": STRING,
    },
    request=True,
)
OPENAI_EMBEDDINGS_RESPONSE = obj(
    {
        "object": {"const": "list"},
        "data": array(
            obj(
                {
                    "object": {"const": "embedding"},
                    "index": INTEGER,
                    "embedding": {"oneOf": [array(NUMBER), STRING]},
                }
            )
        ),
        "model": STRING,
        "usage": obj({"prompt_tokens": INTEGER, "total_tokens": INTEGER}),
    }
)
MODELS_RESPONSE = obj(
    {
        "object": {"const": "list"},
        "data": array(
            obj(
                {
                    "id": STRING,
                    "object": {"const": "model"},
                    "created": INTEGER,
                    "owned_by": STRING,
                    "task": {"enum": ["embed", "rerank"]},
                }
            )
        ),
    }
)
DOCUMENTS = array({"oneOf": [STRING, obj({"text": STRING})]}, minItems=1)
RERANK_REQUEST = obj(
    {"query": STRING, "documents": DOCUMENTS},
    {"model": STRING, "top_n": INTEGER, "return_documents": BOOLEAN},
    request=True,
)
RERANK_RESULT = obj({"index": INTEGER, "relevance_score": NUMBER}, {"document": obj({"text": STRING})})
RERANK_RESPONSE = obj({"model": STRING, "usage": obj({"total_tokens": INTEGER}), "results": array(RERANK_RESULT)})

TEI_RERANK_REQUEST = obj(
    {"query": STRING, "texts": array(STRING, minItems=1)},
    {
        "raw_scores": BOOLEAN,
        "return_text": BOOLEAN,
        "truncate": BOOLEAN,
        "truncation_direction": {"enum": ["Left", "Right", "left", "right"]},
    },
    request=True,
)
TEI_RERANK_RESPONSE = array(obj({"index": INTEGER, "score": NUMBER}, {"text": STRING}))
TEI_EMBED_REQUEST = obj(
    {"inputs": one_or_many(STRING)},
    {
        "normalize": BOOLEAN,
        "truncate": BOOLEAN,
        "truncation_direction": {"enum": ["Left", "Right", "left", "right"]},
        "prompt_name": STRING,
        "dimensions": INTEGER,
    },
    request=True,
)
TEI_EMBED_RESPONSE = array(array(NUMBER))
TEI_TOKENIZE_REQUEST = obj(
    {"inputs": one_or_many(STRING)}, {"add_special_tokens": BOOLEAN, "prompt_name": STRING}, request=True
)
NULLABLE_INTEGER: Schema = {"type": ["integer", "null"]}
TEI_TOKENIZE_RESPONSE = array(
    array(obj({"id": INTEGER, "text": STRING, "special": BOOLEAN, "start": NULLABLE_INTEGER, "stop": NULLABLE_INTEGER}))
)
TEI_INFO_RESPONSE = obj(
    {
        "model_id": STRING,
        "model_dtype": STRING,
        "served_model_name": STRING,
        "model_type": obj({"embedding": obj({"pooling": STRING})}),
        "max_concurrent_requests": INTEGER,
        "max_input_length": INTEGER,
        "max_batch_tokens": INTEGER,
        "max_batch_requests": INTEGER,
        "max_client_batch_size": INTEGER,
        "auto_truncate": BOOLEAN,
        "tokenization_workers": INTEGER,
        "version": STRING,
    }
)

COHERE_META = obj({"api_version": obj({"version": STRING})}, {"billed_units": {"type": "object"}})
COHERE_EMBED_REQUEST = obj(
    {"texts": array(STRING, minItems=1)},
    {
        "model": STRING,
        "input_type": {"enum": ["search_query", "search_document", "classification", "clustering"]},
        "embedding_types": array({"enum": ["float", "int8", "uint8", "binary", "ubinary", "base64"]}, minItems=1),
        "output_dimension": INTEGER,
        "truncate": {"enum": ["END", "START", "NONE"]},
        "max_tokens": INTEGER,
        "priority": INTEGER,
    },
    request=True,
)
INTEGER_ROWS = array(array(INTEGER))
COHERE_EMBED_RESPONSE = obj(
    {
        "id": STRING,
        "embeddings": obj(
            {},
            {
                "float": array(array(NUMBER)),
                "int8": INTEGER_ROWS,
                "uint8": INTEGER_ROWS,
                "binary": INTEGER_ROWS,
                "ubinary": INTEGER_ROWS,
                "base64": array(STRING),
            },
        ),
        "meta": COHERE_META,
        "response_type": {"const": "embeddings_by_type"},
    }
)
COHERE_RERANK_REQUEST = obj(
    {"query": STRING, "documents": DOCUMENTS},
    {"model": STRING, "top_n": INTEGER, "max_tokens_per_doc": INTEGER, "return_documents": BOOLEAN},
    request=True,
)
COHERE_RERANK_RESPONSE = obj({"id": STRING, "results": array(RERANK_RESULT), "meta": COHERE_META})
HEALTH_RESPONSE = obj({"status": {"const": "SERVING"}})
OPENAPI_RESPONSE: Schema = {"type": "object", "required": ["openapi", "paths"]}
