"""Segment- and RudderStack-compatible ingestion (SPEC §8): ``POST /v1/{type}``.

The SDKs authenticate with HTTP Basic (user name: a write token limited to one
account and one brand, which names the workspace; empty password) or with the
token in the body's ``writeKey``. Each handler: admit (size, content-type, body,
token, rate limit) → parse (``opencdp.segment``) → one store call → answer. Errors
carry a top-level ``code`` and ``message`` besides the ``error`` object, as the
SDKs read them.

The order of SPEC §3 holds with one exception: when the token comes only in the
body, the body is read (and inflated, within the limit) before the token check; what
that may cost an anonymous client is bounded in ``opencdp.api.preauth``.
Short paths (``/v1/t`` …, ``/v1/b``) are analytics.js's: they accept any
content-type (it sends ``text/plain``). Every route here answers CORS.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
import zlib
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from opencdp import segment
from opencdp.api.guards import check_content_type, check_declared_size, read_body, take_rate
from opencdp.api.preauth import candidate_keys
from opencdp.api.responses import JSONResponse, allow_origin, preflight
from opencdp.api.routing import Endpoint, Handler, header
from opencdp.api.services import Services
from opencdp.auth import check_access
from opencdp.calls import CALL_TYPES, BatchAccepted, CallAccepted
from opencdp.config import is_host
from opencdp.errors import (
    AuthenticationFailed,
    ErrorDetail,
    InvalidRequest,
    OpenCDPError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from opencdp.ingest import decode_json_object
from opencdp.models import Principal, Workspace

BATCH_PATHS = ("batch", "import", "b")
ERRORS = (400, 401, 403, 405, 413, 415, 429, 503)
_CORS_HEADERS = "content-type, content-encoding, authorization, x-request-id, x-retry-count"
_HEADER_LIST = re.compile(r"[A-Za-z0-9-]+(?:\s*,\s*[A-Za-z0-9-]+)*")


def endpoints(services: Services) -> list[Endpoint]:
    """The long and short call paths, the batch paths, and analytics.js's settings."""
    calls = [(kind, kind) for kind in CALL_TYPES] + list(segment.SHORT_PATHS.items())
    rows = [_call_row(services, path, kind) for path, kind in calls]
    rows += [_batch_row(services, path) for path in BATCH_PATHS]
    rows.append(_settings_row(services))
    return rows


def _call_row(services: Services, path: str, kind: str) -> Endpoint:
    short = path != kind
    return Endpoint(
        path=f"/v1/{path}",
        methods=("POST", "OPTIONS"),
        handler=_call_handler(services, kind, any_content_type=short),
        operation_id=f"segment_{path}",
        summary=f"Segment {kind} call" + (" (analytics.js path)" if short else ""),
        tag="Segment-compatible",
        tracking=True,
        sdk_errors=True,
        request_body=segment.MESSAGES[kind],
        response=CallAccepted,
        errors=ERRORS,
        description=_AUTH_TEXT,
        extra_responses=_error_responses(),
    )


def _batch_row(services: Services, path: str) -> Endpoint:
    return Endpoint(
        path=f"/v1/{path}",
        methods=("POST", "OPTIONS"),
        handler=_batch_handler(services, any_content_type=path == "b"),
        operation_id=f"segment_{path}",
        summary="Segment batch: up to 1000 messages, each with its type",
        tag="Segment-compatible",
        tracking=True,
        sdk_errors=True,
        request_body=segment.SegmentBatch,
        response=BatchAccepted,
        errors=ERRORS,
        description=_AUTH_TEXT,
        extra_responses=_error_responses(),
    )


def _settings_row(services: Services) -> Endpoint:
    return Endpoint(
        path="/v1/projects/{writeKey}/settings",
        methods=("GET", "OPTIONS"),
        handler=_settings_handler(services),
        operation_id="segment_settings",
        summary="analytics.js settings: point its cdnURL at this server",
        tag="Segment-compatible",
        sdk_errors=True,
        response=ProjectSettings,
        errors=(400, 401, 403, 405, 429),
    )


# -- handlers ------------------------------------------------------------------------------


