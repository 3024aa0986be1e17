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

Conn = AsyncConnection[Any]
_MAX_MERGE_HOPS = 64

_EVENT_COLUMNS = (
    "e.event_id, e.action, e.event_time, e.received_time, e.user_id, e.anonymous_id, e.raw,"
    " p.id, p.external_id, coalesce(p.email, '')"
)
_PROFILE_COLUMNS = (
    "pk, id, external_id, traits, anonymous_ids, audiences, created_by, created_time,"
    " last_activity, first_events, last_events"
)
_KEY = ("e.event_time", "e.received_time", "e.event_id")


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
        f"SELECT {_EVENT_COLUMNS} FROM events e JOIN profiles p ON p.pk = e.profile_pk"
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
    walks = await _walks(conn, ws, query)
    if not walks:
        return EventPage(0, [])
    filters = _Filters(query)
    total = 0
    for walk in walks:
        total += await _count(conn, walk, filters)
    workspace = await workspace_of(conn, ws)
    found = await _page_rows(conn, walks, filters, query)
    return EventPage(min(total, MAX_TOTAL), [_event(row, workspace) for row in found])


class _Walk:
    """One index range: the equality terms that pick it."""

    def __init__(self, where: str, params: list[Any]) -> None:
        self.where, self.params = where, params


async def _walks(conn: Conn, ws: int, query: EventQuery) -> list[_Walk]:
    pks: list[int] | None = None
    if query.profile is not None:
        pks = await resolve(conn, ws, query.profile)
        if not pks:
            raise ProfileNotFound()
    if query.user_id is not None:
        users = await resolve(conn, ws, ProfileRef("userId", query.user_id))
        pks = users if pks is None else [pk for pk in pks if pk in users]
    if pks is not None:
        same = "e.workspace_id = %s AND e.profile_pk = %s"
        return [_Walk(same, [ws, pk]) for pk in pks]
    if query.include:
        actions = [a for a in query.include if a not in query.exclude]
        return [_Walk("e.workspace_id = %s AND e.action = %s", [ws, a]) for a in actions]
    return [_Walk("e.workspace_id = %s", [ws])]


class _Filters:
    """The terms every walk checks: actions, time window, properties (and the keyset)."""

    def __init__(self, query: EventQuery) -> None:
        terms: list[str] = []
        params: list[Any] = []
        if (query.profile is not None or query.user_id is not None) and query.include:
            terms.append("e.action = ANY(%s)")
            params.append(list(query.include))
        if query.exclude:
            terms.append("NOT (e.action = ANY(%s))")
            params.append(list(query.exclude))
        if query.start is not None:
            terms.append("e.event_time >= %s")
            params.append(query.start)
        if query.end is not None:
            terms.append("e.event_time < %s")
            params.append(query.end)
        for path, value in query.properties:
            terms.append("(e.raw #>> %s::text[]) = %s")
            params += [["properties", *path.split(".")], value]
        self.terms, self.params = terms, params
        self.direction = "ASC" if query.sort == "asc" else "DESC"
        self.keyset: list[str] = []
        self.keyset_params: list[Any] = []
        if query.after is not None:
            op = ">" if query.sort == "asc" else "<"
            self.keyset = [f"({', '.join(_KEY)}) {op} (%s, %s, %s)"]
            after = query.after
            self.keyset_params = [after.event_time, after.received_time, after.event_id]

    def where(self, walk: _Walk, *, keyset: bool) -> tuple[str, list[Any]]:
        terms = [walk.where, *self.terms, *(self.keyset if keyset else ())]
        params = [*walk.params, *self.params, *(self.keyset_params if keyset else ())]
        return " AND ".join(terms), params

    @property
    def order(self) -> str:
        return ", ".join(f"{column} {self.direction}" for column in _KEY)


async def _count(conn: Conn, walk: _Walk, filters: _Filters) -> int:
    where, params = filters.where(walk, keyset=False)
    row = await one(
        conn,
        f"SELECT count(*) FROM (SELECT 1 FROM events e WHERE {where} LIMIT {MAX_TOTAL}) s",
        params,
    )
    assert row is not None
    return int(row[0])


async def _page_rows(
    conn: Conn, walks: list[_Walk], filters: _Filters, query: EventQuery
) -> list[Any]:
    join = "JOIN profiles p ON p.pk = e.profile_pk"
    if len(walks) == 1:
        where, params = filters.where(walks[0], keyset=True)
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events e {join}"
            f" WHERE {where} ORDER BY {filters.order} LIMIT %s OFFSET %s"
        )
        return await rows(conn, sql, (*params, query.size, query.offset))
    arms, params = [], []
    for walk in walks:
        where, arm_params = filters.where(walk, keyset=True)
        arms.append(
            "(SELECT e.seq, e.event_time, e.received_time, e.event_id FROM events e"
            f" WHERE {where} ORDER BY {filters.order} LIMIT %s)"
        )
        params += [*arm_params, query.offset + query.size]
    direction = filters.direction
    sql = (
        f"WITH page AS ({' UNION ALL '.join(arms)}"
        f" ORDER BY 2 {direction}, 3 {direction}, 4 {direction} LIMIT %s OFFSET %s)"
        f" SELECT {_EVENT_COLUMNS} FROM page JOIN events e ON e.seq = page.seq {join}"
        f" ORDER BY {filters.order}"
    )
    return await rows(conn, sql, (*params, query.size, query.offset))


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
