"""One write batch on PostgreSQL, safe with many processes writing at once.

The batch first takes transaction-scoped advisory locks on every id and messageId it
names (in one sorted order, so two batches never deadlock), then locks the profile
rows behind those ids (``FOR UPDATE``, in pk order). Two processes that touch the same
customer therefore take turns, and a profile merged by another process meanwhile is
seen as merged and followed. Rows go in with one statement per table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from opencdp.identity import IdentityGraph, IdentityKey, ProfileState
from opencdp.models import Accepted, Call, CallFacts
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
from opencdp.store.postgres.listener import FEED_CHANNEL as FEED

_encode = msgspec.json.encode

_LOCK = """
SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT unnest(%s::bigint[]) AS k ORDER BY k) s
"""
_FIND_MESSAGES = """
SELECT message_id, event_id FROM events WHERE workspace_id = %s AND message_id = ANY(%s)
"""
_FIND_IDENTITIES = """
SELECT i.kind, i.value, i.profile_pk FROM identities i
JOIN unnest(%s::text[], %s::text[]) AS k(kind, value) ON i.kind = k.kind AND i.value = k.value
WHERE i.workspace_id = %s
"""
_LOCK_PROFILES = """
SELECT pk, id, external_id, traits, trait_stamps, anonymous_ids, audiences, created_by,
    created_time, first_events, last_events, last_activity, merged_into
FROM profiles WHERE pk = ANY(%s) ORDER BY pk FOR UPDATE
"""
_SAVE_PROFILES = """
INSERT INTO profiles (pk, workspace_id, id, external_id, email, traits, trait_stamps,
    anonymous_ids, audiences, created_by, created_time, first_events, last_events,
    last_activity, merged_into)
SELECT (r->>0)::bigint, %s, r->>1, r->>2, r->>3, r->4, r->5, r->6, r->7, r->8,
    (r->>9)::bigint, r->10, r->11, (r->>12)::bigint, (r->>13)::bigint
FROM jsonb_array_elements(%s::jsonb) AS r
ON CONFLICT (pk) DO UPDATE SET external_id = excluded.external_id, email = excluded.email,
    traits = excluded.traits, trait_stamps = excluded.trait_stamps,
    anonymous_ids = excluded.anonymous_ids, audiences = excluded.audiences,
    first_events = excluded.first_events, last_events = excluded.last_events,
    last_activity = excluded.last_activity, merged_into = excluded.merged_into
