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
from contextvars import ContextVar
from typing import Any

import msgspec
import uuid_utils
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opencdp import openapi
from opencdp.api import events, ops, profiles, segment, tracking
from opencdp.api.common import (
    EXTRA_HEADERS,
    REQUEST_ID,
    ApiRoute,
    ClientAddress,
    Endpoint,
    JSONResponse,
    Services,
    error_body,
    error_response,
    register_convertors,
)
from opencdp.config import Settings
from opencdp.errors import MethodNotAllowed, NotFound, OpenCDPError
from opencdp.metrics import Metrics, MetricsMiddleware
from opencdp.ratelimit import RateLimiter, limiter_for
from opencdp.store.base import Store, open_store

log = logging.getLogger("opencdp")
access_log = logging.getLogger("opencdp.access")
_SANE_REQUEST_ID = re.compile(rb"[\x21-\x7e][\x20-\x7e]{0,127}")
#: The id of the request being handled, so every log line written for it carries it.
current_request_id: ContextVar[str | None] = ContextVar("opencdp_request_id", default=None)


def create_app(settings: Settings, store: Store, limiter: RateLimiter | None = None) -> Starlette:
    """The ASGI application serving ``store`` with ``settings``."""
    register_convertors()
    if limiter is None:
        limiter = limiter_for(settings)
    services = Services(settings, store, limiter, ClientAddress(settings.trusted_proxies))
    metrics = Metrics(store, limiter)  # also becomes the store's observer
    table = route_table(services, metrics.endpoints())
    app = Starlette(
        routes=[ApiRoute(endpoint) for endpoint in table],
        middleware=[Middleware(MetricsMiddleware, metrics=metrics), Middleware(RequestContext)],
        exception_handlers={OpenCDPError: render_error, HTTPException: render_http_error},
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
        *ops.endpoints(services),
        *(more or []),
    ]
    table.extend(openapi.endpoints(table))
    return table


def app_from_environment() -> Starlette:
    """The app as ``opencdp serve`` runs it: settings from ``OPENCDP_*``, store from its URL."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    store = open_store(
        settings.db,
        batch_max=settings.commit_batch_max,
        queue_max=settings.write_queue_max,
        unsafe_ack_before_commit=settings.unsafe_ack_before_commit,
    )
    return create_app(settings, store, limiter_for(settings))


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


class RequestContext:
    """Pure ASGI middleware: request ids, per-request extra headers, and the last-resort 500.

    Handlers add headers (rate limit, CORS) to ``scope[EXTRA_HEADERS]``; they are sent
    with whatever response follows, errors included.
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
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except ClientDisconnect:
            return
        except Exception:
            log.exception("unhandled error", extra={"request_id": scope[REQUEST_ID]})
            if status:
                raise
            internal = error_response(scope, OpenCDPError("internal error"))
            await internal(scope, receive, send_with_headers)
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
    return str(uuid_utils.uuid4()).encode("ascii")  # no system call: see token_cache.py


async def render_error(request: Request, exc: Exception) -> Response:
    """The SPEC's error body for every ``OpenCDPError``."""
    if not isinstance(exc, OpenCDPError):
        raise exc
    if exc.status >= 500:
        log.error("%s: %s", exc.code, exc.message, extra={"request_id": request.scope[REQUEST_ID]})
    return error_response(request.scope, exc)


async def render_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (method), in the SPEC's error body."""
    if not isinstance(exc, HTTPException):
        raise exc
    if exc.status_code == 404:
        return error_response(request.scope, NotFound(f"no route for {request.url.path}"))
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = MethodNotAllowed(request.method, tuple(allowed.split(", ")))
        return error_response(request.scope, error)
    code = "invalid_request_error" if exc.status_code < 500 else "internal_server_error"
    body = error_body(request.scope, code, exc.detail)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or current_request_id.get()
        if request_id is not None:
            entry["requestId"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def uvicorn_logging(level: str = "info") -> dict[str, Any]:
    """uvicorn's own log lines (start, stop, errors) as the same JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }


def configure_logging(level: str = "info") -> None:
    """Send the ``opencdp`` loggers to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger("opencdp")
    logger.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False
