"""Helpers for the read-API tests: tracking calls built as ``models.Call`` objects."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from opencdp.ingest import event_action_name
from opencdp.models import Call, EventKey, EventPage, EventQuery, Workspace, format_millis
from opencdp.store.base import Store
from tests.paging import pages

WS = Workspace("c1", "a1", "b1")
OTHER_BRAND = Workspace("c1", "a1", "b2")
OTHER_ACCOUNT = Workspace("c1", "a2", "b1")
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z

_received = itertools.count(T0 + 10_000_000)


def call(
    action: str = "track",
    *,
    event: str | None = "Product Added",
    user_id: str | None = None,
    anonymous_id: str | None = None,
    at: int = T0,
    received: int | None = None,
    properties: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
    previous_id: str | None = None,
) -> Call:
    """A normalised call as ``ingest`` would make it; ``received`` grows by default."""
    raw: dict[str, Any] = {"action": action, "timestamp": format_millis(at)}
    if action == "track" and event is not None:
        raw["event"] = event
    for name, value in (
        ("userId", user_id),
        ("anonymousId", anonymous_id),
        ("properties", properties),
        ("traits", traits),
        ("previousId", previous_id),
    ):
        if value is not None:
            raw[name] = value
    name = event_action_name(event) if action == "track" and event else action
    return Call(
        action=action,
        event_action=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        event_time=at,
        received_time=next(_received) if received is None else received,
        raw=raw,
        traits=traits if action == "identify" else None,
        previous_id=previous_id,
    )


async def send(store: Store, *calls: Call, workspace: Workspace = WS) -> list[str]:
    """Store the calls; their event ids in order."""
    accepted = await store.append_calls(workspace, list(calls))
    return [a.event_id for a in accepted]


async def read_all(store: Store, query: EventQuery, workspace: Workspace = WS) -> list[str]:
    """Every event id of a query, by scrolling with the keyset (``after``)."""
    seen: list[str] = []
    page: EventPage = await store.list_events(workspace, query)
    for _ in pages(page.total, query.size):
        if not page.events:
            break
        seen += [e.event_id for e in page.events]
        query = replace(query, offset=0, after=EventKey.of(page.events[-1]))
        page = await store.list_events(workspace, query)
    return seen
