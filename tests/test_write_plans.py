"""The write path's look-ups are index searches driven by the batch, never table scans."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from opencdp.store import sqlite_batch
from opencdp.store.sqlite import SQLiteStore, connect


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    path = str(tmp_path / "plans.db")
    SQLiteStore(path).migrate()
    return connect(path)


@pytest.mark.parametrize(
    ("sql", "params", "search"),
    [
        (
            sqlite_batch._FIND_MESSAGES,
            ('["m1", "m2"]', 1),
            "SEARCH e USING INDEX events_by_message_id (workspace_id=? AND message_id=?)",
        ),
        (
            sqlite_batch._FIND_IDENTITIES,
            ('[["user", "u1"], ["anon", "a1"]]', 1),
            "SEARCH i USING PRIMARY KEY (workspace_id=? AND kind=? AND value=?)",
        ),
        (
            sqlite_batch._LOAD_PROFILES,
            ("[1, 2, 3]",),
            "SEARCH p USING INTEGER PRIMARY KEY (rowid=?)",
        ),
    ],
)
def test_batch_lookups_are_driven_by_the_batch(
    conn: sqlite3.Connection, sql: str, params: tuple[object, ...], search: str
) -> None:
    """The batch's ids are the outer loop; each one is one index search, whatever the size."""
    plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    assert plan[0].startswith("SCAN j VIRTUAL TABLE"), plan
    assert plan[1:] == [search], plan
