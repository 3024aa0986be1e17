"""The PostgreSQL bulk load: profiles and their events through ``COPY``, in chunks.

Each chunk is one transaction: it reserves its profile pks from the counter row
(as the write path does), then copies profiles, identities and events. When the
events table is empty its secondary indexes are dropped first and rebuilt at the
end from their own definitions. ``synchronous_commit`` is off for the load's
session only; the final index builds commit with it on again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import msgspec
import psycopg

from opencdp.models import BulkProfile
from opencdp.store.bulk import BulkReport, profile_rows

_encode = msgspec.json.encode
_JSON_COLUMNS = (4, 5, 6, 7, 8, 10, 11)  # of ``profile_row``: objects and lists
_CHUNK_PROFILES = 20_000

_COPY_PROFILES = (
    "COPY profiles (pk, id, external_id, email, traits, trait_stamps, anonymous_ids,"
    " audiences, created_by, created_time, first_events, last_events, last_activity,"
    " merged_into, workspace_id) FROM STDIN"
)
_COPY_IDENTITIES = "COPY identities (kind, value, profile_pk, workspace_id) FROM STDIN"
_COPY_EVENTS = (
    "COPY events (event_id, profile_pk, action, event_time, received_time, user_id,"
    " anonymous_id, raw, workspace_id, position) FROM STDIN"
)
_SECONDARY_INDEXES = """
SELECT i.relname, pg_get_indexdef(i.oid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
WHERE t.oid = 'events'::regclass AND NOT x.indisprimary
"""


def load(
    conn: psycopg.Connection[Any], workspace_id: int, profiles: Iterable[BulkProfile]
) -> BulkReport:
    """Store ``profiles`` in ``workspace_id``; ``conn`` is in autocommit mode."""
    conn.execute("SET synchronous_commit = off")
    conn.execute("SET maintenance_work_mem = '512MB'")
    dropped = _drop_event_indexes(conn)
    count_profiles = count_events = 0
    try:
        for chunk in _chunks(iter(profiles)):
            count_events += _copy_chunk(conn, workspace_id, chunk)
            count_profiles += len(chunk)
    finally:
        conn.execute("SET synchronous_commit = on")
        for _, definition in dropped:
            conn.execute(definition.encode())
    conn.execute("ANALYZE profiles")
    conn.execute("ANALYZE identities")
    conn.execute("ANALYZE events")
    return BulkReport(count_profiles, count_events)


def _chunks(profiles: Iterator[BulkProfile]) -> Iterator[list[BulkProfile]]:
    while chunk := list(islice(profiles, _CHUNK_PROFILES)):
        yield chunk


def _copy_chunk(
    conn: psycopg.Connection[Any], workspace_id: int, chunk: list[BulkProfile]
) -> int:
    events = 0
    with conn.transaction(), conn.cursor() as cursor:
        reserved = cursor.execute(
            "UPDATE profile_pk_counter SET last = last + %s RETURNING last", (len(chunk),)
        ).fetchone()
        assert reserved is not None
        first_pk = int(reserved[0]) - len(chunk) + 1
        rows = [profile_rows(source, pk) for pk, source in enumerate(chunk, start=first_pk)]
        with cursor.copy(_COPY_PROFILES) as copy:
            for row in rows:
                profile = row.profile
                for column in _JSON_COLUMNS:
                    profile[column] = _encode(profile[column]).decode()
                copy.write_row([*profile, workspace_id])
        with cursor.copy(_COPY_IDENTITIES) as copy:
            for row in rows:
                for identity in row.identities:
                    copy.write_row([*identity, workspace_id])
        count = sum(len(row.events) for row in rows)
        clock = cursor.execute(  # feed positions, as the write path takes them
            "INSERT INTO feed_clocks AS c (workspace_id, last) VALUES (%s, %s)"
            " ON CONFLICT (workspace_id) DO UPDATE SET last = c.last + excluded.last"
            " RETURNING last",
            (workspace_id, count),
        ).fetchone()
        assert clock is not None
        position = int(clock[0]) - count
        with cursor.copy(_COPY_EVENTS) as copy:
            for row in rows:
                for event in row.events:
                    position += 1
                    copy.write_row([*event, workspace_id, position])
                events += len(row.events)
    return events


def _drop_event_indexes(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """Drop the events table's secondary indexes if it is empty; their (name, definition)."""
    if conn.execute("SELECT 1 FROM events LIMIT 1").fetchone() is not None:
        return []
    indexes = [(str(name), str(sql)) for name, sql in conn.execute(_SECONDARY_INDEXES)]
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"'.encode())
    return indexes
