"""The Profiles API (SPEC §6): a customer's traits, meta, events and audiences; listing.

``{idType}:{id}`` is one path segment or more: a userId may contain ``/``, sent as is
(``userId:ABC/123``) or percent-encoded (``userId:ABC%2F123``); the router decodes it
once. ``email`` may name several profiles: those answers are ``{"data": [...]}``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from opencdp import cursor
from opencdp.api.events import EVENT_PARAMETERS, READ_ERRORS, EventList, events_page, query_items
from opencdp.api.guards import read_guard
from opencdp.api.responses import JSONResponse
from opencdp.api.routing import WORKSPACE_PREFIX, Endpoint, Handler
from opencdp.api.services import Services
from opencdp.errors import ProfileNotFound
from opencdp.models import (
    ProfileQuery,
    ProfileRef,
    StoredEvent,
    StoredProfile,
    Workspace,
    format_millis,
)
from opencdp.queries import (
    ScrollRequest,
    parse_event_params,
    parse_look_up_params,
    parse_profile_list_params,
    parse_profile_ref,
)
from opencdp.store.read_plan import Window

#: Profiles in one answer of an ``email:`` look-up; ``scrollId`` continues.
EMAIL_PAGE = 100
_PROFILE = f"{WORKSPACE_PREFIX}/profiles/{{profileRef:text}}"
_BY_ID = (
    "`{idType}:{id}` with idType userId, email, id or anonymousId; email answers {data: [...]},"
    " 100 profiles at a time (oldest first), with a `scrollId` to send for the next 100."
)


def endpoints(services: Services) -> list[Endpoint]:
    def read(path: str, handler: Handler, operation: str, summary: str, **more: Any) -> Endpoint:
        return Endpoint(
            path=path,
            methods=("GET",),
            handler=handler,
            operation_id=operation,
            summary=summary,
            tag="Profiles",
            scope="read",
            errors=READ_ERRORS,
            **more,
        )

    return [
        read(
            f"{WORKSPACE_PREFIX}/profiles",
            _list_profiles(services),
            "listProfiles",
            "Profiles by recent activity (or creation), with a scrollId to go on",
            response=ProfileList,
            description="Parameters: `size` (1–100), `sort` (activity | created), or "
            "`scrollId` alone. With created, a kept scrollId later returns new profiles.",
        ),
        read(
            f"{_PROFILE}/traits",
            _traits(services),
            "getProfileTraits",
            "A customer's traits",
            description=_BY_ID,
        ),
        read(
            f"{_PROFILE}/meta",
            _meta(services),
            "getProfileMeta",
            "A customer's traits and metadata: first/last events, audiences, ids",
            description=_BY_ID,
        ),
        read(
            f"{_PROFILE}/events",
            _events(services),
            "listProfileEvents",
            "A customer's events (every profile with that email, for email)",
            response=EventList,
            description=f"{_BY_ID} {EVENT_PARAMETERS}",
        ),
        read(
            f"{_PROFILE}/audiences",
            _audiences(services),
            "getProfileAudiences",
            "A customer's audiences",
            response=AudienceList,
            description=_BY_ID,
        ),
    ]


def _traits(services: Services) -> Handler:
    async def traits(request: Request) -> Response:
        found = await _look_up(request, services)
        return found.answer([traits_record(p) for p in found.profiles])

    return traits


def _meta(services: Services) -> Handler:
    async def meta(request: Request) -> Response:
        found = await _look_up(request, services, with_events=True)
        return found.answer([meta_record(p, found.workspace) for p in found.profiles])

    return meta


def _events(services: Services) -> Handler:
    async def events(request: Request) -> Response:
        workspace = await read_guard(request, services)
        ref = parse_profile_ref(request.path_params["profileRef"])
        parsed = parse_event_params(query_items(request), user_id=False)
        if not isinstance(parsed, ScrollRequest):
            parsed = replace(parsed, profile=ref)
        context = f"profile-events\x00{workspace}\x00{ref}"
        return await events_page(services, workspace, parsed, context)

    return events


def _audiences(services: Services) -> Handler:
    async def audiences(request: Request) -> Response:
        found = await _look_up(request, services)
        names: dict[str, None] = {}
        for profile in found.profiles:
            names.update(dict.fromkeys(profile.audiences))
        return found.answer(list(names), always_data=True)

    return audiences


def _list_profiles(services: Services) -> Handler:
    async def list_profiles(request: Request) -> Response:
        workspace = await read_guard(request, services)
        parsed = parse_profile_list_params(query_items(request))
        key = await services.store.cursor_secret()
        context = f"profiles\x00{workspace}"
        if isinstance(parsed, ScrollRequest):
            query = cursor.decode(parsed.scroll_id, ProfileQuery, key, context)
        else:
            query = parsed
        page = await services.store.list_profiles(workspace, query)
        after = ProfileQuery(query.sort, query.size, page.last)
        data = [
            {**traits_record(p), "lastActivityTime": _time(p.last_activity_time)}
            for p in page.profiles
        ]
        return JSONResponse({"scrollId": cursor.encode(after, key, context), "data": data})

    return list_profiles


# -- helpers ----------------------------------------------------------------------------


@dataclass
class _Found:
    """A look-up's profiles; for ``email``, one page of them and the cursor to the next."""

    workspace: Workspace
    ref: ProfileRef
    profiles: list[StoredProfile]
    next_page: str | None

    def answer(self, records: list[Any], *, always_data: bool = False) -> Response:
        if self.ref.id_type != "email":
            return JSONResponse({"data": records} if always_data else records[0])
        body: dict[str, Any] = {"data": records}
        if self.next_page is not None:
            body["scrollId"] = self.next_page
        return JSONResponse(body)


