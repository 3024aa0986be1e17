"""The OpenAPI 3.1 document, generated from the route table (``api.routing.Endpoint`` rows).

``/openapi.json`` serves the document; ``/docs`` serves Swagger UI (``opencdp.docs``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from opencdp import __version__, docs
from opencdp.api.routing import Endpoint, Handler
from opencdp.errors import Error, TrackingError
from opencdp.models import WORKSPACE_PART

JSON = dict[str, Any]
_CONVERTOR = re.compile(r"\{(\w+):\w+\}")
_PARAM = re.compile(r"\{(\w+)\}")
_REF = "#/components/schemas/{name}"
_WORKSPACE_PARTS = {"clientId", "accountId", "brandId"}

ERROR_TEXT = {
    400: "validation_error (a field or parameter) or invalid_request_error (malformed JSON, "
    "not an object, bad encoding)",
    401: "authentication_error: no token or an unknown token",
    403: "authentication_error: no access (tracking calls: also no token or an unknown token)",
    404: "not_found: unknown route, profile, event or token",
    405: "invalid_request_error: method not allowed (see Allow)",
    413: "invalid_request_error: body over the limit",
    415: "invalid_request_error: content-type is not application/json",
    429: "rate_limit_error: retry after Retry-After seconds",
    500: "internal_server_error",
    503: "internal_server_error: temporarily unavailable; retry after Retry-After seconds",
}


def document(endpoints: Sequence[Endpoint]) -> JSON:
    """The whole OpenAPI document for these routes."""
    types = _schema_types(endpoints)
    _, schemas = msgspec.json.schema_components(types, ref_template=_REF)
    paths: dict[str, JSON] = {}
    for endpoint in endpoints:
        operations = paths.setdefault(_CONVERTOR.sub(r"{\1}", endpoint.path), {})
        for method in endpoint.methods:
            operations[method.lower()] = _operation(endpoint, method)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "opencdp",
            "version": __version__,
            "description": "An open-source Customer Data Platform. Every response carries "
            "a request id in x-amzn-RequestId and X-Request-Id.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "authToken": {"type": "apiKey", "in": "header", "name": "auth-token"}
            },
        },
    }


def endpoints(table: Sequence[Endpoint]) -> list[Endpoint]:
    """``/openapi.json`` and ``/docs``; the document covers ``table`` as it is when first asked."""
    return [
        Endpoint(
            path="/openapi.json",
            methods=("GET",),
            handler=_serve_document(table),
            operation_id="openapi",
            summary="This OpenAPI document",
            tag="Operations",
            errors=(405,),
        ),
        *docs.endpoints(),
    ]


def _serve_document(table: Sequence[Endpoint]) -> Handler:
    rendered: list[bytes] = []

    async def openapi_json(request: Request) -> Response:
        if not rendered:
            rendered.append(msgspec.json.encode(document(table)))
        return Response(rendered[0], media_type="application/json")

    return openapi_json


def _schema_types(endpoints: Sequence[Endpoint]) -> list[Any]:
    found: dict[Any, None] = {Error: None, TrackingError: None}
    for endpoint in endpoints:
        for kind in (endpoint.request_body, endpoint.response, *endpoint.extra_responses.values()):
            if kind is not None:
                found[kind] = None
    return list(found)


def _ref(kind: Any) -> JSON:
    return {"$ref": _REF.format(name=kind.__name__)}


def _operation(endpoint: Endpoint, method: str) -> JSON:
    if method == "OPTIONS":
        return _preflight(endpoint)
    operation: JSON = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "parameters": _parameters(endpoint.path),
        "responses": _responses(endpoint),
    }
    notes = [endpoint.description] if endpoint.description else []
    if endpoint.scope is not None:
        operation["security"] = [{"authToken": []}]
        notes.append(f"Needs a token with the `{endpoint.scope}` scope.")
    if notes:
        operation["description"] = "\n\n".join(notes)
    if endpoint.request_body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(endpoint.request_body)}},
        }
    return operation


def _preflight(endpoint: Endpoint) -> JSON:
    return {
        "operationId": f"{endpoint.operation_id}_preflight",
        "summary": "CORS pre-flight",
        "tags": [endpoint.tag],
        "parameters": _parameters(endpoint.path),
        "responses": {"204": {"description": "Allowed: Access-Control-Allow-* headers"}},
    }


def _parameters(path: str) -> list[JSON]:
    params = []
    for name in _PARAM.findall(_CONVERTOR.sub(r"{\1}", path)):
        schema: JSON = {"type": "string"}
        if name in _WORKSPACE_PARTS:
            schema = {"type": "string", "pattern": f"^{WORKSPACE_PART}$"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def _responses(endpoint: Endpoint) -> JSON:
    ok: JSON = {"description": "Created" if endpoint.success == 201 else "Success"}
    if endpoint.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(endpoint.response)}}
    elif endpoint.path in _TEXT_ANSWERS:
        text = {"schema": {"type": "string"}}
        ok["content"] = {kind: text for kind in _TEXT_ANSWERS[endpoint.path]}
    else:
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    responses: JSON = {str(endpoint.success): ok}
    error_kind = TrackingError if endpoint.tracking else Error
    for status in sorted({*endpoint.errors, 500}):
        kind = endpoint.extra_responses.get(status, error_kind)
        response: JSON = {
            "description": ERROR_TEXT.get(status, "error"),
            "content": {"application/json": {"schema": _ref(kind)}},
        }
        if status in (429, 503):
            response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        responses[str(status)] = response
    if endpoint.scope is not None:
        for response in responses.values():
            response.setdefault("headers", {}).update(_RATE_HEADERS)
    return responses


_TEXT_ANSWERS = {
    "/docs": ("text/html",),
    docs.ASSETS + "/{name}": tuple(docs.MEDIA_TYPES.values()),
    "/metrics": ("text/plain",),
}
_RATE_HEADERS = {
    "X-RateLimit-Limit": {"description": "The bucket's burst", "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Whole requests left", "schema": {"type": "integer"}},
}
