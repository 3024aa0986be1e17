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

from starlette.types import Receive, Scope, Send

from opencdp.api.guards import guard, read_body
from opencdp.api.responses import allow_origin, preflight, send_json
from opencdp.api.routing import WORKSPACE_PREFIX, Endpoint, header, workspace_of
from opencdp.api.services import Services
from opencdp.calls import (
    CALL_TYPES,
    CALLS,
    BatchAccepted,
    BatchCall,
    BatchRejected,
    CallAccepted,
)
from opencdp.ingest import decode_json_object, parse_batch, parse_call

ACTIONS = (*CALL_TYPES, "batch")
TRACKING_ERRORS = (400, 403, 404, 405, 413, 415, 429, 503)
_ALLOW_HEADERS = "content-type, auth-token, x-request-id"
_SUMMARIES = {
    "identify": "Identify a customer and merge traits",
    "track": "Record an event",
    "page": "Record a page view",
    "screen": "Record a screen view",
    "alias": "Merge one customer id into another",
    "group": "Record the group (company, team) a customer belongs to",
    "batch": "Send up to 1000 calls at once",
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
            request_body=BatchCall if action == "batch" else CALLS[action],
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
            answer = preflight(header(scope, b"origin"), "POST, OPTIONS", _ALLOW_HEADERS)
            await answer(scope, receive, send)
            return
        allow_origin(scope)
        await send_json(send, await self.accept(scope, receive))

    async def accept(self, scope: Scope, receive: Receive) -> CallAccepted | BatchAccepted:
        """Check, parse and store the call: the answer (errors are raised)."""
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
            valid = [call for call in calls if call is not None]
            accepted = await services.store.append_calls(workspace, valid)
            return BatchAccepted.of(calls, accepted, problems)
        call = parse_call(self.action, body, received_time=received_time, client_ip=client_ip)
        [accepted_call] = await services.store.append_calls(workspace, [call])
        return CallAccepted.of(accepted_call)
