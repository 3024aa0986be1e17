"""The tracking API (SPEC §4): ``POST /track/{clientId}/{accountId}/{brandId}/v1/{action}``.

Each handler: check (``guard``) → parse (``ingest``) → one store call → answer.
A 200 is sent only after the store has committed the calls. Tracking routes answer
CORS pre-flight so a website's own tag can send events; no other route does.

The handlers are bare ASGI apps, not ``Request -> Response`` functions: this is the
hot path, and Starlette's request and response wrapping is a large share of its cost.
Errors are raised as everywhere else (``app.error_answer`` answers them).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from opencdp.api.common import (
    WORKSPACE_PREFIX,
    Endpoint,
    Services,
    allow_origin,
    guard,
    header,
    read_body,
    send_json,
    store_batch,
    workspace_of,
)
from opencdp.ingest import decode_json_object, parse_batch, parse_call

ACTIONS = ("identify", "track", "page", "screen", "alias", "batch")
TRACKING_ERRORS = (400, 403, 404, 405, 413, 415, 429, 503)
_PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "content-type, auth-token, x-request-id",
    "Access-Control-Max-Age": "600",
}


def endpoints(services: Services) -> list[Endpoint]:
    """One route per action, all answering POST (the call) and OPTIONS (pre-flight)."""
    return [
        Endpoint(
            path=f"{WORKSPACE_PREFIX}/{action}",
            methods=("POST", "OPTIONS"),
            handler=TrackingCall(services, action),
            operation_id=action,
            summary=_SUMMARIES[action],
            tag="Tracking",
            tracking=True,
            scope="write",
            request_body=_BODIES[action],
            response=BatchAccepted if action == "batch" else CallAccepted,
            errors=TRACKING_ERRORS,
            extra_responses={400: BatchRejected} if action == "batch" else {},
        )
        for action in ACTIONS
    ]


class TrackingCall:
    """The ASGI app of one action: ``POST`` stores the call, ``OPTIONS`` answers pre-flight."""

    def __init__(self, services: Services, action: str) -> None:
        self.services = services
        self.action = action
        self.__name__ = f"track_{action}"  # the route's name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS":
            await _preflight(header(scope, b"origin"))(scope, receive, send)
            return
        allow_origin(scope)
        status, answer = await self.accept(scope, receive)
        await send_json(send, answer, status)

    async def accept(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        """Check, parse and store the call: the answer's status and body."""
        services = self.services
        workspace = workspace_of(scope)
        limit = services.settings.track_body_limit
        await guard(
            scope, services, workspace, access="write", body_limit=limit, unknown_status=403
        )
        body = decode_json_object(await read_body(receive, limit))
        received_time = time.time_ns() // 1_000_000
        client_ip = services.client_address.of(scope)
        if self.action == "batch":
            calls, problems = parse_batch(body, received_time=received_time, client_ip=client_ip)
            return await store_batch(scope, services, workspace, calls, problems)
        call = parse_call(self.action, body, received_time=received_time, client_ip=client_ip)
        accepted = await services.store.append_calls(workspace, [call])
        return 200, {"success": True, "eventId": accepted[0].event_id}


def _preflight(origin: str | None) -> Response:
    headers = {"Access-Control-Allow-Origin": origin or "*", **_PREFLIGHT_HEADERS}
    if origin:
        headers["Vary"] = "Origin"
    return Response(status_code=204, headers=headers)


# -- documentation: the shapes below describe the API; ``ingest`` does the validating ---

_RFC3339 = "RFC 3339 date-time with a zone or Z, e.g. 2019-11-18T13:30:11.444Z"
Timestamp = Annotated[datetime, msgspec.Meta(description=_RFC3339)]
MessageId = Annotated[
    str, msgspec.Meta(description="Idempotency key: a repeat answers the first call's eventId")
]
SentAt = Annotated[
    datetime, msgspec.Meta(description="When the client sent the call; corrects its clock skew")
]
Object = dict[str, Any]


class _Common(msgspec.Struct, kw_only=True):
    timestamp: Timestamp
    context: Object | UnsetType = UNSET
    messageId: MessageId | UnsetType = UNSET
    sentAt: SentAt | UnsetType = UNSET


class IdentifyCall(_Common, kw_only=True):
    """Creates the customer's profile if needed and merges ``traits`` into it."""

    userId: str
    traits: Object
    event: Literal["identify"] | UnsetType = UNSET
    anonymousId: str | None | UnsetType = UNSET


class TrackCall(_Common, kw_only=True):
    """Records an event. ``userId`` or ``anonymousId`` is required."""

    event: Annotated[str, msgspec.Meta(min_length=1)]
    userId: str | UnsetType = UNSET
    anonymousId: str | None | UnsetType = UNSET
    properties: Object | UnsetType = UNSET


class PageCall(_Common, kw_only=True):
    """Records a page view. ``userId`` or ``anonymousId`` is required."""

    userId: str | UnsetType = UNSET
    anonymousId: str | None | UnsetType = UNSET
    event: Literal["page"] | UnsetType = UNSET
    name: str | UnsetType = UNSET
    properties: Object | UnsetType = UNSET


class ScreenCall(_Common, kw_only=True):
    """Records a screen view in an app. ``userId`` or ``anonymousId`` is required."""

    userId: str | UnsetType = UNSET
    anonymousId: str | None | UnsetType = UNSET
    event: Literal["screen"] | UnsetType = UNSET
    name: str | UnsetType = UNSET
    properties: Object | UnsetType = UNSET


class AliasCall(_Common, kw_only=True):
    """Merges ``previousId``'s profile into ``userId``'s."""

    userId: str
    previousId: str


class BatchCall(msgspec.Struct, kw_only=True):
    """Up to 1000 calls, each an identify/track/page/screen/alias body with its ``type``."""

    batch: Annotated[list[Object], msgspec.Meta(min_length=1, max_length=1000)]
    sentAt: Timestamp | UnsetType = UNSET


class CallAccepted(msgspec.Struct):
    """The call is committed; a repeat of a ``messageId`` answers the first ``eventId``."""

    success: Literal[True]
    eventId: str


class BatchItemProblem(msgspec.Struct):
    index: int
    code: str
    message: str


class BatchAccepted(msgspec.Struct):
    """Every valid call is committed; ``eventIds`` holds ``null`` where a call was rejected."""

    success: Literal[True]
    eventIds: list[str | None]
    errors: list[BatchItemProblem]


class _ErrorDetail(msgspec.Struct):
    code: str
    message: str


class BatchRejected(msgspec.Struct):
    """No call of the batch was valid (or the body was unusable)."""

    success: Literal[False]
    message: str
    error: _ErrorDetail
    errors: list[BatchItemProblem] | UnsetType = UNSET


_BODIES: dict[str, type[msgspec.Struct]] = {
    "identify": IdentifyCall,
    "track": TrackCall,
    "page": PageCall,
    "screen": ScreenCall,
    "alias": AliasCall,
    "batch": BatchCall,
}
_SUMMARIES = {
    "identify": "Identify a customer and merge traits",
    "track": "Record an event",
    "page": "Record a page view",
    "screen": "Record a screen view",
    "alias": "Merge one customer id into another",
    "batch": "Send up to 1000 calls at once",
}
