"""What every API route shares: the route table, the checks of SPEC §3, error bodies.

A request passes the checks in the SPEC's order; the router has already answered
404 (route, workspace ids included) and 405 (method) before a handler runs:

    declared size (413) → content-type (415) → token (401/403) → rate limit (429)
    → body (413 while streaming, then 400 from parsing)

A read handler (events, profiles) looks like::

    async def list_events(request: Request) -> Response:
        workspace = workspace_of(request.scope)
        await guard(request.scope, services, workspace, access="read",
                    body_limit=services.settings.read_body_limit)
        ...

The checks take the ASGI ``scope`` (and ``receive``), not a Starlette ``Request``, so
the tracking calls (bare ASGI apps: the hot path) and the ``Request`` handlers share them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from opencdp.api.preauth import PreAuth
from opencdp.auth import TokenVerifier
from opencdp.config import Settings
from opencdp.errors import (
    InvalidRequest,
    OpenCDPError,
    PayloadTooLarge,
    RateLimited,
    UnsupportedMediaType,
)
from opencdp.models import WORKSPACE_PART, BatchItemError, Call, Principal, Workspace
from opencdp.ratelimit import RateLimiter
from opencdp.store.base import Store

Handler = Callable[[Request], Awaitable[Response]]
_JSON_TYPE = (b"content-type", b"application/json")

#: The workspace part of every tracking and read path (ids checked by the router).
WORKSPACE_PREFIX = "/track/{clientId:workspace}/{accountId:workspace}/{brandId:workspace}/v1"

#: ASGI scope keys set by the request-context middleware (``app.py``).
REQUEST_ID = "opencdp.request_id"
EXTRA_HEADERS = "opencdp.headers"


class WorkspacePartConvertor(Convertor[str]):
    """A ``clientId``/``accountId``/``brandId`` path segment: bad ids are no route (404)."""

    regex = WORKSPACE_PART

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class AnyTextConvertor(Convertor[str]):
    """The rest of a path, line breaks included (Starlette's ``path`` stops at one): a
    ``userId`` may hold any character (SPEC §4), so ``{idType}:{id}`` must reach it."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def register_convertors() -> None:
    """Make ``{name:workspace}`` and ``{name:text}`` usable in route paths (idempotent)."""
    register_url_convertor("workspace", WorkspacePartConvertor())
    register_url_convertor("text", AnyTextConvertor())


class ClientAddress:
    """The caller's IP: the peer, or the first ``X-Forwarded-For`` hop from a trusted proxy."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def of(self, scope: Scope) -> str | None:
        client = scope.get("client")
        peer: str | None = client[0] if client else None
        if peer is None or not self.trusts(scope):
            return peer
        forwarded = header(scope, b"x-forwarded-for") or ""
        first = forwarded.split(",", 1)[0].strip()
        return first or peer

    def trusts(self, scope: Scope) -> bool:
        """Whether the peer is a trusted proxy, whose ``X-Forwarded-*`` headers count."""
        client = scope.get("client")
        return bool(self._networks) and client is not None and self._is_trusted(client[0])

    def _is_trusted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._networks)


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a handler needs, built once by ``create_app``."""

    settings: Settings
    store: Store
    limiter: RateLimiter
    client_address: ClientAddress
    preauth: PreAuth
    tokens: TokenVerifier


@dataclass(frozen=True)
class Endpoint:
    """One row of the route table: the route itself and its OpenAPI description.

    ``request_body`` and ``response`` are types msgspec can describe (Structs);
    ``errors`` the error statuses the route may answer besides 500.
    """

    path: str
    methods: tuple[str, ...]
    handler: Handler | ASGIApp  # an ASGI app (a class instance) skips Request and Response
    operation_id: str
    summary: str
    tag: str
    tracking: bool = False
    sdk_errors: bool = False  # errors also carry a top-level "code" (Segment-style SDKs read it)
    scope: str | None = None  # the token scope it needs; None: no token
    request_body: Any = None
    response: Any = None
    errors: tuple[int, ...] = ()
    description: str = ""
    extra_responses: dict[int, Any] = field(default_factory=dict)


class ApiRoute(Route):
    """A Starlette route that remembers its table row (the error renderer reads it)."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint.path, endpoint.handler, methods=list(endpoint.methods))
        self.spec = endpoint


def is_tracking(scope: Scope) -> bool:
    """True when the request matched a tracking route (its errors carry ``success``)."""
    route = scope.get("route")
    return isinstance(route, ApiRoute) and route.spec.tracking


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def error_body(scope: Scope, code: str, message: str) -> dict[str, Any]:
    """The SPEC's error body; tracking routes add ``success`` and a top-level ``message``."""
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if is_tracking(scope):
        body["success"] = False
        body["message"] = message
    route = scope.get("route")
    if isinstance(route, ApiRoute) and route.spec.sdk_errors:
        body["code"] = code
        body["message"] = message
    return body


def error_response(scope: Scope, error: OpenCDPError) -> JSONResponse:
    body = error_body(scope, error.code, error.message)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


async def send_json(send: Send, content: Any, status: int = 200) -> None:
    """Answer ``content`` as JSON straight through ASGI (what ``JSONResponse`` sends)."""
    body = msgspec.json.encode(content)
    headers = [_JSON_TYPE, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header; ``name`` in lower case, as ASGI gives names."""
    for key, value in scope["headers"]:
        if key == name:
            return _text(value)
    return None


def add_header(scope: Scope, name: bytes, value: bytes) -> None:
    """A header for this request's response, whatever it turns out to be (errors too)."""
    scope[EXTRA_HEADERS].append((name, value))


def allow_origin(scope: Scope) -> None:
    """CORS for a tracking call: any origin may send events (tokens in pages are write-only)."""
    origin = header(scope, b"origin")
    add_header(scope, b"Access-Control-Allow-Origin", (origin or "*").encode("latin-1"))
    if origin:
        add_header(scope, b"Vary", b"Origin")


def workspace_of(scope: Scope) -> Workspace:
    """The path's workspace: the router admitted only valid ids (``WorkspacePartConvertor``)."""
    params = scope["path_params"]
    return Workspace(params["clientId"], params["accountId"], params["brandId"])


async def guard(
    scope: Scope,
    services: Services,
    workspace: Workspace,
    *,
    access: str,
    body_limit: int,
    unknown_status: int = 401,
) -> Principal:
    """The checks of SPEC §3 after route and method, up to (not including) the body.

    ``unknown_status`` answers a missing or unknown token: 403 on tracking calls,
    401 on read calls. Sets ``X-RateLimit-*`` on the response once the token is valid.
    """
    headers: dict[bytes, bytes] = dict(scope["headers"])  # names are lower-case
    check_declared_size(_text(headers.get(b"content-length")), body_limit)
    if scope["method"] == "POST":
        check_content_type(_text(headers.get(b"content-type")))
    token = _text(headers.get(b"auth-token"))
    principal = await services.tokens.authorize(
        token, workspace, access, unknown_status=unknown_status
    )
    await take_rate(scope, services, principal.token_id)
    return principal


async def take_rate(scope: Scope, services: Services, token_id: str) -> None:
    """Spend one request of the token's rate; sets ``X-RateLimit-*``; 429 when none is left."""
    decision = await services.limiter.take(token_id)
    add_header(scope, b"X-RateLimit-Limit", str(decision.limit).encode())
    add_header(scope, b"X-RateLimit-Remaining", str(decision.remaining).encode())
    if not decision.allowed:
        raise RateLimited(decision.retry_after)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def check_declared_size(content_length: str | None, limit: int) -> None:
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError as exc:
        raise InvalidRequest("content-length: not a number") from exc
    if declared > limit:
        raise PayloadTooLarge(limit)


def check_content_type(content_type: str | None) -> None:
    """415 unless the media type is ``application/json`` (parameters such as charset allowed)."""
    if content_type == "application/json":
        return
    if content_type is None:
        raise UnsupportedMediaType()
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType()


async def read_body(receive: Receive, limit: int) -> bytes:
    """The body, read with a running limit: past ``limit`` → 413 without reading the rest."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def store_batch(
    scope: Scope,
    services: Services,
    workspace: Workspace,
    calls: list[Call | None],
    problems: list[BatchItemError],
) -> tuple[int, dict[str, Any]]:
    """Store a batch's valid calls; ``eventIds`` in input order, ``null`` where refused.

    The answer's status and body: when no call is valid, 400 with the same ``errors`` list.
    """
    valid = [call for call in calls if call is not None]
    if not valid:
        message = "batch: no call was valid; see errors"
        rejected = error_body(scope, "validation_error", message)
        rejected["errors"] = problems
        return 400, rejected
    accepted = iter(await services.store.append_calls(workspace, valid))
    event_ids = [None if call is None else next(accepted).event_id for call in calls]
    return 200, {"success": True, "eventIds": event_ids, "errors": problems}
