"""The route table: one ``Endpoint`` row per route, and what the router hands a handler.

Every module of ``api/`` contributes rows (``endpoints(services)``); ``app.py`` joins
them in matching order, and ``openapi.py`` describes the same rows, so a route and its
documentation cannot part. The router answers 404 (no route, bad workspace ids) and
405 (method) before any handler runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from opencdp.metrics import ROUTE_LABELS, RouteLabels
from opencdp.models import WORKSPACE_PART, Workspace

Handler = Callable[[Request], Awaitable[Response]]

#: The workspace part of every tracking and read path (ids checked by the router).
WORKSPACE_PREFIX = "/track/{clientId:workspace}/{accountId:workspace}/{brandId:workspace}/v1"


@dataclass(frozen=True)
class Endpoint:
    """One row of the route table: the route itself and its OpenAPI description.

    ``request_body`` and ``response`` are types msgspec can describe (Structs);
    ``success`` the status of a successful answer; ``errors`` the error statuses the
    route may answer besides 500.
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
    success: int = 200
    errors: tuple[int, ...] = ()
    description: str = ""
    extra_responses: dict[int, Any] = field(default_factory=dict)


class ApiRoute(Route):
    """A Starlette route that remembers its table row (the error renderer reads it).

    It also leaves its ``RouteLabels`` in the scope, for the metrics middleware, which
    sits outside the router and knows nothing of the route table.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint.path, endpoint.handler, methods=list(endpoint.methods))
        self.spec = endpoint
        answers = getattr(endpoint.response, "__struct_fields__", ())
        self.labels = RouteLabels(
            self.path_format, counts_calls=endpoint.tracking, lists_refused="errors" in answers
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[ROUTE_LABELS] = self.labels
        await super().handle(scope, receive, send)


def route_of(scope: Scope) -> Endpoint | None:
    """The table row of the route the request matched (by path), if any."""
    route = scope.get("route")
    return route.spec if isinstance(route, ApiRoute) else None


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


def workspace_of(scope: Scope) -> Workspace:
    """The path's workspace: the router admitted only valid ids (``WorkspacePartConvertor``)."""
    params = scope["path_params"]
    return Workspace(params["clientId"], params["accountId"], params["brandId"])


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header; ``name`` in lower case, as ASGI gives names."""
    for key, value in scope["headers"]:
        if key == name:
            return text(value)
    return None


def text(value: bytes | None) -> str | None:
    """A header value as text (HTTP headers are Latin-1)."""
    return None if value is None else value.decode("latin-1")
