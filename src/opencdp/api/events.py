"""The Events API (SPEC §5): ``GET …/v1/events``, the change feed ``GET …/v1/events/feed``
and ``GET …/v1/events/{eventId}`` (the feed's route comes first: it would be an event id).

Each handler: check (``read_guard``) → parse (``queries``) → one store call → answer.
No CORS headers: read APIs must not be called from browsers. The page and scroll
logic here is shared with a profile's events (``api/profiles.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from opencdp import cursor
from opencdp.api.guards import read_guard
from opencdp.api.responses import JSONResponse
from opencdp.api.routing import WORKSPACE_PREFIX, Endpoint, Handler
from opencdp.api.services import Services
from opencdp.errors import EventNotFound, ValidationFailed
from opencdp.models import (
    EventKey,
    EventQuery,
    FeedPage,
    FeedQuery,
    StoredEvent,
    Workspace,
    format_millis,
)
from opencdp.queries import (
    FeedRequest,
    Params,
    ScrollRequest,
    parse_event_params,
    parse_feed_params,
    parse_no_params,
)

READ_ERRORS = (400, 401, 403, 404, 405, 413, 429)
EVENT_PARAMETERS = (
    "Parameters: `include`, `exclude` (comma-separated event actions), `start`, `end` "
    "(ISO-8601; start ≤ eventTime < end), `sort` (asc | desc), `from`, `size` (1–100), "
    "`properties.<key>=<value>`, `userId`, or `scrollId` alone to continue a scroll."
)
FEED_PARAMETERS = (
    "Events in commit order, each exactly once to a consumer that follows `next`. "
    "Parameters: `after` (a `next` cursor, or `now`; omitted: from the oldest event), "
    "`size` (1–1000, default 100), `wait` (0–30 seconds: an empty answer waits that long "
    "for an event), `include`, `exclude` (comma-separated event actions)."
)


def endpoints(services: Services) -> list[Endpoint]:
    return [
        Endpoint(
            path=f"{WORKSPACE_PREFIX}/events",
            methods=("GET",),
            handler=_list_events(services),
            operation_id="listEvents",
            summary="The workspace's events, newest first, filtered and paged",
            tag="Events",
            scope="read",
            response=EventList,
            errors=READ_ERRORS,
            description=EVENT_PARAMETERS,
        ),
        Endpoint(
            path=f"{WORKSPACE_PREFIX}/events/feed",
            methods=("GET",),
            handler=_feed(services),
            operation_id="followEvents",
            summary="The change feed: the workspace's events in commit order, long-polled",
            tag="Events",
            scope="read",
            response=EventFeed,
            errors=(*READ_ERRORS, 503),
            description=FEED_PARAMETERS,
        ),
        Endpoint(
            path=f"{WORKSPACE_PREFIX}/events/{{eventId}}",
            methods=("GET",),
            handler=_get_event(services),
            operation_id="getEvent",
            summary="One event by its eventId",
            tag="Events",
            scope="read",
            response=EventWithStatus,
            errors=READ_ERRORS,
        ),
    ]


def _list_events(services: Services) -> Handler:
    async def list_events(request: Request) -> Response:
        workspace = await read_guard(request, services)
        parsed = parse_event_params(query_items(request))
        return await events_page(services, workspace, parsed, f"events\x00{workspace}")

    return list_events


def _get_event(services: Services) -> Handler:
    async def get_event(request: Request) -> Response:
        workspace = await read_guard(request, services)
        parse_no_params(query_items(request))
        event_id = request.path_params["eventId"]
        event = None if "\x00" in event_id else await services.store.get_event(workspace, event_id)
        if event is None:  # (no store can hold a NUL, so no event has one in its id)
            raise EventNotFound()
        return JSONResponse({**event_record(event), "status": event.status})

    return get_event


def _feed(services: Services) -> Handler:
    async def feed(request: Request) -> Response:
        workspace = await read_guard(request, services)
        parsed = parse_feed_params(query_items(request))
        key = await services.store.cursor_secret()
        context = f"feed\x00{workspace}"
        query = FeedQuery(feed_start(parsed, key, context), parsed.size, parsed.include,
                          parsed.exclude)
        reading = services.store.feed(workspace, query, wait=parsed.wait)
        page = await reading if not parsed.wait else await _unless_gone(request, reading)
        if page is None:  # the client left while the answer waited
            return Response(status_code=499)
        return JSONResponse(
            {
                "data": [event_record(event) for event in page.events],
                "next": cursor.encode(page.next, key, context),
            }
        )

    return feed


def feed_start(parsed: FeedRequest, key: bytes, context: str) -> int | None:
    """The position the feed reads after: 0 (the oldest event on), None (``now``), or the
    one a ``next`` cursor of this workspace holds."""
    if parsed.now:
        return None
    if parsed.after is None:
        return 0
    try:
        return cursor.decode(parsed.after, int, key, context)
    except cursor.InvalidCursor:
        raise ValidationFailed("after: not a cursor issued by this workspace's feed") from None


async def _unless_gone(request: Request, reading: Any) -> FeedPage | None:
    """The held answer, or None as soon as the client disconnects (the wait is ended)."""
    answer = asyncio.ensure_future(reading)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((answer, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (answer, gone):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return answer.result() if not answer.cancelled() else None


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


# -- shared by the read routes -----------------------------------------------------------


def query_items(request: Request) -> Params:
    return request.query_params.multi_items()


async def events_page(
    services: Services, workspace: Workspace, parsed: EventQuery | ScrollRequest, context: str
) -> Response:
    """One page of events and the ``scrollId`` that continues after it.

    The cursor holds the query and the key of the page's last event. After an empty
    page it holds the query unchanged, so it stays usable (in ascending order it later
    returns what was committed since).
    """
    key = await services.store.cursor_secret()
    if isinstance(parsed, ScrollRequest):
        query = cursor.decode(parsed.scroll_id, EventQuery, key, context)
    else:
        query = parsed
    page = await services.store.list_events(workspace, query)
    if page.events:
        query = replace(query, offset=0, after=EventKey.of(page.events[-1]))
    return JSONResponse(
        {
            "total": page.total,
            "scrollId": cursor.encode(query, key, context),
            "data": [event_record(event) for event in page.events],
        }
    )


def event_record(event: StoredEvent) -> dict[str, Any]:
    """An event as the read APIs answer it (SPEC §1)."""
    workspace = event.workspace
    return {
        "id": event.profile_id,
        "customerId": event.profile_id,
        "externalId": event.external_id,
        "userId": event.user_id,
        "anonymousId": event.anonymous_id,
        "email": event.email,
        "eventId": event.event_id,
        "eventAction": event.event_action,
        "eventTime": format_millis(event.event_time),
        "receivedTime": format_millis(event.received_time),
        "clientId": workspace.client_id,
        "accountId": workspace.account_id,
        "brandId": workspace.brand_id,
        "source": event.source,
        "rawData": event.raw,
    }


# -- documentation: the shapes below describe the answers ------------------------------


class EventRecord(msgspec.Struct):
    """One event; ``rawData`` is the call as sent plus ``action`` (the call type)."""

    id: str
    customerId: str
    externalId: str
    userId: str | None
    anonymousId: str | None
    email: str
    eventId: str
    eventAction: str
    eventTime: str
    receivedTime: str
    clientId: str
    accountId: str
    brandId: str
    source: str
    rawData: dict[str, Any]


class EventList(msgspec.Struct):
    """``total`` counts the whole query (capped at 10000); pass ``scrollId`` to go on."""

    total: int
    scrollId: str
    data: list[EventRecord]


class EventFeed(msgspec.Struct):
    """Events after ``after`` in commit order; pass ``next`` as ``after`` to go on (it is
    there on an empty answer too)."""

    data: list[EventRecord]
    next: str


class EventWithStatus(EventRecord):
    status: str
