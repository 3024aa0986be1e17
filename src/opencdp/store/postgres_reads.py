"""The read queries of the Events and Profiles APIs on PostgreSQL.

The same shapes as ``sqlite_reads``, on the same indexes: the feed and its filters
walk ``events_by_time``; ``include`` walks ``events_by_action`` once per action and a
customer's events ``events_by_profile`` once per profile, merged in order (a Merge
Append); ``total`` counts at most ``MAX_TOTAL`` rows per walk. Each call runs in one
REPEATABLE READ transaction, so a page and its total see one snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from opencdp.errors import ProfileNotFound
from opencdp.models import (
    MAX_TOTAL,
    EventPage,
    EventQuery,
    ProfileKey,
    ProfilePage,
    ProfileQuery,
    ProfileRef,
    StoredEvent,
    StoredProfile,
    Workspace,
)
from opencdp.store import event_sql as sql

Conn = AsyncConnection[Any]
_MAX_MERGE_HOPS = 64

_PROFILE_COLUMNS = (
    "pk, id, external_id, traits, anonymous_ids, audiences, created_by, created_time,"
    " last_activity, first_events, last_events"
)


async def rows(conn: Conn, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchall()


async def one(conn: Conn, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchone()


async def workspace_id(conn: Conn, workspace: Workspace) -> int | None:
    row = await one(
        conn,
        "SELECT id FROM workspaces WHERE client_id = %s AND account_id = %s AND brand_id = %s",
        (workspace.client_id, workspace.account_id, workspace.brand_id),
    )
    return None if row is None else int(row[0])


async def setting(conn: Conn, name: str) -> bytes | None:
    row = await one(conn, "SELECT value FROM settings WHERE name = %s", (name,))
    return None if row is None else bytes(row[0])


# -- profiles --------------------------------------------------------------------------


async def resolve(conn: Conn, ws: int, ref: ProfileRef) -> list[int]:
    """The live profiles (row ids) a reference names; merged profiles lead to their target."""
    if ref.id_type == "email":
        found = await rows(
            conn,
            "SELECT pk FROM profiles WHERE workspace_id = %s AND email = %s"
            " AND merged_into IS NULL ORDER BY pk",
            (ws, ref.value),
        )
        return [int(row[0]) for row in found]
    if ref.id_type == "id":
        row = await one(
            conn, "SELECT pk FROM profiles WHERE workspace_id = %s AND id = %s", (ws, ref.value)
        )
    else:
        kind = "user" if ref.id_type == "userId" else "anon"
        row = await one(
            conn,
            "SELECT profile_pk FROM identities WHERE workspace_id = %s AND kind = %s"
            " AND value = %s",
            (ws, kind, ref.value),
        )
    return [] if row is None else [await _follow_merges(conn, int(row[0]))]


async def _follow_merges(conn: Conn, pk: int) -> int:
    for _ in range(_MAX_MERGE_HOPS):
        row = await one(conn, "SELECT merged_into FROM profiles WHERE pk = %s", (pk,))
        if row is None or row[0] is None:
            return pk
        pk = int(row[0])
    return pk


async def find_profiles(
    conn: Conn, ws: int, ref: ProfileRef, *, with_events: bool
) -> list[StoredProfile]:
    pks = await resolve(conn, ws, ref)
    if not pks:
        return []
    found = await rows(
        conn, f"SELECT {_PROFILE_COLUMNS} FROM profiles WHERE pk = ANY(%s) ORDER BY pk", (pks,)
    )
    profiles = [_profile(row) for row in found]
    if with_events:
        for row, profile in zip(found, profiles, strict=True):
            await _attach_events(conn, ws, profile, row[9], row[10])
    return profiles


async def _attach_events(
    conn: Conn,
    ws: int,
    profile: StoredProfile,
    first: dict[str, list[Any]],
    last: dict[str, list[Any]],
) -> None:
    """Fill first/last events from the stamps' event ids: a look-up each, never a scan."""
    wanted = sorted({stamp[2] for stamp in (*first.values(), *last.values())})
    found = {event.event_id: event for event in await events_by_ids(conn, ws, wanted)}
    profile.first_events = {a: found[s[2]] for a, s in first.items() if s[2] in found}
    profile.last_events = {a: found[s[2]] for a, s in last.items() if s[2] in found}


async def list_profiles(conn: Conn, ws: int, query: ProfileQuery) -> ProfilePage:
    if query.sort == "created":
        found = await _created_rows(conn, ws, query)
    else:
        found = await _active_rows(conn, ws, query)
    last = None if not found else ProfileKey(found[-1][8], int(found[-1][0]))
    return ProfilePage([_profile(row) for row in found], last or query.after)


