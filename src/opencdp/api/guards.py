"""The checks of SPEC §3 that run before a handler's own work, in the SPEC's order.

The router has already answered 404 (route, workspace ids included) and 405 (method);
then, and the first that fails answers:

    declared size (413) → content-type (415) → token (401/403) → rate limit (429)
    → body (413 while streaming, then 400 from parsing)

The checks take the ASGI ``scope`` (and ``receive``), not a Starlette ``Request``, so
the tracking calls (bare ASGI apps: the hot path) and the ``Request`` handlers share them.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope

from opencdp.api.responses import add_header
from opencdp.api.routing import text, workspace_of
from opencdp.api.services import Services
from opencdp.errors import InvalidRequest, PayloadTooLarge, RateLimited, UnsupportedMediaType
from opencdp.models import Principal, Workspace


async def guard(
    scope: Scope,
    services: Services,
    workspace: Workspace | None,
    *,
    access: str,
    body_limit: int,
    unknown_status: int = 401,
) -> Principal:
    """The checks of SPEC §3 after route and method, up to (not including) the body.

    ``workspace`` is ``None`` on calls about the token's whole client (the admin API).
    ``unknown_status`` answers a missing or unknown token: 403 on tracking calls,
    401 on read calls. Sets ``X-RateLimit-*`` on the response once the token is valid.
    """
    headers: dict[bytes, bytes] = dict(scope["headers"])  # names are lower-case
    check_declared_size(text(headers.get(b"content-length")), body_limit)
    if scope["method"] == "POST":
        check_content_type(text(headers.get(b"content-type")))
    token = text(headers.get(b"auth-token"))
    principal = await services.tokens.authorize(
        token, workspace, access, unknown_status=unknown_status
    )
    await take_rate(scope, services, principal.token_id)
    return principal


async def read_guard(request: Request, services: Services) -> Workspace:
    """SPEC §3 for a read call: size, token (401 when missing or unknown), rate limit.

    Also reads any body against the 1 MiB limit (413), so a chunked body without a
    declared size is refused like a declared one.
    """
    workspace = workspace_of(request.scope)
    limit = services.settings.read_body_limit
    await guard(
        request.scope, services, workspace, access="read", body_limit=limit, unknown_status=401
    )
    await read_body(request.receive, limit)
    return workspace


async def admin_guard(request: Request, services: Services) -> tuple[Principal, bytes]:
    """SPEC §3 for an admin call: size, content type, a token with the ``admin`` scope
    (401 when missing or unknown, 403 without the scope), rate limit; then the body,
    read against the read calls' limit (an admin body is small)."""
    limit = services.settings.read_body_limit
    principal = await guard(
        request.scope, services, None, access="admin", body_limit=limit, unknown_status=401
    )
    return principal, await read_body(request.receive, limit)


async def take_rate(scope: Scope, services: Services, token_id: str) -> None:
    """Spend one request of the token's rate; sets ``X-RateLimit-*``; 429 when none is left."""
    decision = await services.limiter.take(token_id)
    add_header(scope, b"X-RateLimit-Limit", str(decision.limit).encode())
    add_header(scope, b"X-RateLimit-Remaining", str(decision.remaining).encode())
    if not decision.allowed:
        raise RateLimited(decision.retry_after)


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
