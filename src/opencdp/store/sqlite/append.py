"""One write batch on SQLite: load the identities it names, apply the rules, save.

It runs in the writer process (``sqlite.writer_process``, through ``sqlite.apply``), which
has a core and a GIL of its own: loading is one statement (``json_each`` in,
``json_group_array`` out), saving is one ``executemany`` per table, the cheapest way to
insert rows there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from opencdp.identity import IdentityGraph, IdentityKey, ProfileState
from opencdp.models import JSON, Accepted, Call
from opencdp.store.batching import (
    BatchPlan,
    event_row,
    identity_keys,
    message_ids,
    new_event_id,
    new_profile_id,
    profile_from_row,
    profile_row,
    raw_fields,
    report_refusals,
)

_encode = msgspec.json.encode
_decode = msgspec.json.decode

#: The highest position (``seq``) any event was ever given, deleted ones included.
LAST_POSITION = (
    "max((SELECT coalesce(max(seq), 0) FROM events),"
    " (SELECT last FROM feed_clock WHERE one = 1))"
)
# Everything a batch reads, in one statement (one hand-over of the GIL, not four):
# the messageIds already stored (?1), the identities the batch names (?2) and their
# profiles, the highest profile pk (read inside the write lock: other processes,
# ``--workers N``, may have created profiles since this writer's last batch), and the
# highest feed position ever given (migration 0005: deleted events' are not reused).
_LOAD = """
WITH named AS (
    SELECT i.kind, i.value, i.profile_pk FROM json_each(?2) j
    CROSS JOIN identities i
        ON i.workspace_id = ?3 AND i.kind = j.value ->> 0 AND i.value = j.value ->> 1
)
SELECT
    (SELECT json_group_array(json_array(e.message_id, e.event_id))
     FROM json_each(?1) j CROSS JOIN events e
         ON e.workspace_id = ?3 AND e.message_id = j.value),
    (SELECT json_group_array(json_array(kind, value, profile_pk)) FROM named),
    (SELECT json_group_array(json_array(
        p.pk, p.id, p.external_id, json(p.traits), json(p.trait_stamps),
        json(p.anonymous_ids), json(p.audiences), json(p.created_by), p.created_time,
        json(p.first_events), json(p.last_events), p.last_activity, p.merged_into))
     FROM profiles p WHERE p.pk IN (SELECT profile_pk FROM named)),
    (SELECT coalesce(max(pk), 0) FROM profiles),
    """ + LAST_POSITION + """
"""
#: A ``profile_params`` row into the profiles table (the batch writer, the bulk load).
INSERT_PROFILE = """
INSERT INTO profiles (pk, workspace_id, id, external_id, email, traits, trait_stamps,
    anonymous_ids, audiences, created_by, created_time, first_events, last_events,
    last_activity, merged_into)
