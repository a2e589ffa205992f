"""OpenAI's routes on the HTTP edge (`http_api`): POST /v1/embeddings, GET /v1/models and POST
/v1/rerank (the Cohere v1/Jina rerank shape vLLM, LangChain and LlamaIndex speak), with the JSON
field readers the other dialects' routes share (`required_string`, `optional_flag`,
`optional_count`, `rerank_documents`). Refusals take OpenAI's error shape (`http_api.error_body`).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson

from embedrec.server.batching.offload import INLINE_JSON_MAX_FLOATS, INLINE_PARSE_MAX_BYTES
from embedrec.server.edge.http_api import JSON, HttpApi, _json_object, _Reply
from embedrec.server.edge.json_limits import quoted_number_hint
from embedrec.server.errors import InvalidArgument, quoted
from embedrec.server.inference.embedding import Embedder
from embedrec.server.service import EmbeddingService


async def embeddings(api: HttpApi, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
    """POST /v1/embeddings (OpenAI)."""
    limit = service.limits.max_texts_per_request
    request = await service.cpu.run_unless_small(
        len(body) <= INLINE_PARSE_MAX_BYTES, _json_object, body, limit, limit + 16
    )
    texts = _openai_input(request.get("input"), limit)
    embedder = _openai_model(request.get("model"), service)
    encoding = request.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise InvalidArgument(
            f"encoding_format must be 'float' or 'base64', got {quoted(encoding)}", field="encoding_format"
        )
    dimensions = request.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)):
        hint = quoted_number_hint(dimensions)
        raise InvalidArgument(f"dimensions must be an integer, got {quoted(dimensions)}{hint}", field="dimensions")
    if dimensions == 0:  # Infinity's (and infinity-client's default) "the full dimension"
        dimensions = None
    prompt_name = request.get("prompt_name")
    if prompt_name is not None and not isinstance(prompt_name, str):
        raise InvalidArgument("prompt_name must be a string", field="prompt_name")
    result = await embedder.embed(texts, prompt_name=prompt_name, dimensions=dimensions, timeout=timeout)
    tokens = sum(result.token_counts)
    reply = await service.cpu.run_unless_small(
        result.vectors.size <= INLINE_JSON_MAX_FLOATS,
        _openai_embeddings_body,
        result.vectors,
        encoding == "base64",
        request["model"],
        tokens,
    )
    return _Reply(reply), texts


async def models(api: HttpApi, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
    """GET /v1/models (OpenAI): every served model, the default first
    (`ServedModels.openai_cards`)."""
    return _Reply(orjson.dumps({"object": "list", "data": service.models.openai_cards()})), None


async def rerank(api: HttpApi, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
    """POST /v1/rerank (the Cohere/Jina shape vLLM and the LangChain/LlamaIndex clients
    speak): {model?, query, documents: [str | {text}], top_n?, return_documents?} ->
    {model, usage: {total_tokens}, results: [{index, relevance_score, document?: {text}}]}."""
    limit = service.limits.max_texts_per_request
    request = await service.cpu.run_unless_small(
        len(body) <= INLINE_PARSE_MAX_BYTES, _json_object, body, limit, 2 * limit + 16
    )
    query = required_string(request, "query")
    documents = rerank_documents(request.get("documents"), "documents", limit - 1, text_key="text")
    top_n = optional_count(request, "top_n")
    return_documents = optional_flag(request, "return_documents")
    model = request.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidArgument("model must be a string", field="model")
    reranker = service.models.reranker(model or "")
    result = await reranker.rerank(query, documents, top_n=top_n, timeout=timeout)
    results = [
        {"index": hit.index, "relevance_score": hit.score}
        | ({"document": {"text": documents[hit.index]}} if return_documents else {})
        for hit in result.hits
    ]
    reply = {"model": reranker.name, "usage": {"total_tokens": result.tokens}, "results": results}
    return _Reply(orjson.dumps(reply)), [query, *documents]


def _openai_input(value: object, limit: int) -> list[str]:
    """OpenAI's `input`: a string or a list of at most `limit` strings (token arrays are not
    served); the count is checked before any entry is looked at."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and len(value) > limit:
        raise InvalidArgument(
            f"input has {len(value)} texts; the limit is {limit} (max_texts_per_request)", field="input"
        )
    if isinstance(value, list) and value and all(isinstance(text, str) for text in value):
        return value
    if isinstance(value, list) and value and all(isinstance(token, int | list) for token in value):
        raise InvalidArgument(
            "input as token ids is not supported; send text (a string or a list of strings): with langchain-openai, "
            "OpenAIEmbeddings(check_embedding_ctx_length=False)",
            field="input",
        )
    if value is None:
        raise InvalidArgument("input is required: a string or a list of strings", field="input")
    raise InvalidArgument("input must be a non-empty string or a non-empty list of strings", field="input")


def _openai_model(model: object, service: EmbeddingService) -> Embedder:
    """The embedding model OpenAI's required `model` names (the default model also by the last
    path segment of its name: `ServedModels.embedder`); NotFound naming the served models otherwise."""
    if model is None:
        raise InvalidArgument(
            f"model is required; this server serves {', '.join(service.models.embedder_names())!r}", field="model"
        )
    if not isinstance(model, str) or not model:
        raise InvalidArgument("model must be a non-empty string (GET /v1/models lists them)", field="model")
    return service.models.embedder(model)


def required_string(request: dict[str, Any], name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} is required: a string", field=name)
    return value


def optional_flag(request: dict[str, Any], name: str) -> bool:
    value = request.get(name, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be true or false", field=name)
    return value


def optional_count(request: dict[str, Any], name: str) -> int:
    value = request.get(name)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgument(
            f"{name} must be a positive integer, got {quoted(value)}{quoted_number_hint(value)}", field=name
        )
    return value


def rerank_documents(value: object, field: str, limit: int, *, text_key: str | None) -> list[str]:
    """The documents to rerank: a list of at most `limit` strings (or {text_key: string}
    objects), the count checked before any entry is looked at."""
    if not isinstance(value, list) or not value:
        raise InvalidArgument(f"{field} is required: a list of 1 to {limit} strings", field=field)
    if len(value) > limit:
        raise InvalidArgument(
            f"{field} has {len(value)} entries; the limit is {limit} (max_texts_per_request - 1)", field=field
        )
    documents = []
    for index, entry in enumerate(value):
        if text_key is not None and isinstance(entry, dict):
            entry = entry.get(text_key)
        if not isinstance(entry, str):
            shape = f"a string or {{{text_key!r}: string}}" if text_key else "a string"
            raise InvalidArgument(f"{field}[{index}] must be {shape}", field=f"{field}[{index}]")
        documents.append(entry)
    return documents


def _openai_embeddings_body(vectors: np.ndarray, as_base64: bool, model: str, tokens: int) -> bytes:
    rows = np.ascontiguousarray(vectors, dtype="<f4")
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": base64.b64encode(row.tobytes()).decode("ascii") if as_base64 else row,
        }
        for index, row in enumerate(rows)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage}, option=JSON)
