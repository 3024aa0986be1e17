"""One write batch on SQLite: load the identities it names, apply the rules, save.

Each step is one SQL statement over the whole batch (``json_each`` for input,
``json_group_array`` for output). The writer thread releases the GIL once per
statement instead of once per row, which keeps it fast beside a busy event loop.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import uuid_utils

from opencdp.identity import ANON, USER, IdentityGraph, IdentityKey, ProfileState
from opencdp.models import Accepted, Call

log = logging.getLogger("opencdp.store")

_encode = msgspec.json.encode
_decode = msgspec.json.decode

_FIND_MESSAGES = """
SELECT json_group_array(json_array(e.message_id, e.event_id))
FROM json_each(?1) j JOIN events e ON e.workspace_id = ?2 AND e.message_id = j.value
"""
_FIND_IDENTITIES = """
SELECT json_group_array(json_array(i.kind, i.value, i.profile_pk))
FROM json_each(?1) j
JOIN identities i ON i.workspace_id = ?2 AND i.kind = j.value ->> 0 AND i.value = j.value ->> 1
"""
_LOAD_PROFILES = """
SELECT json_group_array(json_array(
    p.pk, p.id, p.external_id, json(p.traits), json(p.trait_stamps), json(p.anonymous_ids),
    json(p.audiences), json(p.created_by), p.created_time, json(p.first_events),
    json(p.last_events), p.last_activity, p.merged_into))
FROM json_each(?1) j JOIN profiles p ON p.pk = j.value
"""
_SAVE_PROFILES = """
INSERT INTO profiles (pk, workspace_id, id, external_id, email, traits, trait_stamps,
    anonymous_ids, audiences, created_by, created_time, first_events, last_events,
    last_activity, merged_into)
SELECT j.value ->> 0, ?2, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value -> 4,
    j.value -> 5, j.value -> 6, j.value -> 7, j.value -> 8, j.value ->> 9, j.value -> 10,
    j.value -> 11, j.value ->> 12, j.value ->> 13
FROM json_each(?1) j WHERE true
ON CONFLICT (pk) DO UPDATE SET external_id = excluded.external_id, email = excluded.email,
    traits = excluded.traits, trait_stamps = excluded.trait_stamps,
    anonymous_ids = excluded.anonymous_ids, audiences = excluded.audiences,
    first_events = excluded.first_events, last_events = excluded.last_events,
    last_activity = excluded.last_activity, merged_into = excluded.merged_into
"""
_SAVE_IDENTITIES = """
INSERT INTO identities (workspace_id, kind, value, profile_pk)
SELECT ?2, j.value ->> 0, j.value ->> 1, j.value ->> 2 FROM json_each(?1) j WHERE true
ON CONFLICT (workspace_id, kind, value) DO UPDATE SET profile_pk = excluded.profile_pk
"""
_SAVE_EVENTS = """
INSERT INTO events (workspace_id, event_id, message_id, profile_pk, action, event_time,
    received_time, user_id, anonymous_id, raw)
SELECT ?2, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
    j.value ->> 5, j.value ->> 6, j.value ->> 7, j.value ->> 8