"""
_SAVE_IDENTITIES = """
INSERT INTO identities (workspace_id, kind, value, profile_pk)
SELECT %s, r->>0, r->>1, (r->>2)::bigint FROM jsonb_array_elements(%s::jsonb) AS r
ON CONFLICT (workspace_id, kind, value) DO UPDATE SET profile_pk = excluded.profile_pk
"""
# The events' positions come from the workspace's feed clock, whose row stays locked
# until this transaction commits (migration 0006 says why no reader can then skip
# one); the notification, delivered at commit, wakes the feed's waiting readers in
# every process (``postgres.listener``, which listens for both).
_SAVE_EVENTS = """
WITH clock AS (
    INSERT INTO feed_clocks AS c (workspace_id, last) VALUES (%(ws)s, %(count)s)
    ON CONFLICT (workspace_id) DO UPDATE SET last = c.last + excluded.last
    RETURNING last
), saved AS (
    INSERT INTO events (workspace_id, event_id, message_id, profile_pk, action, event_time,
        received_time, user_id, anonymous_id, raw, position)
    SELECT %(ws)s, r->>0, r->>1, (r->>2)::bigint, r->>3, (r->>4)::bigint, (r->>5)::bigint,
        r->>6, r->>7, (r->>8)::jsonb, (SELECT last FROM clock) - %(count)s + n
    FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS t(r, n)
)
SELECT last, pg_notify(%(channel)s, current_schema() || ':' || %(ws)s::text) FROM clock
"""


def lock_key(workspace_id: int, *parts: str) -> int:
    """A stable signed 64-bit advisory-lock key (the same in every process)."""
    text = "\x1f".join([str(workspace_id), *parts]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)


class PostgresBatch:
    """Applies one workspace's calls inside an open transaction on ``conn``; ``refused``
    is told the reason of each guardrail refusal, ``positions`` the feed positions of
    the events stored."""

    def __init__(
        self,
        conn: AsyncConnection[Any],
        workspace_id: int,
        refused: Callable[[str], None],
        positions: Callable[[range], None],
    ) -> None:
        self._conn = conn
        self._ws = workspace_id
        self._refused = refused
        self._positions = positions

    async def write(self, calls: Sequence[Call]) -> list[Accepted]:
        await self._lock_names(calls)
        plan = BatchPlan.make(calls, await self._find_stored(calls))
        fresh = plan.fresh_calls()
        graph = await self._load_graph(fresh)
        rows = []
        for index in plan.fresh:
            event_id = new_event_id()
            profile_pk = graph.apply(calls[index], event_id)
            plan.accepted[index] = Accepted(event_id)
            rows.append(event_row(calls[index], event_id, profile_pk, *raw_fields(calls[index])))
        await self._save(graph, rows)
        report_refusals(graph, self._ws, self._refused)
        return plan.answers()

    async def _lock_names(self, calls: Sequence[Call]) -> None:
        keys = {lock_key(self._ws, kind, value) for kind, value in identity_keys(calls)}
        keys.update(lock_key(self._ws, "message", mid) for mid in message_ids(calls))
        if keys:
            await self._conn.execute(_LOCK, (sorted(keys),))

    async def _find_stored(self, calls: Sequence[Call]) -> dict[str, str]:
        wanted = message_ids(calls)
        if not wanted:
            return {}
        cursor = await self._conn.execute(_FIND_MESSAGES, (self._ws, wanted))
        return {mid: eid for mid, eid in await cursor.fetchall()}

    async def _load_graph(self, calls: Sequence[CallFacts]) -> IdentityGraph:
        keys = identity_keys(calls)
        identities: dict[IdentityKey, int] = {}
        profiles: dict[int, ProfileState] = {}
        while keys:
            identities = await self._find_identities(keys)
            wanted = sorted(set(identities.values()) - set(profiles))
            if not wanted:
                break
            cursor = await self._conn.execute(_LOCK_PROFILES, (wanted,))
            for row in await cursor.fetchall():
                profiles[row[0]] = profile_from_row(row)
            if not any(profiles[pk].merged_into is not None for pk in identities.values()):
                break  # stable: no profile we locked was merged away meanwhile
        pks = await self._reserve_pks(_possible_new_profiles(calls, identities))
        return IdentityGraph(profiles, identities, pks.__next__, new_profile_id)

    async def _find_identities(self, keys: list[IdentityKey]) -> dict[IdentityKey, int]:
        kinds = [k for k, _ in keys]
        values = [v for _, v in keys]
        cursor = await self._conn.execute(_FIND_IDENTITIES, (kinds, values, self._ws))
        return {(k, v): pk for k, v, pk in await cursor.fetchall()}

    async def _reserve_pks(self, count: int) -> Iterator[int]:
        """Enough pks for every profile the batch could create, in commit order.

        The counter row stays locked until this transaction ends, so a batch that
        reserves later also commits later (see the schema's notes).
        """
        if count == 0:
            return iter(())
        cursor = await self._conn.execute(
            "UPDATE profile_pk_counter SET last = last + %s RETURNING last", (count,)
        )
        row = await cursor.fetchone()
        assert row is not None
        last = int(row[0])
        return iter(range(last - count + 1, last + 1))

    async def _save(self, graph: IdentityGraph, rows: list[list[Any]]) -> None:
        if graph.changed:
            profiles = [profile_row(p) for p in graph.changed.values()]
            await self._conn.execute(_SAVE_PROFILES, (self._ws, Jsonb(profiles)))
        if graph.links:
            links = [[k, v, pk] for (k, v), pk in graph.links.items()]
            await self._conn.execute(_SAVE_IDENTITIES, (self._ws, Jsonb(links)))
        if rows:  # before the merges: a row may name a profile merged later in the batch
            params = {"ws": self._ws, "count": len(rows), "rows": Jsonb(rows), "channel": FEED}
            cursor = await self._conn.execute(_SAVE_EVENTS, params)
            found = await cursor.fetchone()
            assert found is not None
            last = int(found[0])
            self._positions(range(last - len(rows) + 1, last + 1))
        for source, target in graph.merges:
            await self._conn.execute(
                "UPDATE events SET profile_pk = %s WHERE profile_pk = %s", (target, source)
            )
            await self._conn.execute(
                "UPDATE identities SET profile_pk = %s WHERE profile_pk = %s", (target, source)
            )


def _possible_new_profiles(calls: Sequence[CallFacts], known: dict[IdentityKey, int]) -> int:
    """An upper bound: each call creates at most one profile, and only for an unknown id."""
    return sum(1 for call in calls if any(k not in known for k in identity_keys([call])))