def _call_handler(services: Services, kind: str, *, any_content_type: bool) -> Handler:
    async def handle(request: Request) -> Response:
        if request.method == "OPTIONS":
            return _preflight(request, "POST, OPTIONS")
        allow_origin(request.scope)
        body, workspace = await _admit(request, services, any_content_type=any_content_type)
        received_time = time.time_ns() // 1_000_000
        client_ip = services.client_address.of(request.scope)
        call = segment.parse_message(kind, body, received_time=received_time, client_ip=client_ip)
        [accepted] = await services.store.append_calls(workspace, [call])
        return JSONResponse(CallAccepted.of(accepted))

    handle.__name__ = f"segment_{kind}"
    return handle


def _batch_handler(services: Services, *, any_content_type: bool) -> Handler:
    async def segment_batch(request: Request) -> Response:
        if request.method == "OPTIONS":
            return _preflight(request, "POST, OPTIONS")
        allow_origin(request.scope)
        body, workspace = await _admit(request, services, any_content_type=any_content_type)
        received_time = time.time_ns() // 1_000_000
        client_ip = services.client_address.of(request.scope)
        calls, problems = segment.parse_messages(
            body, received_time=received_time, client_ip=client_ip
        )
        valid = [call for call in calls if call is not None]
        accepted = await services.store.append_calls(workspace, valid)
        return JSONResponse(BatchAccepted.of(calls, accepted, problems))

    return segment_batch


def _settings_handler(services: Services) -> Handler:
    async def segment_settings(request: Request) -> Response:
        if request.method == "OPTIONS":
            return _preflight(request, "GET, OPTIONS")
        allow_origin(request.scope)
        write_key = request.path_params["writeKey"]
        await _authenticate(request, services, write_key)
        public = services.settings.public_url
        if public is not None:
            scheme, _, host = public.partition("://")
            headers = {"Cache-Control": "max-age=300"}
        else:
            scheme, host = _request_origin(services, request.scope)
            headers = {"Cache-Control": "max-age=300", "Vary": _ORIGIN_HEADERS}
        settings = segment.project_settings(write_key, host, scheme)
        return JSONResponse(settings, headers=headers)

    return segment_settings


# What the settings answer depends on without OPENCDP_PUBLIC_URL: a cache keys on them.
_ORIGIN_HEADERS = "Host, X-Forwarded-Proto, X-Forwarded-Host"


def _request_origin(services: Services, scope: Scope) -> tuple[str, str]:
    """The scheme and ``host[:port]`` the client reached: its own, or a trusted proxy's."""
    scheme: str = scope["scheme"]
    host = header(scope, b"host")
    if services.client_address.trusts(scope):
        proto = _first(header(scope, b"x-forwarded-proto")).lower()
        scheme = proto if proto in {"http", "https"} else scheme
        host = _first(header(scope, b"x-forwarded-host")) or host
    if not host:
        address, port = scope.get("server") or ("127.0.0.1", None)
        address = f"[{address}]" if ":" in address else address
        host = address if port is None else f"{address}:{port}"
    if not is_host(host):
        raise InvalidRequest("Host: not a host[:port] (set OPENCDP_PUBLIC_URL to fix it)")
    return scheme, host


def _first(value: str | None) -> str:
    """The first item of a comma-separated header: the hop nearest the client."""
    return "" if value is None else value.split(",", 1)[0].strip()


# -- admission: size, content-type, token, rate limit, body --------------------------------


async def _admit(
    request: Request, services: Services, *, any_content_type: bool
) -> tuple[dict[str, Any], Workspace]:
    """The request's JSON body and the one workspace its write key names."""
    limit = services.settings.track_body_limit
    check_declared_size(request.headers.get("content-length"), limit)
    if not any_content_type:
        check_content_type(request.headers.get("content-type"))
    key = basic_user(request.headers.get("authorization"))
    if key is not None:
        workspace = await _authenticate(request, services, key)
        return await read_json(request, limit), workspace
    address = services.client_address.of(request.scope)
    services.preauth.admit(address)
    try:
        body = await _body_with_live_key(request, services, limit)
    except OpenCDPError:
        services.preauth.failed(address)
        raise
    return body, await _authenticate(request, services, body["writeKey"])


async def _body_with_live_key(request: Request, services: Services, limit: int) -> dict[str, Any]:
    """SPEC §8: the token is in the body. It is looked for before the body is parsed
    (``preauth``), so a body without a live key costs no JSON parsing."""
    data = await read_body(request.receive, limit)
    if _encoding(request) == "gzip":
        data, keys = await services.preauth.offload(lambda: _inflated_keys(data, limit))
    else:
        keys = candidate_keys(data)
    if not await _any_live(services, keys):
        raise AuthenticationFailed(
            "writeKey: missing, unknown or revoked (send it as HTTP Basic user)", status=401
        )
    body = decode_json_object(data)
    if not isinstance(body.get("writeKey"), str):
        raise AuthenticationFailed("writeKey: missing (send it as HTTP Basic user)", status=401)
    return body


