"""The read queries of the Events and Profiles APIs on SQLite.

Every query walks an index in its sort order, never a whole table
(``tests/test_query_plans.py`` runs ``EXPLAIN QUERY PLAN`` on each shape):

- the feed, a time window, ``exclude`` and property filters walk ``events_by_time``;
  ``exclude`` and ``properties.*`` are checked on the rows met along the way, so a
  rare property value costs a walk over the window (bounded by ``LIMIT``);
- a filter on a declared property path (``opencdp properties index``) walks that
  path's index instead: one value's events, in order, with their action;
- ``include`` walks ``events_by_action`` once per action, merged in order
  (``MERGE (UNION ALL)``);
- a customer's events walk ``events_by_profile``, once per profile, merged likewise;
- ``total`` counts at most ``MAX_TOTAL`` index entries per walk;
- profile look-ups use ``identities`` (userId, anonymousId), ``profiles_by_id`` and
  ``profiles_by_email``; listings ``profiles_by_activity`` and ``profiles_by_created``.

Each function takes a read connection and the workspace's row id and runs inside one
read transaction, so a page and its ``total`` see the same snapshot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec

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

_decode = msgspec.json.decode
_MAX_MERGE_HOPS = 64



@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: every statement inside sees the same committed state."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:  # an interrupted statement may have ended it
            conn.execute("COMMIT")


def workspace_id(conn: sqlite3.Connection, workspace: Workspace) -> int | None:
    row = conn.execute(
        "SELECT id FROM workspaces WHERE client_id = ? AND account_id = ? AND brand_id = ?",
        (workspace.client_id, workspace.account_id, workspace.brand_id),
    ).fetchone()
    return None if row is None else int(row[0])


def setting(conn: sqlite3.Connection, name: str) -> bytes | None:
    row = conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
    return None if row is None else bytes(row[0])


# -- profiles --------------------------------------------------------------------------


def resolve(
    conn: sqlite3.Connection, ws: int, ref: ProfileRef, page: sql.Window = sql.FIRST_WALKS
) -> list[int]:
    """The live profiles (row ids) a reference names; merged profiles lead to their target.

    For ``email``, the ``page`` of them, oldest first."""
    if ref.id_type == "email":
        rows = conn.execute(
            sql.EMAIL_PROFILES + " ORDER BY pk LIMIT ? OFFSET ?",
            (ws, ref.value, page.limit, page.offset),
        )
        return [int(row[0]) for row in rows]
    if ref.id_type == "id":
        row = conn.execute(
            "SELECT pk FROM profiles WHERE workspace_id = ? AND id = ?", (ws, ref.value)
        ).fetchone()
    else:
        kind = "user" if ref.id_type == "userId" else "anon"
        row = conn.execute(
            "SELECT profile_pk FROM identities WHERE workspace_id = ? AND kind = ? AND value = ?",
            (ws, kind, ref.value),
        ).fetchone()
    return [] if row is None else [_follow_merges(conn, int(row[0]))]


def _follow_merges(conn: sqlite3.Connection, pk: int) -> int:
    for _ in range(_MAX_MERGE_HOPS):
        row = conn.execute("SELECT merged_into FROM profiles WHERE pk = ?", (pk,)).fetchone()
        if row is None or row[0] is None:
            return pk
        pk = int(row[0])
    return pk


def find_profiles(
    conn: sqlite3.Connection,
    ws: int,
    ref: ProfileRef,
    page: sql.Window = sql.FIRST_WALKS,
    *,
    with_events: bool,
) -> list[StoredProfile]:
    pks = resolve(conn, ws, ref, page)
    if not pks:
        return []
    marks = ", ".join("?" * len(pks))
    rows = conn.execute(
        f"SELECT {sql.PROFILE_COLUMNS} FROM profiles WHERE pk IN ({marks}) ORDER BY pk", pks
    ).fetchall()
    profiles = [sql.stored_profile(row, _decode) for row in rows]
    if with_events:
        for row, profile in zip(rows, profiles, strict=True):
            _attach_events(conn, ws, profile, _decode(row[9]), _decode(row[10]))
    return profiles


def _attach_events(
    conn: sqlite3.Connection,
    ws: int,
    profile: StoredProfile,
    first: dict[str, list[Any]],
    last: dict[str, list[Any]],
) -> None:
    """Fill first/last events from the stamps' event ids: a look-up each, never a scan."""
    wanted = sql.stamped_event_ids(first, last)
    found = {event.event_id: event for event in events_by_ids(conn, ws, wanted)}
    sql.attach_events(profile, first, last, found)


