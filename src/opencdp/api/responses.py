"""What every answer carries: JSON bodies, the SPEC's error body (§3), CORS, extra headers.

Handlers add headers (rate limit, CORS) to the request's scope (``add_header``); the
request-context middleware (``app.py``) sends them with whatever answer follows,
errors included, and renders every raised error with ``error_response``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response
from starlette.types import Scope, Send

from opencdp.api.routing import header, route_of
from opencdp.errors import BatchRefused, OpenCDPError

#: ASGI scope keys set by the request-context middleware (``app.py``).
REQUEST_ID = "opencdp.request_id"
EXTRA_HEADERS = "opencdp.headers"
_JSON_TYPE = (b"content-type", b"application/json")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


async def send_json(send: Send, content: Any, status: int = 200) -> None:
    """Answer ``content`` as JSON straight through ASGI (what ``JSONResponse`` sends)."""
    body = msgspec.json.encode(content)
    headers = [_JSON_TYPE, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_body(scope: Scope, code: str, message: str) -> dict[str, Any]:
    """The SPEC's error body; tracking routes add ``success`` and a top-level ``message``."""
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    route = route_of(scope)
    if route is not None and route.tracking:
        body["success"] = False
        body["message"] = message
    if route is not None and route.sdk_errors:
        body["code"] = code
        body["message"] = message
    return body


def error_response(scope: Scope, error: OpenCDPError) -> JSONResponse:
    """``error`` as its status and body; a refused batch lists every item's error."""
    body = error_body(scope, error.code, error.message)
    if isinstance(error, BatchRefused):
        body["errors"] = error.problems
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def add_header(scope: Scope, name: bytes, value: bytes) -> None:
    """A header for this request's response, whatever it turns out to be (errors too)."""
    scope[EXTRA_HEADERS].append((name, value))


def allow_origin(scope: Scope) -> None:
    """CORS for a tracking call: any origin may send events (tokens in pages are write-only)."""
    origin = header(scope, b"origin")
    add_header(scope, b"Access-Control-Allow-Origin", (origin or "*").encode("latin-1"))
    if origin:
        add_header(scope, b"Vary", b"Origin")


def preflight(origin: str | None, methods: str, allow_headers: str) -> Response:
    """The answer to a CORS pre-flight (``OPTIONS``) of a tracking route, from any origin."""
    headers = {
        "Access-Control-Allow-Origin": origin or "*",
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": allow_headers,
        "Access-Control-Max-Age": "600",
    }
    if origin:
        headers["Vary"] = "Origin"
    return Response(status_code=204, headers=headers)
