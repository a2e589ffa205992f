"""The HTTP edge's one route table: what `HttpApi` dispatches on and GET /openapi.json describes.

Dialects (the error shape of each route's refusals): OpenAI's for /v1/* and /health, TEI's for
its routes (/embed, /, /rerank, /tokenize, /info), Cohere's for /v2/*. docs/http-dialects.md says
which client library reaches which route by which setting.
"""

from __future__ import annotations

from typing import Any

from embedrec.server.edge import cohere_routes, http_schemas, openai_routes, tei_routes
from embedrec.server.edge.http_api import Handler, HttpApi, Route, RouteTable
from embedrec.server.edge.openapi import MODEL_PLACEHOLDER, openapi_json
from embedrec.v1 import embedrec_pb2 as pb

TEXTS = ["energy saving air conditioner", "running shoes"]
QUERY = "shoes for running"


def _post(name: str, handle: Handler, summary: str, request: Any, response: Any, example: Any, dialect: str) -> Route:
    return Route(
        "POST", name, handle, dialect=dialect, summary=summary, request=request, response=response, example=example
    )


def _rpc(rpc: str, name: str, handle: Handler, example: Any) -> Route:
    """The JSON mirror of the embedrec.v1 RPC `rpc`: its request and response messages."""
    request, response = getattr(pb, f"{rpc}Request").DESCRIPTOR, getattr(pb, f"{rpc}Response").DESCRIPTOR
    return _post(name, handle, f"embedrec.v1 {rpc}", request, response, example, "openai")


_HEALTH = Route(
    "GET", "health", HttpApi.health, probe=True, summary="200 while serving", response=http_schemas.HEALTH_RESPONSE
)
_TEI_EMBED = (http_schemas.TEI_EMBED_REQUEST, http_schemas.TEI_EMBED_RESPONSE, {"inputs": TEXTS, "normalize": True})

ROUTES: RouteTable = {
    "/v1/embeddings": {
        "POST": _post(
            "embeddings",
            openai_routes.embeddings,
            "OpenAI embeddings",
            http_schemas.OPENAI_EMBEDDINGS_REQUEST,
            http_schemas.OPENAI_EMBEDDINGS_RESPONSE,
            {"model": MODEL_PLACEHOLDER, "input": TEXTS, "encoding_format": "float"},
            "openai",
        )
    },
    "/v1/models": {
        "GET": Route(
            "GET", "models", openai_routes.models, summary="OpenAI models", response=http_schemas.MODELS_RESPONSE
        )
    },
    "/v1/embed": {"POST": _rpc("Embed", "embed", HttpApi.embed, {"texts": TEXTS})},
    "/v1/similarity": {
        "POST": _rpc("Similarity", "similarity", HttpApi.similarity, {"query": QUERY, "candidates": TEXTS})
    },
    "/v1/recommend": {"POST": _rpc("Recommend", "recommend", HttpApi.recommend, {"k": 3, "texts": [{"text": QUERY}]})},
    "/v1/recommend-batch": {
        "POST": _rpc(
            "RecommendBatch",
            "recommend_batch",
            HttpApi.recommend_batch,
            {"users": [{"k": 2, "texts": [{"text": QUERY}]}]},
        )
    },
    "/v1/info": {
        "GET": Route("GET", "info", HttpApi.info, summary="embedrec.v1 Info", response=pb.InfoResponse.DESCRIPTOR)
    },
    "/v1/rerank": {
        "POST": _post(
            "rerank",
            openai_routes.rerank,
            "Cohere v1 / Jina rerank",
            http_schemas.RERANK_REQUEST,
            http_schemas.RERANK_RESPONSE,
            {"query": QUERY, "documents": TEXTS, "top_n": 1, "return_documents": True},
            "openai",
        )
    },
    "/rerank": {
        "POST": _post(
            "rerank",
            tei_routes.rerank,
            "TEI rerank",
            http_schemas.TEI_RERANK_REQUEST,
            http_schemas.TEI_RERANK_RESPONSE,
            {"query": QUERY, "texts": TEXTS, "return_text": True},
            "tei",
        )
    },
    "/embed": {"POST": _post("embed", tei_routes.embed, "TEI embed", *_TEI_EMBED, "tei")},
    "/": {
        "GET": _HEALTH,
        "POST": _post("embed", tei_routes.embed, "TEI's route of the served task: embeds", *_TEI_EMBED, "tei"),
    },
    "/tokenize": {
        "POST": _post(
            "tokenize",
            tei_routes.tokenize,
            "TEI tokenize",
            http_schemas.TEI_TOKENIZE_REQUEST,
            http_schemas.TEI_TOKENIZE_RESPONSE,
            {"inputs": "héllo wörld"},
            "tei",
        )
    },
    "/info": {
        "GET": Route(
            "GET", "info", tei_routes.info, dialect="tei", summary="TEI info", response=http_schemas.TEI_INFO_RESPONSE
        )
    },
    "/v2/embed": {
        "POST": _post(
            "embed",
            cohere_routes.embed,
            "Cohere v2 embed",
            http_schemas.COHERE_EMBED_REQUEST,
            http_schemas.COHERE_EMBED_RESPONSE,
            {"texts": TEXTS, "input_type": "search_document", "embedding_types": ["float", "int8", "ubinary"]},
            "cohere",
        )
    },
    "/v2/rerank": {
        "POST": _post(
            "rerank",
            cohere_routes.rerank,
            "Cohere v2 rerank",
            http_schemas.COHERE_RERANK_REQUEST,
            http_schemas.COHERE_RERANK_RESPONSE,
            {"query": QUERY, "documents": TEXTS, "top_n": None, "max_tokens_per_doc": 32},
            "cohere",
        )
    },
    "/health": {"GET": _HEALTH},
    "/openapi.json": {
        "GET": Route(
            "GET", "openapi", openapi_json, probe=True, summary="this document", response=http_schemas.OPENAPI_RESPONSE
        )
    },
}
