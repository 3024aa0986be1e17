"""One write batch on SQLite: load the identities it names, apply the rules, save.

Each step is one SQL statement over the whole batch (``json_each`` for input,
``json_group_array`` for output). The writer thread releases the GIL once per
statement instead of once per row, which keeps it fast beside a busy event loop.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from opencdp.identity import IdentityGraph
from opencdp.models import Accepted, Call
from opencdp.store.base import StoreObserver
from opencdp.store.batching import (
    BatchPlan,
    event_row,
    identity_keys,
    message_ids,
    new_event_id,
    new_profile_id,
    profile_from_row,
    profile_row,
)

log = logging.getLogger("opencdp.store")

_encode = msgspec.json.encode
_decode = msgspec.json.decode

# Everything a batch reads, in one statement (one hand-over of the GIL, not four):
# the messageIds already stored (?1), the identities the batch names (?2) and their
# profiles, and the highest profile pk (read inside the write lock: other processes,
# ``--workers N``, may have created profiles since this writer's last batch).
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
    (SELECT coalesce(max(pk), 0) FROM profiles)
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


class BatchWriter:
    """Applies calls for one workspace inside the writer's open transaction."""

    def __init__(self, conn: sqlite3.Connection, observer: StoreObserver) -> None:
        self._conn = conn
        self._observer = observer
        self._next_pk = 0

    def write(self, workspace_id: int, calls: Sequence[Call]) -> list[Accepted]:
        """Store the calls; one ``Accepted`` per call, repeats answered with the first id."""
        stored, graph = self._load(workspace_id, calls)
        plan = BatchPlan.make(calls, stored)
        rows = []
        for index in plan.fresh:
            event_id = new_event_id()
            profile_pk = graph.apply(calls[index], event_id)
            plan.accepted[index] = Accepted(event_id)
            rows.append(event_row(calls[index], event_id, profile_pk))
        self._save(workspace_id, graph, rows)
        self._report(workspace_id, graph)
        return plan.answers()

    def _load(
        self, workspace_id: int, calls: Sequence[Call]
    ) -> tuple[dict[str, str], IdentityGraph]:
        """messageId → eventId of the calls' repeats, and the identity graph they touch.

        The graph holds every identity the calls name (repeats' too: a harmless superset).
        """
        params = (_encode(message_ids(calls)), _encode(identity_keys(calls)), workspace_id)
        found = self._conn.execute(_LOAD, params).fetchone()
        stored = dict(_decode(found[0]))
        identities = {(k, v): pk for k, v, pk in _decode(found[1])}
        profiles = {row[0]: profile_from_row(row) for row in _decode(found[2])}
        self._next_pk = int(found[3]) + 1
        return stored, IdentityGraph(profiles, identities, self._allocate_pk, new_profile_id)

    def _allocate_pk(self) -> int:
        pk = self._next_pk
        self._next_pk += 1
        return pk

    def _report(self, workspace_id: int, graph: IdentityGraph) -> None:
        for refusal in graph.refusals:
            self._observer.refused(refusal.reason)
            log.warning(
                "identity link refused",
                extra={"reason": refusal.reason, "workspace_id": workspace_id},
            )

    def _save(self, workspace_id: int, graph: IdentityGraph, rows: list[list[Any]]) -> None:
        if graph.changed:
            profiles = [profile_row(p) for p in graph.changed.values()]
            self._conn.execute(_SAVE_PROFILES, (_encode(profiles), workspace_id))
        if graph.links:
            links = [[k, v, pk] for (k, v), pk in graph.links.items()]
            self._conn.execute(_SAVE_IDENTITIES, (_encode(links), workspace_id))
        if rows:  # before the merges: a row may name a profile merged later in the batch
            self._conn.execute(_SAVE_EVENTS, (_encode(rows), workspace_id))
        for source, target in graph.merges:
            self._conn.execute(
                "UPDATE events SET profile_pk = ? WHERE profile_pk = ?", (target, source)
            )
            self._conn.execute(
                "UPDATE identities SET profile_pk = ? WHERE profile_pk = ?", (target, source)
            )