async def _created_rows(conn: Conn, ws: int, query: ProfileQuery) -> list[Any]:
    after = -1 if query.after is None else query.after.seq
    return await rows(
        conn,
        f"SELECT {_PROFILE_COLUMNS} FROM profiles"
        " WHERE workspace_id = %s AND merged_into IS NULL AND pk > %s ORDER BY pk LIMIT %s",
        (ws, after, query.size),
    )


async def _active_rows(conn: Conn, ws: int, query: ProfileQuery) -> list[Any]:
    """Most recent activity first; profiles never active (NULL) come last, newest first."""
    after = query.after
    found: list[Any] = []
    if after is None or after.last_activity is not None:
        keyset = "" if after is None else " AND (last_activity, pk) < (%s, %s)"
        params = [] if after is None else [after.last_activity, after.seq]
        found = await _by_activity(conn, "IS NOT NULL" + keyset, [ws, *params, query.size])
    if len(found) < query.size:
        below = after is not None and after.last_activity is None
        keyset = " AND pk < %s" if below else ""
        params = [after.seq] if after is not None and below else []
        found += await _by_activity(
            conn, "IS NULL" + keyset, [ws, *params, query.size - len(found)]
        )
    return found


async def _by_activity(conn: Conn, condition: str, params: list[Any]) -> list[Any]:
    return await rows(
        conn,
        f"SELECT {_PROFILE_COLUMNS} FROM profiles"
        f" WHERE workspace_id = %s AND merged_into IS NULL AND last_activity {condition}"
        " ORDER BY last_activity DESC, pk DESC LIMIT %s",
        params,
    )


def _profile(row: Sequence[Any]) -> StoredProfile:
    return StoredProfile(
        id=row[1],
        external_id=row[2],
        traits=row[3],
        anonymous_ids=row[4],
        audiences=row[5],
        created_by=row[6],
        created_time=row[7],
        last_activity_time=row[8],
    )


# -- events ----------------------------------------------------------------------------


async def get_event(conn: Conn, ws: int, event_id: str) -> StoredEvent | None:
    found = await events_by_ids(conn, ws, [event_id])
    return found[0] if found else None


async def events_by_ids(conn: Conn, ws: int, event_ids: Sequence[str]) -> list[StoredEvent]:
    if not event_ids:
        return []
    found = await rows(
        conn,
        f"SELECT {sql.EVENT_COLUMNS} FROM events e JOIN profiles p ON p.pk = e.profile_pk"
        " WHERE e.event_id = ANY(%s) AND e.workspace_id = %s",
        (list(event_ids), ws),
    )
    if not found:
        return []
    workspace = await workspace_of(conn, ws)
    return [_event(row, workspace) for row in found]


async def workspace_of(conn: Conn, ws: int) -> Workspace:
    row = await one(
        conn, "SELECT client_id, account_id, brand_id FROM workspaces WHERE id = %s", (ws,)
    )
    assert row is not None
    return Workspace(row[0], row[1], row[2])


async def list_events(conn: Conn, ws: int, query: EventQuery) -> EventPage:
    """A page of the query's events and its capped total (see ``event_sql``)."""
    ranges = sql.walks(ws, query, await _profile_pks(conn, ws, query))
    if not ranges:
        return EventPage(0, [])
    filters = sql.Filters(sql.POSTGRES, query)
    total = 0
    for walk in ranges:
        row = await one(conn, *sql.count_sql(filters, walk))
        total += 0 if row is None else int(row[0])
    workspace = await workspace_of(conn, ws)
    found = await rows(conn, *sql.page_sql(filters, ranges, query))
    return EventPage(min(total, MAX_TOTAL), [_event(row, workspace) for row in found])


async def _profile_pks(conn: Conn, ws: int, query: EventQuery) -> list[int] | None:
    """The profiles a query is limited to (None: not limited to customers)."""
    pks: list[int] | None = None
    if query.profile is not None:
        pks = await resolve(conn, ws, query.profile)
        if not pks:
            raise ProfileNotFound()
    if query.user_id is not None:
        users = await resolve(conn, ws, ProfileRef("userId", query.user_id))
        pks = users if pks is None else [pk for pk in pks if pk in users]
    return pks


def _event(row: Sequence[Any], workspace: Workspace) -> StoredEvent:
    return StoredEvent(
        event_id=row[0],
        event_action=row[1],
        event_time=row[2],
        received_time=row[3],
        user_id=row[4],
        anonymous_id=row[5],
        raw=row[6],
        profile_id=row[7],
        external_id=row[8],
        email=row[9],
        workspace=workspace,
    )