async def _look_up(request: Request, services: Services, *, with_events: bool = False) -> _Found:
    """The profiles a look-up names (404 when none): ``EMAIL_PAGE`` at a time for ``email``."""
    workspace = await read_guard(request, services)
    ref = parse_profile_ref(request.path_params["profileRef"])
    scroll = parse_look_up_params(query_items(request), ref)
    store = services.store
    if ref.id_type != "email":
        profiles = await store.find_profiles(workspace, ref, with_events=with_events)
        if not profiles:
            raise ProfileNotFound()
        return _Found(workspace, ref, profiles, None)
    key = await store.cursor_secret()
    context = f"email-profiles\x00{workspace}\x00{ref}"
    offset = 0 if scroll is None else cursor.decode(scroll.scroll_id, int, key, context)
    page = Window(offset, EMAIL_PAGE + 1)
    profiles = await store.find_profiles(workspace, ref, with_events=with_events, page=page)
    if not profiles and scroll is None:
        raise ProfileNotFound()
    more = len(profiles) > EMAIL_PAGE
    next_page = cursor.encode(offset + EMAIL_PAGE, key, context) if more else None
    return _Found(workspace, ref, profiles[:EMAIL_PAGE], next_page)


def _time(ms: int | None) -> str | None:
    return None if ms is None else format_millis(ms)


def traits_record(profile: StoredProfile) -> dict[str, Any]:
    """The traits object plus ``id`` and ``externalId`` (which win over same-named traits)."""
    return {**profile.traits, "id": profile.id, "externalId": profile.external_id}


def meta_record(profile: StoredProfile, workspace: Workspace) -> dict[str, Any]:
    subscription = f"{workspace.client_id}:{workspace.account_id}:{profile.id}"
    return {
        **traits_record(profile),
        "createdBy": {**profile.created_by, "createdTime": format_millis(profile.created_time)},
        "firstEvent": {a: meta_event(e) for a, e in profile.first_events.items()},
        "lastEvent": {a: meta_event(e) for a, e in profile.last_events.items()},
        "audiencesStatic": profile.audiences,
        "lastActivityTime": _time(profile.last_activity_time),
        "anonymousIds": profile.anonymous_ids,
        "_subscriptionId": base64.b64encode(subscription.encode("utf-8")).decode("ascii"),
    }


def meta_event(event: StoredEvent) -> dict[str, Any]:
    """An event inside ``firstEvent``/``lastEvent``: its rawData fields plus its ids and times."""
    return {
        **event.raw,
        "eventId": event.event_id,
        "eventTime": format_millis(event.event_time),
        "receivedTime": format_millis(event.received_time),
        "action": event.raw.get("action", ""),
        "event": event.raw.get("event", event.event_action),
    }


# -- documentation ----------------------------------------------------------------------


class ProfileList(msgspec.Struct):
    """Traits objects with ``id``, ``externalId`` and ``lastActivityTime``."""

    scrollId: str
    data: list[dict[str, Any]]


class AudienceList(msgspec.Struct):
    """The audience names; for ``email``, a ``scrollId`` while more profiles remain."""

    data: list[str]
    scrollId: str | msgspec.UnsetType = msgspec.UNSET
