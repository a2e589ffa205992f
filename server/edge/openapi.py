"""GET /openapi.json: an OpenAPI 3.1 description of the HTTP edge, generated from the route table
the server dispatches on (`http_routes.ROUTES`): every path and method, its request and response
bodies (hand-written JSON Schemas, or a proto message's JSON mapping derived from its
descriptor), its errors in the route's dialect, and an example request it answers 200.
"""

from __future__ import annotations

from typing import Any

import orjson
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from embedrec import __version__
from embedrec.server.edge.http_api import HttpApi, Route, RouteTable, _Reply
from embedrec.server.edge.http_schemas import ERRORS, Schema
from embedrec.server.service import EmbeddingService

MODEL_PLACEHOLDER = "{model}"  # in an example: the first served embedding model's name
ERROR_STATUSES = {
    "400": "bad request",
    "401": "missing or unknown bearer token",
    "404": "unknown model or item",
    "413": "body too large",
    "415": "body not JSON",
    "422": "invalid request (TEI routes)",
    "424": "the served models cannot answer (TEI routes)",
    "429": "overloaded (Retry-After)",
    "503": "starting or draining (Retry-After)",
    "504": "deadline exceeded",
}
_SCALARS: dict[int, Schema] = {
    FieldDescriptor.CPPTYPE_STRING: {"type": "string"},
    FieldDescriptor.CPPTYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.CPPTYPE_FLOAT: {"type": ["number", "string"]},  # "NaN", "Infinity"
    FieldDescriptor.CPPTYPE_DOUBLE: {"type": ["number", "string"]},
    FieldDescriptor.CPPTYPE_INT32: {"type": "integer"},
    FieldDescriptor.CPPTYPE_UINT32: {"type": "integer"},
    FieldDescriptor.CPPTYPE_INT64: {"type": ["integer", "string"]},  # written as strings
    FieldDescriptor.CPPTYPE_UINT64: {"type": ["integer", "string"]},
}


async def openapi_json(api: HttpApi, body: bytes, service: EmbeddingService, timeout: float) -> tuple[_Reply, object]:
    """GET /openapi.json: the description of `api.routes` (written once per server)."""
    if api.openapi is None:
        api.openapi = orjson.dumps(openapi_document(api.routes, service.models.default_name))
    return _Reply(api.openapi), None


def openapi_document(routes: RouteTable, model: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`; examples name `model`."""
    components: dict[str, Schema] = {}
    paths = {
        path: {
            method.lower(): _operation(path, route, components, model)
            for method, route in sorted(methods.items(), key=lambda item: item[0])
        }
        for path, methods in routes.items()
    }
    components.update({f"{dialect}_error": schema for dialect, schema in ERRORS.items()})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "embedrec HTTP API",
            "version": __version__,
            "description": "OpenAI, TEI, Cohere and Jina dialects beside the embedrec.v1 RPCs in JSON.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }


def _operation(path: str, route: Route, components: dict[str, Schema], model: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"{route.method.lower()}_{path.strip('/').replace('/', '_').replace('-', '_') or 'root'}",
        "summary": route.summary or route.name,
        "tags": [route.dialect],
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": _schema(route.response, components, request=False)}},
            },
            **{
                status: {
                    "description": text,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{route.dialect}_error"}}
                    },
                }
                for status, text in ERROR_STATUSES.items()
            },
        },
    }
    if route.probe:
        operation["security"] = [{}, {"bearer": []}]
    if route.method == "POST":
        content: dict[str, Any] = {"schema": _schema(route.request, components, request=True)}
        if route.example is not None:
            content["example"] = _with_model(route.example, model)
        operation["requestBody"] = {"required": True, "content": {"application/json": content}}
    return operation


def _schema(shape: Any, components: dict[str, Schema], *, request: bool) -> Schema:
    """A JSON Schema of `shape` (a schema dict, a proto descriptor, or None for any JSON)."""
    if shape is None:
        return {}
    if isinstance(shape, Descriptor):
        return _message_ref(shape, components, request=request)
    assert isinstance(shape, dict)
    return shape


def _message_ref(descriptor: Descriptor, components: dict[str, Schema], *, request: bool) -> Schema:
    """A $ref to `descriptor`'s JSON mapping in `components` (added, with the messages it holds)."""
    name = descriptor.full_name
    if name not in components:
        components[name] = {}  # placeholder: recursive messages refer to it
        properties = {field.json_name: _field(field, components, request=request) for field in descriptor.fields}
        components[name] = {
            "type": "object",
            "description": f"{name} in the proto's JSON mapping (lowerCamelCase; proto field names accepted too)",
            "properties": properties,
        }
    return {"$ref": f"#/components/schemas/{name}"}


def _field(field: FieldDescriptor, components: dict[str, Schema], *, request: bool) -> Schema:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        schema: Schema = {"type": "object", "additionalProperties": _single(value, components, request=request)}
    elif field.is_repeated:
        schema = {"type": "array", "items": _single(field, components, request=request)}
    else:
        schema = _single(field, components, request=request)
    return {"anyOf": [schema, {"type": "null"}]} if request else schema


def _single(field: FieldDescriptor, components: dict[str, Schema], *, request: bool) -> Schema:
    if field.message_type is not None:
        return _message_ref(field.message_type, components, request=request)
    if field.enum_type is not None:
        names: list[Any] = list(field.enum_type.values_by_name)
        return {"enum": names} if not request else {"anyOf": [{"enum": names}, {"type": "integer"}]}
    if field.type == FieldDescriptor.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    return dict(_SCALARS[field.cpp_type])


def _with_model(example: Any, model: str) -> Any:
    """`example` with MODEL_PLACEHOLDER strings replaced by `model`."""
    if isinstance(example, dict):
        return {key: _with_model(value, model) for key, value in example.items()}
    if isinstance(example, list):
        return [_with_model(value, model) for value in example]
    return model if example == MODEL_PLACEHOLDER else example
