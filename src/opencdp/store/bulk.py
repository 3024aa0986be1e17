"""Store-independent steps of a bulk load: a ``BulkProfile`` becomes rows.

A bulk load writes what the tracking API would have written for the same history
(profile, identities, events, first/last events, trait stamps), without running
each call through the identity graph: it is for loading tools and the benchmark's
data generator, on data known to be consistent (one profile per ``userId``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from opencdp.identity import ANON, USER, EventStamp, ProfileState
from opencdp.models import BulkProfile
from opencdp.store.batching import new_event_id, new_profile_id, profile_row

_encode = msgspec.json.encode


@dataclass(frozen=True, slots=True)
class BulkReport:
    """What a bulk load stored."""

    profiles: int
    events: int


@dataclass(slots=True)
class BulkRows:
    """One profile's rows: the profile (``profile_row`` order), identities, events.

    An event row is ``[event_id, profile_pk, event_action, event_time, received_time,
    user_id, anonymous_id, raw JSON text]``.
    """

    profile: list[Any]
    identities: list[tuple[str, str, int]]
    events: list[list[Any]]


def profile_rows(source: BulkProfile, pk: int) -> BulkRows:
    """The rows that store ``source`` under the row id ``pk``."""
    profile = ProfileState(
        pk=pk,
        id=new_profile_id(),
        external_id=source.user_id,
        traits=source.traits,
        trait_stamps={key: [source.created_time, source.created_time] for key in source.traits},
        anonymous_ids=list(source.anonymous_ids),
        created_by={"type": "identify", "createdTime": source.created_time},
        created_time=source.created_time,
    )
    events = []
    first, last = profile.first_events, profile.last_events
    for event in source.events:
        event_id = new_event_id()
        stamp: EventStamp = [event.event_time, event.received_time, event_id]
        action = event.event_action
        if action not in first or stamp < first[action]:
            first[action] = stamp
        if action not in last or stamp > last[action]:
            last[action] = stamp
        anonymous_id = event.raw.get("anonymousId")
        events.append([
            event_id, pk, action, event.event_time, event.received_time, source.user_id,
            anonymous_id if isinstance(anonymous_id, str) else None, _encode(event.raw).decode(),
        ])
    if source.events:
        profile.last_activity = max(e.event_time for e in source.events)
    identities = [(USER, source.user_id, pk)]
    identities += [(ANON, anonymous_id, pk) for anonymous_id in source.anonymous_ids]
    return BulkRows(profile_row(profile), identities, events)
