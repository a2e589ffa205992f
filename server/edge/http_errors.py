"""Refusals in the error shapes of the dialects the HTTP edge speaks beside OpenAI's.

- TEI (text-embeddings-inference's routes: /embed, /, /rerank, /tokenize, /info):
  `{"error": message, "error_type": ...}` with TEI's status codes: 422 Validation for bad input,
  424 Backend for a route the served models cannot answer (TEI's "not a re-ranker"), 429
  Overloaded, 503 Unhealthy; other refusals keep the edge's HTTP status (401, 404, 408, 413, 415,
  504, 500), typed Validation below 500 and Backend from 500.
- Cohere (/v2/embed, /v2/rerank): `{"message": message}` with the edge's HTTP status, which the
  cohere SDK turns into its typed errors (BadRequestError, TooManyRequestsError, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from embedrec.server.errors import bounded

# gRPC status name -> (HTTP status, TEI error_type), where TEI's differ from the edge's.
TEI_STATUS: dict[str, tuple[int, str]] = {
    "INVALID_ARGUMENT": (422, "Validation"),
    "FAILED_PRECONDITION": (424, "Backend"),
    "RESOURCE_EXHAUSTED": (429, "Overloaded"),
    "UNAVAILABLE": (503, "Unhealthy"),
}


def tei_error(status: str, message: str, http_status: int) -> tuple[int, bytes]:
    """(HTTP status, body) of a refusal with `status` (a gRPC status name) on a TEI route;
    `http_status`: the edge's own status for it."""
    code, error_type = TEI_STATUS.get(status, (http_status, "Validation" if http_status < 500 else "Backend"))
    return code, orjson.dumps({"error": bounded(message), "error_type": error_type})


def cohere_error(status: str, message: str, http_status: int) -> tuple[int, bytes]:
    """(HTTP status, body) of a refusal on a Cohere route: the edge's status, Cohere's shape."""
    return http_status, orjson.dumps({"message": bounded(message)})


ERROR_DIALECTS: dict[str, Callable[[str, str, int], tuple[int, bytes]]] = {"tei": tei_error, "cohere": cohere_error}
