"""Every read query shape is served from an index: no full scan of events or profiles.

The statements are the ones the store really runs (caught with SQLite's trace hook,
parameters bound); each goes through ``EXPLAIN QUERY PLAN``. A ``SCAN`` of events,
profiles or identities without ``USING … INDEX`` fails the test.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from opencdp.models import EventKey, EventQuery, FeedQuery, ProfileKey, ProfileQuery, ProfileRef
from opencdp.store.dialect import property_index
from opencdp.store.read_plan import (
    FindProfiles,
    GetEvent,
    ListEvents,
    ListProfiles,
    Read,
    ReadFeed,
    Scope,
)
from opencdp.store.sqlite import reads
from opencdp.store.sqlite.connection import connect
from opencdp.store.sqlite.dialect import SQLITE
from opencdp.store.sqlite.store import SQLiteStore
from tests.read_fixtures import T0, WS, call, send

_FULL_SCAN = re.compile(r"^SCAN (events|profiles|identities|e|p|i)\b(?!.*USING)")


@pytest.fixture
async def database(anyio_backend: str, tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    store = SQLiteStore(str(tmp_path / "plans.db"))
    await store.start()
    try:
        await send(
            store,
            call("identify", user_id="ABC/123", traits={"email": "same@x.com"}, at=T0),
            call("identify", user_id="u2", traits={"email": "same@x.com"}, at=T0 + 1),
            call(user_id="ABC/123", anonymous_id="anon-1", properties={"a": {"b": 1}}),
        )
        conn = store.reader()
        ws = reads.workspace_id(conn, WS)
        assert ws is not None
        yield store.path, ws
    finally:
        await store.stop()


def _run(path: str, work: Callable[[sqlite3.Connection], Any]) -> list[str]:
    """The statements ``work`` runs, with their parameters bound."""
    conn = connect(path, readonly=True)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        with reads.snapshot(conn):
            work(conn)
    finally:
        conn.close()
    return [s for s in statements if s.split()[0].upper() not in ("BEGIN", "COMMIT")]


def _read(conn: sqlite3.Connection, ws: int, read: Read[Any]) -> Any:
    """``read`` as the store runs it, on ``conn``."""
    return reads.run(conn, read.plan(Scope(SQLITE, WS, ws)))


def _plan(path: str, sql: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    finally:
        conn.close()


AFTER = EventKey(T0, T0, "x")
PROFILE = ProfileRef("userId", "ABC/123")
EVENT_SHAPES = {
    "feed newest first": EventQuery(),
    "feed oldest first": EventQuery(sort="asc"),
    "feed scrolled": EventQuery(after=AFTER),
    "from": EventQuery(offset=100, size=10),
    "include one": EventQuery(include=("page",)),
    "include several": EventQuery(include=("page", "identify", "product_added")),
    "include several scrolled": EventQuery(include=("page", "identify"), after=AFTER, sort="asc"),
    "exclude": EventQuery(exclude=("page", "identify")),
    "time window": EventQuery(start=T0, end=T0 + 1000),
    "include with time window": EventQuery(include=("page",), start=T0, end=T0 + 1000),
    "property filter": EventQuery(properties=(("a.b", "1"), ("c", "x"))),
    "property filter, sorted ascending": EventQuery(properties=(("a.b", "1"),), sort="asc"),
    "userId": EventQuery(user_id="ABC/123"),
    "userId with include": EventQuery(user_id="ABC/123", include=("page", "identify")),
    "a profile's events": EventQuery(profile=PROFILE, start=T0, after=AFTER),
    "an email's events": EventQuery(profile=ProfileRef("email", "same@x.com")),
    "an id's events": EventQuery(profile=ProfileRef("anonymousId", "anon-1")),
}
PROFILE_REFS = [
    PROFILE,
    ProfileRef("email", "same@x.com"),
    ProfileRef("anonymousId", "anon-1"),
    ProfileRef("id", "4c90b9cf"),
]
LISTINGS = {
    "activity": ProfileQuery(),
    "activity scrolled": ProfileQuery(after=ProfileKey(T0, 5)),
    "activity past the active ones": ProfileQuery(after=ProfileKey(None, 5)),
    "created": ProfileQuery(sort="created"),
    "created scrolled": ProfileQuery(sort="created", after=ProfileKey(None, 5)),
}


FEED_SHAPES = {
    "from the oldest": FeedQuery(after=0),
    "after now": FeedQuery(after=None),
    "after a position, filtered": FeedQuery(after=2, include=("page",), exclude=("identify",)),
}


def _assert_indexed(path: str, statements: list[str]) -> None:
    assert statements
    for sql in statements:
        plan = _plan(path, sql)
        scans = [line for line in plan if _FULL_SCAN.match(line)]
        assert not scans, f"full scan in {sql!r}: {plan}"


@pytest.mark.anyio
@pytest.mark.parametrize("shape", EVENT_SHAPES)
async def test_event_queries(database: tuple[str, int], shape: str) -> None:
    path, ws = database
    query = EVENT_SHAPES[shape]
    _assert_indexed(path, _run(path, lambda conn: _read(conn, ws, ListEvents(query))))


@pytest.mark.anyio
@pytest.mark.parametrize("shape", FEED_SHAPES)
async def test_feed_reads_walk_positions_in_order(database: tuple[str, int], shape: str) -> None:
    """The change feed seeks its position in ``events_by_position``; no sort step."""
    path, ws = database
    statements = _run(path, lambda conn: _read(conn, ws, ReadFeed(FEED_SHAPES[shape])))
    _assert_indexed(path, statements)
    for sql in statements:
        assert not [line for line in _plan(path, sql) if "TEMP B-TREE" in line], sql


@pytest.mark.anyio
@pytest.mark.parametrize("ref", PROFILE_REFS, ids=str)
async def test_profile_look_ups(database: tuple[str, int], ref: ProfileRef) -> None:
    path, ws = database
    statements = _run(path, lambda conn: _read(conn, ws, FindProfiles(ref, with_events=True)))
    _assert_indexed(path, statements)


@pytest.mark.anyio
@pytest.mark.parametrize("shape", LISTINGS)
async def test_profile_listings(database: tuple[str, int], shape: str) -> None:
    path, ws = database
    query = LISTINGS[shape]
    _assert_indexed(path, _run(path, lambda conn: _read(conn, ws, ListProfiles(query))))


@pytest.mark.anyio
async def test_event_by_id_workspace_and_secret(database: tuple[str, int]) -> None:
    path, ws = database

    def work(conn: sqlite3.Connection) -> None:
        _read(conn, ws, GetEvent("01a20329-89ab-7729-b9a7-5b87ce1134bb"))
        reads.workspace_id(conn, WS)
        reads.setting(conn, "cursor_key")

    _assert_indexed(path, _run(path, work))


@pytest.mark.anyio
@pytest.mark.parametrize("sort", ["asc", "desc"])
async def test_a_declared_property_walks_its_index_in_order(
    database: tuple[str, int], sort: str
) -> None:
    """Page and total seek one value in the declared index; it gives the order (no sort)."""
    path, ws = database
    await SQLiteStore(path).index_property("a.b")
    query = EventQuery(
        properties=(("a.b", "1"), ("c", "x")), exclude=("page",), start=T0, after=AFTER,
        sort="asc" if sort == "asc" else "desc",
    )
    statements = _run(path, lambda conn: _read(conn, ws, ListEvents(query)))
    on_events = [_plan(path, sql) for sql in statements if "FROM events" in sql]
    assert len(on_events) == 2  # the total and the page
    seek = f"SEARCH e USING INDEX {property_index('a.b')} (workspace_id=? AND <expr>=?"
    for plan in on_events:
        assert any(line.startswith(seek) for line in plan), plan
        assert not any("TEMP B-TREE" in line for line in plan), plan


def test_the_check_catches_a_full_scan(tmp_path: Path) -> None:
    path = str(tmp_path / "x.db")
    SQLiteStore(path).migrate()
    plan = _plan(path, "SELECT * FROM events WHERE raw LIKE '%x%'")
    assert any(_FULL_SCAN.match(line) for line in plan), plan
