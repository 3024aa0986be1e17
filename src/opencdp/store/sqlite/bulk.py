"""The SQLite bulk load: many profiles and their events, fast, on an idle database.

Rows go in with ``executemany`` in large transactions (no other thread competes for
the GIL here, so the per-row hand-over costs nothing). When the events table is
empty, its secondary indexes are dropped first and rebuilt at the end from their
own stored definitions: sorting once is far cheaper than 10 million random index
inserts. Commits use ``synchronous=NORMAL`` and the load ends with a checkpoint, so
the data is on disk when ``load`` returns; a crash mid-load can lose the load, never
earlier data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from opencdp.models import BulkProfile
from opencdp.store.bulk import BulkReport, profile_rows
from opencdp.store.sqlite.append import INSERT_PROFILE, LAST_POSITION, profile_params

_CHUNK_EVENTS = 200_000

_INSERT_IDENTITY = (
    "INSERT INTO identities (kind, value, profile_pk, workspace_id) VALUES (?, ?, ?, ?)"
)
_INSERT_EVENT = """
INSERT INTO events (event_id, profile_pk, action, event_time, received_time, user_id,
    anonymous_id, raw, workspace_id, seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def load(
    conn: sqlite3.Connection, workspace_id: int, profiles: Iterable[BulkProfile], first_pk: int
) -> BulkReport:
    """Store ``profiles`` (row ids from ``first_pk`` up) in ``workspace_id``; commit."""
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -1048576")
    dropped = _drop_event_indexes(conn)
    try:
        report = _insert_all(conn, workspace_id, profiles, first_pk)
    finally:
        _rebuild(conn, dropped)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return report


def _insert_all(
    conn: sqlite3.Connection, workspace_id: int, profiles: Iterable[BulkProfile], first_pk: int
) -> BulkReport:
    profile_batch: list[list[Any]] = []
    identity_batch: list[tuple[Any, ...]] = []
    event_batch: list[list[Any]] = []
    count_profiles = count_events = 0
    position = int(conn.execute(f"SELECT {LAST_POSITION}").fetchone()[0])
    for pk, source in enumerate(profiles, start=first_pk):
        rows = profile_rows(source, pk)
        profile_batch.append(profile_params(rows.profile, workspace_id))
        identity_batch.extend((*identity, workspace_id) for identity in rows.identities)
        for event in rows.events:
            position += 1  # never a deleted event's (``sqlite.append.LAST_POSITION``)
            event.extend((workspace_id, position))
        event_batch.extend(rows.events)
        count_profiles += 1
        count_events += len(rows.events)
        if len(event_batch) >= _CHUNK_EVENTS:
            _commit(conn, profile_batch, identity_batch, event_batch)
    _commit(conn, profile_batch, identity_batch, event_batch)
    return BulkReport(count_profiles, count_events)


def _commit(
    conn: sqlite3.Connection,
    profiles: list[list[Any]],
    identities: list[tuple[Any, ...]],
    events: list[list[Any]],
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(INSERT_PROFILE, profiles)
        conn.executemany(_INSERT_IDENTITY, identities)
        conn.executemany(_INSERT_EVENT, events)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    profiles.clear()
    identities.clear()
    events.clear()


def _drop_event_indexes(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """Drop the events table's secondary indexes if it is empty; their (name, SQL)."""
    if conn.execute("SELECT 1 FROM events LIMIT 1").fetchone() is not None:
        return []
    indexes = [
        (str(name), str(sql))
        for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master"
            " WHERE type = 'index' AND tbl_name = 'events' AND sql IS NOT NULL"
        )
    ]
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    return indexes


def _rebuild(conn: sqlite3.Connection, indexes: list[tuple[str, str]]) -> None:
    for _, sql in indexes:
        conn.execute(sql)
