"""The web application: ``create_app(settings, store)`` builds routes, middleware and handlers.

Nothing is created at import time. ``opencdp serve`` runs
``uvicorn.run("opencdp.app:app_from_environment", factory=True)``; the lifespan starts
the store and, on shutdown (SIGTERM: uvicorn stops accepting and finishes what is in
flight first), stops it, which commits everything still queued.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import uuid_utils
from starlette.applications import Starlette
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opencdp import openapi
from opencdp.api import admin, events, ops, profiles, segment, tracking
from opencdp.api.preauth import PreAuth
from opencdp.api.responses import (
    EXTRA_HEADERS,
    REQUEST_ID,
    JSONResponse,
    error_body,
    error_response,
)
from opencdp.api.routing import ApiRoute, Endpoint, register_convertors
from opencdp.api.services import ClientAddress, Services
from opencdp.auth import TokenVerifier
from opencdp.config import Settings
from opencdp.errors import MethodNotAllowed, NotFound, OpenCDPError
from opencdp.logs import configure_logging, current_request_id
from opencdp.metrics import Metrics, MetricsMiddleware
from opencdp.ratelimit import RateLimiter, limiter_for
from opencdp.store import Store, open_store
from opencdp.store.guarded_reads import ReadLimits

log = logging.getLogger("opencdp")
access_log = logging.getLogger("opencdp.access")
_SANE_REQUEST_ID = re.compile(rb"[\x21-\x7e][\x20-\x7e]{0,127}")


def create_app(
    settings: Settings,
    store: Store,
    limiter: RateLimiter | None = None,
    metrics: Metrics | None = None,
) -> Starlette:
    """The ASGI application serving ``store`` with ``settings``.

    ``metrics`` counts the store's commits only if it is among the store's observers
    (``app_from_environment`` builds it first and hands it to the store).
    """
    register_convertors()
    if limiter is None:
        limiter = limiter_for(settings)
    preauth = PreAuth(settings.preauth_inflations, settings.anonymous_rate)
    services = Services(
        settings, store, limiter, ClientAddress(settings.trusted_proxies), preauth,
        TokenVerifier(store),
    )
    if metrics is None:
        metrics = Metrics(limiter)
    table = route_table(services, ops.metrics_endpoints(metrics))
    app = OpenCDPApp(
        routes=[ApiRoute(endpoint) for endpoint in table],
        middleware=[Middleware(MetricsMiddleware, metrics=metrics), Middleware(RequestContext)],
        lifespan=_lifespan(store, limiter),
    )
    app.router.redirect_slashes = False
    app.state.services = services
    app.state.endpoints = table
    app.state.metrics = metrics
    return app


def route_table(services: Services, more: list[Endpoint] | None = None) -> list[Endpoint]:
    """Every route of the service, in matching order; the OpenAPI document is made from it."""
    table = [
        *tracking.endpoints(services),
        *segment.endpoints(services),
        *events.endpoints(services),
        *profiles.endpoints(services),
        *admin.endpoints(services),
        *ops.endpoints(services),
        *(more or []),
    ]
    table.extend(openapi.endpoints(table))
    return table


def app_from_environment() -> Starlette:
    """The app as ``opencdp serve`` runs it: settings from ``OPENCDP_*``, store from its URL."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    limiter = limiter_for(settings)
    metrics = Metrics(limiter)
    store = open_store(
        settings.db,
        batch_max=settings.commit_batch_max,
        queue_max=settings.write_queue_max,
        unsafe_ack_before_commit=settings.unsafe_ack_before_commit,
        read_limits=ReadLimits(settings.read_timeout_ms, settings.workspace_reads),
        observers=[metrics],
    )
    return create_app(settings, store, limiter, metrics)


def _lifespan(
    store: Store, limiter: RateLimiter
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.start()
        try:
            yield
        finally:
            try:
                await store.stop()  # drains and commits the write queue
            finally:
                await limiter.close()

    return lifespan


class OpenCDPApp(Starlette):
    """Starlette running only our middleware around the router.

    Starlette's own outer and inner error middlewares are left out: ``RequestContext``
    answers every error itself, and each layer costs every request a wrapper or two.
    """

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = self.router
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


class RequestContext:
    """Pure ASGI middleware: request ids, per-request extra headers, and every error answer.

    Handlers add headers (rate limit, CORS) to ``scope[EXTRA_HEADERS]``; they are sent
    with whatever response follows, errors included. An exception becomes the SPEC's
    error body (``error_answer``); an unexpected one a plain 500.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope["headers"])
        extra = [(b"x-amzn-RequestId", request_id), (b"X-Request-Id", request_id)]
        scope[REQUEST_ID] = request_id.decode("ascii")
        scope[EXTRA_HEADERS] = extra
        context = current_request_id.set(scope[REQUEST_ID])
        started = time.perf_counter()
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except ClientDisconnect:
            return
        except Exception as exc:
            if status:  # too late for an error answer
                log.exception("unhandled error", extra={"request_id": scope[REQUEST_ID]})
                raise
            await error_answer(scope, exc)(scope, receive, send_with_headers)
        finally:
            if access_log.isEnabledFor(logging.DEBUG):
                _log_access(scope, status, time.perf_counter() - started)
            current_request_id.reset(context)


def _log_access(scope: Scope, status: int, seconds: float) -> None:
    """One line per request (debug level: ``OPENCDP_LOG_LEVEL=debug``); never a header."""
    answer = status or "(client left)"
    access_log.debug("%s %s %s %.1fms", scope["method"], scope["path"], answer, seconds * 1000)


def _request_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name == b"x-request-id":
            if _SANE_REQUEST_ID.fullmatch(value):
                return value
            break
    return new_request_id()


def new_request_id() -> bytes:
    """A fresh request id (a UUID; no system call: see store/sqlite/revocations.py)."""
    return str(uuid_utils.uuid4()).encode("ascii")


def error_answer(scope: Scope, exc: Exception) -> Response:
    """The SPEC's error body for ``exc``; one not ours is logged and answered a plain 500."""
    if isinstance(exc, HTTPException):
        return _router_error(scope, exc)
    if not isinstance(exc, OpenCDPError):
        log.error("unhandled error", exc_info=exc, extra={"request_id": scope[REQUEST_ID]})
        exc = OpenCDPError("internal error")
    elif exc.status >= 500:
        log.error("%s: %s", exc.code, exc.message, extra={"request_id": scope[REQUEST_ID]})
    return error_response(scope, exc)


def _router_error(scope: Scope, exc: HTTPException) -> Response:
    """Starlette's own 404 (no route) and 405 (method), in the SPEC's error body."""
    if exc.status_code == 404:
        return error_response(scope, NotFound(f"no route for {URL(scope=scope).path}"))
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return error_response(scope, MethodNotAllowed(scope["method"], tuple(allowed.split(", "))))
    code = "invalid_request_error" if exc.status_code < 500 else "internal_server_error"
    body = error_body(scope, code, exc.detail)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
