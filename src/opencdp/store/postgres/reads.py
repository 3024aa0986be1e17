"""The read queries of the Events and Profiles APIs on PostgreSQL.

The same shapes as ``sqlite.reads``, on the same indexes: the feed and its filters
walk ``events_by_time`` (or a declared property's index, which the planner picks by
its filter's expression); ``include`` walks ``events_by_action`` once per action and a
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
    ProfilePage,
    ProfileQuery,
    ProfileRef,
    StoredEvent,
    StoredProfile,
    Workspace,
)
from opencdp.store import read_sql as sql

Conn = AsyncConnection[Any]
_MAX_MERGE_HOPS = 64



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


async def resolve(
    conn: Conn, ws: int, ref: ProfileRef, page: sql.Window = sql.FIRST_WALKS
) -> list[int]:
    """The live profiles (row ids) a reference names; merged profiles lead to their target.

    For ``email``, the ``page`` of them, oldest first."""
    if ref.id_type == "email":
        found = await rows(
            conn,
            sql.POSTGRES.sql(sql.EMAIL_PROFILES + " ORDER BY pk LIMIT ? OFFSET ?"),
            (ws, ref.value, page.limit, page.offset),
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
    conn: Conn, ws: int, ref: ProfileRef, page: sql.Window = sql.FIRST_WALKS, *, with_events: bool
) -> list[StoredProfile]:
    pks = await resolve(conn, ws, ref, page)
    if not pks:
        return []
    found = await rows(
        conn, f"SELECT {sql.PROFILE_COLUMNS} FROM profiles WHERE pk = ANY(%s) ORDER BY pk", (pks,)
    )
    profiles = [sql.stored_profile(row, _as_is) for row in found]
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
    wanted = sql.stamped_event_ids(first, last)
    found = {event.event_id: event for event in await events_by_ids(conn, ws, wanted)}
    sql.attach_events(profile, first, last, found)


async def list_profiles(conn: Conn, ws: int, query: ProfileQuery) -> ProfilePage:
    if query.sort == "created":
        found = await rows(conn, *sql.created_sql(sql.POSTGRES, ws, query))
    else:
        found = []
        for active in (True, False):
            if len(found) >= query.size:
                break
            left = query.size - len(found)
            step = sql.activity_sql(sql.POSTGRES, ws, query.after, left, active=active)
            if step is not None:
                found += await rows(conn, *step)
    last = sql.profile_key(found[-1]) if found else query.after
    return ProfilePage([sql.stored_profile(row, _as_is) for row in found], last)


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
    """A page of the query's events and its capped total (see ``read_sql``)."""
    ranges = sql.walks(ws, query, await _profile_pks(conn, ws, query), await _indexed(conn, query))
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


async def _indexed(conn: Conn, query: EventQuery) -> set[str]:
    """The declared property paths, when the query filters on properties."""
    if not query.properties:
        return set()
    return {row[0] for row in await rows(conn, sql.PROPERTY_INDEXES_SELECT)}


def _event(row: Sequence[Any], workspace: Workspace) -> StoredEvent:
    return sql.stored_event(row, workspace, _as_is)


def _as_is(value: Any) -> Any:
    """psycopg has already decoded JSONB columns."""
    return value