FROM json_each(?1) j
"""


def new_profile_id() -> str:
    return str(uuid_utils.uuid4())


def new_event_id() -> str:
    """Time-ordered (UUIDv7) ids keep the event-id index append-mostly."""
    return str(uuid_utils.uuid7())


class BatchWriter:
    """Applies calls for one workspace inside the writer's open transaction."""

    def __init__(self, conn: sqlite3.Connection, allocate_pk: Callable[[], int]) -> None:
        self._conn = conn
        self._allocate_pk = allocate_pk
        self.refused_merges = 0

    def write(self, workspace_id: int, calls: Sequence[Call]) -> list[Accepted]:
        """Store the calls; one ``Accepted`` per call, repeats answered with the first id."""
        accepted: dict[int, Accepted] = self._find_stored(workspace_id, calls)
        first_index: dict[str, int] = {}
        fresh: list[int] = []
        for index, call in enumerate(calls):
            if index in accepted:
                continue
            if call.message_id is not None:
                if call.message_id in first_index:
                    continue
                first_index[call.message_id] = index
            fresh.append(index)
        graph = self._load_graph(workspace_id, [calls[i] for i in fresh])
        rows = []
        for index in fresh:
            event_id = new_event_id()
            profile_pk = graph.apply(calls[index], event_id)
            accepted[index] = Accepted(event_id)
            rows.append(_event_row(calls[index], event_id, profile_pk))
        self._save(workspace_id, graph, rows)
        self._report(workspace_id, graph)
        return [
            accepted.get(i) or Accepted(accepted[first_index[c.message_id or ""]].event_id, True)
            for i, c in enumerate(calls)
        ]

    def _find_stored(self, workspace_id: int, calls: Sequence[Call]) -> dict[int, Accepted]:
        """The calls whose messageId the workspace has already stored, by index."""
        message_ids = [c.message_id for c in calls if c.message_id is not None]
        if not message_ids:
            return {}
        known = dict(_decode(self._scalar(_FIND_MESSAGES, _encode(message_ids), workspace_id)))
        return {
            i: Accepted(known[c.message_id], duplicate=True)
            for i, c in enumerate(calls)
            if c.message_id is not None and c.message_id in known
        }

    def _report(self, workspace_id: int, graph: IdentityGraph) -> None:
        for refusal in graph.refusals:
            self.refused_merges += 1
            log.warning(
                "identity link refused",
                extra={"reason": refusal.reason, "workspace_id": workspace_id},
            )

    def _load_graph(self, workspace_id: int, calls: Sequence[Call]) -> IdentityGraph:
        keys: set[IdentityKey] = set()
        for call in calls:
            keys.update(_identity_keys(call))
        identities: dict[IdentityKey, int] = {}
        profiles: dict[int, ProfileState] = {}
        if keys:
            found = self._scalar(_FIND_IDENTITIES, _encode(sorted(keys)), workspace_id)
            identities = {(k, v): pk for k, v, pk in _decode(found)}
        if identities:
            loaded = self._scalar(_LOAD_PROFILES, _encode(sorted(set(identities.values()))))
            profiles = {row[0]: _profile_from_row(row) for row in _decode(loaded)}
        return IdentityGraph(profiles, identities, self._allocate_pk, new_profile_id)

    def _save(self, workspace_id: int, graph: IdentityGraph, rows: list[list[Any]]) -> None:
        if graph.changed:
            profiles = [_profile_row(p) for p in graph.changed.values()]
            self._conn.execute(_SAVE_PROFILES, (_encode(profiles), workspace_id))
        if graph.links:
            links = [[k, v, pk] for (k, v), pk in graph.links.items()]
            self._conn.execute(_SAVE_IDENTITIES, (_encode(links), workspace_id))
        for source, target in graph.merges:
            self._conn.execute(
                "UPDATE events SET profile_pk = ? WHERE profile_pk = ?", (target, source)
            )
            self._conn.execute(
                "UPDATE identities SET profile_pk = ? WHERE profile_pk = ?", (target, source)
            )
        if rows:
            self._conn.execute(_SAVE_EVENTS, (_encode(rows), workspace_id))

    def _scalar(self, sql: str, *params: Any) -> Any:
        row = self._conn.execute(sql, params).fetchone()
        return row[0]


def _identity_keys(call: Call) -> list[IdentityKey]:
    keys: list[IdentityKey] = []
    if call.user_id is not None:
        keys.append((USER, call.user_id))
    if call.anonymous_id is not None:
        keys.append((ANON, call.anonymous_id))
    if call.previous_id is not None:
        keys += [(USER, call.previous_id), (ANON, call.previous_id)]
    return keys


def _event_row(call: Call, event_id: str, profile_pk: int) -> list[Any]:
    raw = call.raw
    anonymous_id = raw.get("anonymousId")
    return [
        event_id,
        call.message_id,
        profile_pk,
        call.event_action,
        call.event_time,
        call.received_time,
        call.user_id,
        anonymous_id if isinstance(anonymous_id, str) else None,
        _encode(raw).decode(),
    ]


def _profile_row(p: ProfileState) -> list[Any]:
    email = p.traits.get("email")
    return [
        p.pk, p.id, p.external_id, email if isinstance(email, str) and email else None,
        p.traits, p.trait_stamps, p.anonymous_ids, p.audiences, p.created_by,
        p.created_time, p.first_events, p.last_events, p.last_activity, p.merged_into,
    ]


def _profile_from_row(row: list[Any]) -> ProfileState:
    return ProfileState(
        pk=row[0], id=row[1], external_id=row[2], traits=row[3], trait_stamps=row[4],
        anonymous_ids=row[5], audiences=row[6], created_by=row[7], created_time=row[8],
        first_events=row[9], last_events=row[10], last_activity=row[11], merged_into=row[12],
    )