def _inflated_keys(data: bytes, limit: int) -> tuple[bytes, list[str]]:
    inflated = inflate(data, limit)
    return inflated, candidate_keys(inflated)


async def _any_live(services: Services, keys: list[str]) -> bool:
    for key in keys:
        try:
            await services.tokens.principal(key, name="writeKey")
        except AuthenticationFailed:
            continue
        return True
    return False


async def _authenticate(request: Request, services: Services, key: str) -> Workspace:
    """The one workspace a write key names; 401 for an unknown key; then the rate limit."""
    principal = await services.tokens.principal(key, name="writeKey")
    workspace = _only_workspace(principal)
    check_access(principal, workspace, "write")
    await take_rate(request.scope, services, principal.token_id)
    return workspace


def _only_workspace(principal: Principal) -> Workspace:
    accounts, brands = principal.accounts or (), principal.brands or ()
    if len(accounts) != 1 or len(brands) != 1:
        raise AuthenticationFailed(
            "writeKey: the token must name exactly one account and one brand", status=403
        )
    return Workspace(principal.client_id, next(iter(accounts)), next(iter(brands)))


def basic_user(authorization: str | None) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header; None when there is none."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationFailed("authorization: not valid HTTP Basic", status=401) from None
    return decoded.partition(":")[0] or None


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The JSON object body, inflated when ``Content-Encoding: gzip``; both sizes limited."""
    body = await read_body(request.receive, limit)
    if _encoding(request) == "gzip":
        body = inflate(body, limit)
    return decode_json_object(body)


def _encoding(request: Request) -> str:
    """``gzip`` or ``identity``; any other ``Content-Encoding`` → 415."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("gzip", "identity"):
        raise _UnsupportedEncoding(encoding)
    return encoding


def inflate(data: bytes, limit: int) -> bytes:
    """gzip-decompress ``data``, stopping at ``limit`` bytes of output (a zip bomb → 413).

    One gzip member only: anything after it is refused, never ignored.
    """
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidRequest(f"body: not valid gzip ({exc})") from None
    if len(out) > limit:
        raise PayloadTooLarge(limit)
    if not inflater.eof:
        raise InvalidRequest("body: gzip data is truncated")
    if inflater.unused_data:  # a second member (or trailing bytes) would be lost unread
        raise InvalidRequest("body: data after the end of the gzip stream; send one gzip member")
    return out


class _UnsupportedEncoding(UnsupportedMediaType):
    def __init__(self, encoding: str) -> None:
        super().__init__()
        self.message = f"content-encoding: {encoding[:40]!r} is not supported; use gzip"
        self.args = (self.message,)


# -- CORS: any origin may send events (tokens in pages are write-only) ----------------------


def _preflight(request: Request, methods: str) -> Response:
    """Allows the headers the browser asks for (SDKs add their own), if they are names."""
    asked = request.headers.get("access-control-request-headers", "").strip()
    allowed = asked if _HEADER_LIST.fullmatch(asked) else _CORS_HEADERS
    return preflight(request.headers.get("origin"), methods, allowed)


# -- documentation ---------------------------------------------------------------------------

_AUTH_TEXT = (
    "HTTP Basic: the user name is a write token limited to one account and one brand "
    "(it names the workspace), the password empty; or that token in the body's `writeKey`. "
    "Bodies may be gzip-compressed (`Content-Encoding: gzip`); 6 MiB once inflated."
)
Object = dict[str, Any]


class SegmentError(msgspec.Struct):
    """The error body here: the tracking one plus a top-level ``code``."""

    success: Literal[False]
    code: str
    message: str
    error: ErrorDetail


class _SegmentIo(msgspec.Struct, rename={"segment_io": "Segment.io"}):
    segment_io: Object


class ProjectSettings(msgspec.Struct):
    """analytics.js's settings: the ``Segment.io`` destination sends to this server."""

    integrations: _SegmentIo


def _error_responses() -> dict[int, Any]:
    return {status: SegmentError for status in (*ERRORS, 500)}
