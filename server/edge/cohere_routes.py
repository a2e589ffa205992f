"""Cohere's v2 API: POST /v2/embed and POST /v2/rerank, as `cohere.ClientV2(base_url=...)` and
langchain-cohere call them. Refusals take Cohere's error shape (`http_errors.cohere_error`); an
explicit null means unset (the SDK sends nulls for options left out).

/v2/embed: `input_type` picks the model's prompt (search_query: the query prompt, search_document:
the document prompt, classification and clustering: none; unset: the model's default);
`embedding_types` any of float, int8, uint8, binary, ubinary (the rules of
`embedrec.server.inference.quantization`) and base64 (float32 little-endian bytes);
`output_dimension` Matryoshka dimensions; `truncate` END (default), START or NONE (a text past
the model's max length is refused); `max_tokens` a shorter cut. The response leaves out `texts`
(a response echoes little of its request).
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import numpy as np
import orjson

from embedrec.server.batching.offload import INLINE_JSON_MAX_FLOATS, INLINE_PARSE_MAX_BYTES
from embedrec.server.edge.http_api import HttpApi, _json_object, _Reply
from embedrec.server.edge.openai_routes import optional_count, required_string, rerank_documents
from embedrec.server.edge.tei_routes import optional_integer
from embedrec.server.errors import InvalidArgument, quoted
from embedrec.server.inference.pooling import FloatArray
from embedrec.server.inference.prompts import document_prompt_name, query_prompt_name
from embedrec.server.inference.quantization import CODE_TYPES, quantized
from embedrec.server.inference.tokenization import TruncationSide
from embedrec.server.manifest import ModelManifest
from embedrec.server.service import EmbeddingService

EMBEDDING_TYPES = ("float", *CODE_TYPES, "base64")
INPUT_TYPES = ("search_query", "search_document", "classification", "clustering")
# truncate -> (truncate at all, side cut).
TRUNCATE: dict[str, tuple[bool, TruncationSide]] = {
    "END": (True, "right"),
    "START": (True, "left"),
    "NONE": (False, "right"),
}
API_VERSION = {"version": "2"}


async def embed(api: HttpApi, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
    """POST /v2/embed: {model, texts, input_type?, embedding_types?, output_dimension?, truncate?,
    max_tokens?} -> {id, embeddings: {type: [...] per text}, meta, response_type}."""
    request = await _request(service, body, 1)
    for unsupported in ("images", "inputs"):
        if unsupported in request:
            raise InvalidArgument(
                f"{unsupported} is not supported here; send texts (a list of strings)", field=unsupported
            )
    texts = request.get("texts")
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise InvalidArgument("texts is required: a list of strings", field="texts")
    model = request.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidArgument("model must be a string", field="model")
    embedder = service.models.embedder(model or "")
    types = _embedding_types(request.get("embedding_types"))
    truncate, side = _truncate(request.get("truncate"))
    result = await embedder.embed(
        texts,
        truncate=truncate,
        side=side,
        prompt_name=_prompt_name(request.get("input_type"), embedder.encoder.manifest),
        dimensions=optional_integer(request, "output_dimension"),
        max_tokens=optional_integer(request, "max_tokens"),
        timeout=timeout,
    )
    vectors = result.vectors
    reply = await service.cpu.run_unless_small(
        vectors.size * len(types) <= INLINE_JSON_MAX_FLOATS, _embed_body, vectors, types, sum(result.token_counts)
    )
    return _Reply(reply), texts


async def rerank(api: HttpApi, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
    """POST /v2/rerank: {model, query, documents: [str | {text}], top_n?, max_tokens_per_doc?,
    return_documents?} -> {id, results: [{index, relevance_score, document?}], meta}."""
    request = await _request(service, body, 2)
    query = required_string(request, "query")
    limit = service.limits.max_texts_per_request - 1
    documents = rerank_documents(request.get("documents"), "documents", limit, text_key="text")
    top_n = optional_count(request, "top_n")
    max_tokens = optional_count(request, "max_tokens_per_doc")
    return_documents = request.get("return_documents", False)
    if not isinstance(return_documents, bool):
        raise InvalidArgument(
            f"return_documents must be true or false, got {quoted(return_documents)}", field="return_documents"
        )
    model = request.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidArgument("model must be a string", field="model")
    reranker = service.models.reranker(model or "")
    result = await reranker.rerank(query, documents, top_n=top_n, timeout=timeout, max_document_tokens=max_tokens)
    results = [
        {"index": hit.index, "relevance_score": hit.score}
        | ({"document": {"text": documents[hit.index]}} if return_documents else {})
        for hit in result.hits
    ]
    meta = {"api_version": API_VERSION, "billed_units": {"search_units": 1}, "tokens": {"input_tokens": result.tokens}}
    return _Reply(orjson.dumps({"id": uuid.uuid4().hex, "results": results, "meta": meta})), [query, *documents]


async def _request(service: EmbeddingService, body: bytes, texts_per_entry: int) -> dict[str, Any]:
    limit = service.limits.max_texts_per_request
    request: dict[str, Any] = await service.cpu.run_unless_small(
        len(body) <= INLINE_PARSE_MAX_BYTES, _json_object, body, limit, texts_per_entry * limit + 16
    )
    return request


def _embedding_types(value: object) -> list[str]:
    """Cohere's embedding_types (unset: ["float"]), each known, without repeats."""
    if value is None:
        return ["float"]
    if not isinstance(value, list) or not value or len(value) > len(EMBEDDING_TYPES):
        raise InvalidArgument(
            f"embedding_types must be a list of 1 to {len(EMBEDDING_TYPES)} of {EMBEDDING_TYPES}",
            field="embedding_types",
        )
    for entry in value:
        if entry not in EMBEDDING_TYPES:
            raise InvalidArgument(
                f"embedding_types has {quoted(entry)}; use any of {', '.join(EMBEDDING_TYPES)}", field="embedding_types"
            )
    return list(dict.fromkeys(value))


def _truncate(value: object) -> tuple[bool, TruncationSide]:
    if value is None:
        return TRUNCATE["END"]
    if not isinstance(value, str) or value.upper() not in TRUNCATE:
        raise InvalidArgument(f"truncate must be END, START or NONE, got {quoted(value)}", field="truncate")
    return TRUNCATE[value.upper()]


def _prompt_name(input_type: object, manifest: ModelManifest) -> str | None:
    """The prompt an input_type asks for (None: the model's default)."""
    if input_type is None:
        return None
    if input_type == "search_query":
        return query_prompt_name(manifest)
    if input_type == "search_document":
        return document_prompt_name(manifest)
    if input_type in ("classification", "clustering"):
        return ""
    raise InvalidArgument(
        f"input_type must be one of {', '.join(INPUT_TYPES)}, got {quoted(input_type)}", field="input_type"
    )


def _embed_body(vectors: FloatArray, types: list[str], tokens: int) -> bytes:
    embeddings: dict[str, Any] = {}
    for kind in types:
        if kind == "float":
            embeddings["float"] = vectors
        elif kind == "base64":
            rows = np.ascontiguousarray(vectors, dtype="<f4")
            embeddings["base64"] = [base64.b64encode(row.tobytes()).decode("ascii") for row in rows]
        else:
            embeddings[kind] = quantized(vectors, kind)  # type: ignore[arg-type]
    document = {
        "id": uuid.uuid4().hex,
        "embeddings": embeddings,
        "meta": {"api_version": API_VERSION, "billed_units": {"input_tokens": tokens}},
        "response_type": "embeddings_by_type",
    }
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