def list_profiles(conn: sqlite3.Connection, ws: int, query: ProfileQuery) -> ProfilePage:
    if query.sort == "created":
        rows = conn.execute(*sql.created_sql(sql.SQLITE, ws, query)).fetchall()
    else:
        rows = []
        for active in (True, False):
            if len(rows) >= query.size:
                break
            left = query.size - len(rows)
            step = sql.activity_sql(sql.SQLITE, ws, query.after, left, active=active)
            if step is not None:
                rows += conn.execute(*step).fetchall()
    last = sql.profile_key(rows[-1]) if rows else query.after
    return ProfilePage([sql.stored_profile(row, _decode) for row in rows], last)


# -- events ----------------------------------------------------------------------------


def get_event(conn: sqlite3.Connection, ws: int, event_id: str) -> StoredEvent | None:
    found = events_by_ids(conn, ws, [event_id])
    return found[0] if found else None


def events_by_ids(conn: sqlite3.Connection, ws: int, event_ids: Sequence[str]) -> list[StoredEvent]:
    if not event_ids:
        return []
    marks = ", ".join("?" * len(event_ids))
    rows = conn.execute(
        f"SELECT {sql.EVENT_COLUMNS} FROM events e INDEXED BY events_by_event_id"
        " CROSS JOIN profiles p ON p.pk = e.profile_pk"
        f" WHERE e.event_id IN ({marks}) AND e.workspace_id = ?",
        (*event_ids, ws),
    ).fetchall()
    if not rows:
        return []
    workspace = workspace_of(conn, ws)
    return [_event(row, workspace) for row in rows]


def workspace_of(conn: sqlite3.Connection, ws: int) -> Workspace:
    row = conn.execute(
        "SELECT client_id, account_id, brand_id FROM workspaces WHERE id = ?", (ws,)
    ).fetchone()
    return Workspace(row[0], row[1], row[2])


def list_events(conn: sqlite3.Connection, ws: int, query: EventQuery) -> EventPage:
    """A page of the query's events and its capped total (see ``read_sql``)."""
    ranges = sql.walks(ws, query, _profile_pks(conn, ws, query), _indexed(conn, query))
    if not ranges:
        return EventPage(0, [])
    filters = sql.Filters(sql.SQLITE, query)
    total = sum(int(conn.execute(*sql.count_sql(filters, walk)).fetchone()[0]) for walk in ranges)
    workspace = workspace_of(conn, ws)
    rows = conn.execute(*sql.page_sql(filters, ranges, query)).fetchall()
    return EventPage(min(total, MAX_TOTAL), [_event(row, workspace) for row in rows])


def _profile_pks(conn: sqlite3.Connection, ws: int, query: EventQuery) -> list[int] | None:
    """The profiles a query is limited to (None: not limited to customers)."""
    pks: list[int] | None = None
    if query.profile is not None:
        pks = resolve(conn, ws, query.profile)
        if not pks:
            raise ProfileNotFound()
    if query.user_id is not None:
        users = resolve(conn, ws, ProfileRef("userId", query.user_id))
        pks = users if pks is None else [pk for pk in pks if pk in users]
    return pks


def _indexed(conn: sqlite3.Connection, query: EventQuery) -> set[str]:
    """The declared property paths, when the query filters on properties."""
    if not query.properties:
        return set()
    return {row[0] for row in conn.execute(sql.PROPERTY_INDEXES_SELECT)}


def _event(row: Sequence[Any], workspace: Workspace) -> StoredEvent:
    return sql.stored_event(row, workspace, _decode)
