"""text-embeddings-inference's HTTP API: POST /embed, POST / (embed: the default model is
always an embedding model), POST /tokenize and GET /info, with TEI's request fields and response
shapes, and POST /rerank (the first reranker served). Refusals take TEI's error shape
(`http_errors.tei_error`); an explicit null means unset, as everywhere on the JSON routes.

Differences from TEI, by design: `truncate` unset means true (TEI: its --auto-truncate);
`prompt_name` unset means the model's default prompt (as /v1/embed); token-id inputs are refused
(send text).
"""

from __future__ import annotations

from typing import Any

import orjson

from embedrec.server.batching.offload import INLINE_PARSE_MAX_BYTES, INLINE_TOKENIZE_MAX_CHARS
from embedrec.server.edge.http_api import HttpApi, _dumps, _json_object, _Reply
from embedrec.server.edge.openai_routes import optional_flag, required_string, rerank_documents
from embedrec.server.errors import InvalidArgument, quoted
from embedrec.server.inference.prompts import prompt_text, with_prompt
from embedrec.server.inference.tokenization import TokenSpan, TruncationSide
from embedrec.server.limits import check_texts
from embedrec.server.service import EmbeddingService

TRUNCATION_SIDES: dict[str, TruncationSide] = {"right": "right", "left": "left"}


async def embed(api: HttpApi, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
    """POST /embed and POST / (TEI): {inputs: str | [str], normalize?, truncate?,
    truncation_direction?, prompt_name?, dimensions?} -> [[float, ...], ...], in input order."""
    request = await _request(service, body)
    texts = tei_inputs(request.get("inputs"), service.limits.max_texts_per_request)
    result = await service.models.default.embed(
        texts,
        normalize=flag(request, "normalize", default=True),
        truncate=flag(request, "truncate", default=True),
        side=truncation_side(request.get("truncation_direction")),
        prompt_name=optional_string(request, "prompt_name"),
        dimensions=optional_integer(request, "dimensions"),
        timeout=timeout,
        field_name="inputs",
    )
    return _Reply(await _dumps(service, result.vectors, result.vectors.size)), texts


async def rerank(api: HttpApi, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
    """POST /rerank (text-embeddings-inference's shape): {query, texts, raw_scores?,
    return_text?} -> [{index, score, text?}], best first; the first reranker served."""
    limit = service.limits.max_texts_per_request
    request = await service.cpu.run_unless_small(
        len(body) <= INLINE_PARSE_MAX_BYTES, _json_object, body, limit, limit + 16
    )
    query = required_string(request, "query")
    texts = rerank_documents(request.get("texts"), "texts", limit - 1, text_key=None)
    raw_scores = optional_flag(request, "raw_scores")
    return_text = optional_flag(request, "return_text")
    reranker = service.models.reranker("")
    result = await reranker.rerank(query, texts, raw_scores=raw_scores, timeout=timeout)
    reply = [
        {"index": hit.index, "score": hit.score} | ({"text": texts[hit.index]} if return_text else {})
        for hit in result.hits
    ]
    return _Reply(orjson.dumps(reply)), [query, *texts]


async def tokenize(api: HttpApi, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
    """POST /tokenize (TEI): {inputs: str | [str], add_special_tokens?, prompt_name?} ->
    [[{id, text, special, start, stop}, ...], ...]: start and stop are UTF-8 byte offsets into
    the text (prompt included), null for a special token, as TEI answers."""
    request = await _request(service, body)
    texts = tei_inputs(request.get("inputs"), service.limits.max_texts_per_request)
    check_texts(texts, service.limits, field="inputs")
    add_special_tokens = flag(request, "add_special_tokens", default=True)
    manifest = service.models.encoder.manifest
    prompted = with_prompt(prompt_text(manifest, optional_string(request, "prompt_name")), texts)
    encoder = service.models.encoder

    def spans() -> bytes:
        rows = [encoder.token_spans(text, add_special_tokens=add_special_tokens) for text in prompted]
        return orjson.dumps([[_token(span) for span in row] for row in rows])

    characters = sum(len(text) for text in prompted)
    reply = await service.cpu.run_unless_small(characters <= INLINE_TOKENIZE_MAX_CHARS, spans)
    return _Reply(reply), texts


async def info(api: HttpApi, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
    """GET /info (TEI): the default model and the router's limits in TEI's Info shape."""
    described = service.info()
    document = {
        "model_id": described.model_name,
        "model_dtype": "float32",
        "served_model_name": described.model_name,
        "model_type": {"embedding": {"pooling": described.pooling}},
        "max_concurrent_requests": described.max_queued_texts,
        "max_input_length": described.max_length,
        "max_batch_tokens": described.max_batch_tokens,
        "max_batch_requests": described.max_batch_size,
        "max_client_batch_size": described.limits.max_texts_per_request,
        "auto_truncate": True,
        "tokenization_workers": 1,
        "version": described.server_version,
    }
    return _Reply(orjson.dumps(document)), None


async def _request(service: EmbeddingService, body: bytes) -> dict[str, Any]:
    limit = service.limits.max_texts_per_request
    request: dict[str, Any] = await service.cpu.run_unless_small(
        len(body) <= INLINE_PARSE_MAX_BYTES, _json_object, body, limit, limit + 16
    )
    return request


def tei_inputs(value: object, limit: int) -> list[str]:
    """TEI's `inputs`: a string or a list of at most `limit` strings, the count checked before
    any entry is looked at; token ids are refused."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise InvalidArgument("inputs is required: a string or a list of strings", field="inputs")
    if len(value) > limit:
        raise InvalidArgument(
            f"inputs has {len(value)} texts; the limit is {limit} (max_texts_per_request)", field="inputs"
        )
    if value and all(isinstance(text, str) for text in value):
        return value
    if value and all(isinstance(entry, int | list) for entry in value):
        raise InvalidArgument(
            "inputs as token ids is not supported; send text (a string or a list of strings)", field="inputs"
        )
    raise InvalidArgument("inputs must be a non-empty string or a non-empty list of strings", field="inputs")


def truncation_side(value: object) -> TruncationSide:
    """TEI's truncation_direction (Left/Right, any case; unset: right)."""
    if value is None:
        return "right"
    side = TRUNCATION_SIDES.get(value.lower()) if isinstance(value, str) else None
    if side is None:
        raise InvalidArgument(
            f"truncation_direction must be 'Left' or 'Right', got {quoted(value)}", field="truncation_direction"
        )
    return side


def flag(request: dict[str, Any], name: str, *, default: bool) -> bool:
    """The boolean field `name` (`default` when absent or null)."""
    value = request.get(name, default)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be true or false, got {quoted(value)}", field=name)
    return value


def optional_string(request: dict[str, Any], name: str) -> str | None:
    """The string field `name`, or None when absent or null."""
    value = request.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string, got {quoted(value)}", field=name)
    return value


def optional_integer(request: dict[str, Any], name: str) -> int | None:
    """The integer field `name`, or None when absent or null (a JSON number with no fraction)."""
    value = request.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name} must be an integer, got {quoted(value)}", field=name)
    return value


def _token(span: TokenSpan) -> dict[str, Any]:
    return {"id": span.id, "text": span.text, "special": span.special, "start": span.start, "stop": span.stop}