VALUES (?1, ?15, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
"""
_SAVE_PROFILES = INSERT_PROFILE + """\
ON CONFLICT (pk) DO UPDATE SET external_id = excluded.external_id, email = excluded.email,
    traits = excluded.traits, trait_stamps = excluded.trait_stamps,
    anonymous_ids = excluded.anonymous_ids, audiences = excluded.audiences,
    first_events = excluded.first_events, last_events = excluded.last_events,
    last_activity = excluded.last_activity, merged_into = excluded.merged_into
"""
_SAVE_IDENTITIES = """
INSERT INTO identities (workspace_id, kind, value, profile_pk) VALUES (?, ?, ?, ?)
ON CONFLICT (workspace_id, kind, value) DO UPDATE SET profile_pk = excluded.profile_pk
"""
_SAVE_EVENTS = """
INSERT INTO events (seq, workspace_id, event_id, message_id, profile_pk, action, event_time,
    received_time, user_id, anonymous_id, raw)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
#: The JSON columns of a ``profile_row`` (objects and lists), stored as JSON text.
_PROFILE_JSON = (4, 5, 6, 7, 8, 10, 11)


class WireCall(msgspec.Struct, array_like=True, gc=False):
    """A ``Call`` on its way to the writer process.

    Its ``raw`` travels as the JSON text the events table keeps: the process never
    builds it as Python objects (decoding a 1 KB call costs more than inserting it).
    """

    action: str
    event_action: str
    user_id: str | None
    anonymous_id: str | None
    event_time: int
    received_time: int
    raw: str
    sent_anonymous_id: str | None
    message_id: str | None
    traits: JSON | None
    previous_id: str | None

    @classmethod
    def of(cls, call: Call) -> WireCall:
        raw, sent_anonymous_id = raw_fields(call)
        return cls(
            call.action, call.event_action, call.user_id, call.anonymous_id, call.event_time,
            call.received_time, raw, sent_anonymous_id, call.message_id, call.traits,
            call.previous_id,
        )


class ProfileCache:
    """The profiles and identities this process last read or wrote, to skip loading them.

    It is right only while no other connection writes the database: ``PRAGMA
    data_version`` changes when one does (another ``--workers`` process, a token
    revocation), and the cache is then dropped; dropped too after a failed transaction
    (the cached profiles may hold its rolled-back changes). A profile merged into
    another leaves the cache: the merge moved identities the batch never loaded, and an
    identity whose profile is not cached is read from the database again.
    """

    def __init__(self, limit: int = 20_000) -> None:
        self.limit = limit
        self.identities: dict[tuple[int, str, str], int] = {}
        self.profiles: dict[int, ProfileState] = {}
        self._version: int | None = None

    def check(self, conn: sqlite3.Connection) -> None:
        """Drop everything if another connection has written since the last check."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self.clear()
            self._version = version

    def clear(self) -> None:
        self.identities.clear()
        self.profiles.clear()

    def keep(self, workspace_id: int, graph: IdentityGraph) -> None:
        """Remember what a batch read and wrote (called once its transaction committed)."""
        if len(self.profiles) + len(graph.profiles) > self.limit:
            self.clear()
            return
        self.profiles.update(graph.profiles)
        for (kind, value), pk in graph.identities.items():
            self.identities[(workspace_id, kind, value)] = pk
        for source, _ in graph.merges:
            self.profiles.pop(source, None)


class BatchWriter:
    """Applies calls for one workspace inside the writer's open transaction.

    ``committed()`` or ``rolled_back()`` must follow each transaction: the profile
    cache keeps what committed and forgets the rest. ``refused`` is told the reason of
    each guardrail refusal; ``stored_events`` the count of events each insert stored.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        refused: Callable[[str], None],
        stored_events: Callable[[int], None],
    ) -> None:
        self._conn = conn
        self._refused = refused
        self._stored_events = stored_events
        self._next_pk = 0
        self._last_position = 0
        self._cache = ProfileCache()
        self._written: list[tuple[int, IdentityGraph]] = []

    def write(self, workspace_id: int, calls: Sequence[WireCall]) -> list[Accepted]:
        """Store the calls; one ``Accepted`` per call, repeats answered with the first id."""
        stored, graph = self._load(workspace_id, calls)
        plan = BatchPlan.make(calls, stored)
        rows = []
        for index in plan.fresh:
            event_id = new_event_id()
            profile_pk = graph.apply(calls[index], event_id)
            plan.accepted[index] = Accepted(event_id)
            call = calls[index]
            rows.append(event_row(call, event_id, profile_pk, call.raw, call.sent_anonymous_id))
        self._save(workspace_id, graph, rows)
        report_refusals(graph, workspace_id, self._refused)
        self._written.append((workspace_id, graph))
        return plan.answers()

    def committed(self) -> None:
        for workspace_id, graph in self._written:
            self._cache.keep(workspace_id, graph)
        self._written.clear()

    def rolled_back(self) -> None:
        self._cache.clear()
        self._written.clear()

    def _load(
        self, workspace_id: int, calls: Sequence[WireCall]
    ) -> tuple[dict[str, str], IdentityGraph]:
        """messageId → eventId of the calls' repeats, and the identity graph they touch.

        The graph holds every identity the calls name (repeats' too: a harmless superset);
        what the cache holds is not read again.
        """
        cache = self._cache
        cache.check(self._conn)
        identities: dict[IdentityKey, int] = {}
        profiles: dict[int, ProfileState] = {}
        missing = []
        for key in identity_keys(calls):
            pk = cache.identities.get((workspace_id, *key))
            profile = None if pk is None else cache.profiles.get(pk)
            if pk is None or profile is None:
                missing.append(key)
            else:
                identities[key] = pk
                profiles[pk] = profile
        params = (_encode(message_ids(calls)), _encode(missing), workspace_id)
        found = self._conn.execute(_LOAD, params).fetchone()
        stored = dict(_decode(found[0]))
        identities.update({(k, v): pk for k, v, pk in _decode(found[1])})
        profiles.update({row[0]: profile_from_row(row) for row in _decode(found[2])})
        self._next_pk = int(found[3]) + 1
        self._last_position = int(found[4])
        return stored, IdentityGraph(profiles, identities, self._allocate_pk, new_profile_id)

    def _allocate_pk(self) -> int:
        pk = self._next_pk
        self._next_pk += 1
        return pk

    def _save(self, workspace_id: int, graph: IdentityGraph, rows: list[list[Any]]) -> None:
        conn = self._conn
        if graph.changed:
            changed = graph.changed.values()
            profiles = [profile_params(profile_row(p), workspace_id) for p in changed]
            conn.executemany(_SAVE_PROFILES, profiles)
        if graph.links:
            links = [(workspace_id, k, v, pk) for (k, v), pk in graph.links.items()]
            conn.executemany(_SAVE_IDENTITIES, links)
        if rows:  # before the merges: a row may name a profile merged later in the batch
            first = self._last_position + 1
            params = [(seq, workspace_id, *row) for seq, row in enumerate(rows, start=first)]
            conn.executemany(_SAVE_EVENTS, params)
            self._stored_events(len(rows))
        for source, target in graph.merges:
            conn.execute(
                "UPDATE events SET profile_pk = ? WHERE profile_pk = ?", (target, source)
            )
            conn.execute(
                "UPDATE identities SET profile_pk = ? WHERE profile_pk = ?", (target, source)
            )


def profile_params(row: list[Any], workspace_id: int) -> list[Any]:
    """A ``profile_row`` as ``INSERT_PROFILE``'s parameters: JSON columns as text and the
    workspace last (``row`` itself, changed in place)."""
    for index in _PROFILE_JSON:
        row[index] = _encode(row[index]).decode()
    row.append(workspace_id)
    return row
