"""The write path's look-ups are index searches driven by the batch, never table scans."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from opencdp.store.sqlite import append as sqlite_batch
from opencdp.store.sqlite.connection import connect
from opencdp.store.sqlite.store import SQLiteStore


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    path = str(tmp_path / "plans.db")
    SQLiteStore(path).migrate()
    return connect(path)


def test_batch_lookups_are_driven_by_the_batch(conn: sqlite3.Connection) -> None:
    """The batch's ids are the outer loop; each one is one index search, whatever the size.

    One statement does every look-up of a batch (stored messageIds, identities, their
    profiles, the highest pk): each part must be such a search, never a scan.
    """
    params = ('["m1", "m2"]', '[["user", "u1"], ["anon", "a1"]]', 1)
    plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sqlite_batch._LOAD, params)]
    for search in (
        "SEARCH e USING INDEX events_by_message_id (workspace_id=? AND message_id=?)",
        "SEARCH i USING PRIMARY KEY (workspace_id=? AND kind=? AND value=?)",
        "SEARCH p USING INTEGER PRIMARY KEY (rowid=?)",
    ):
        assert search in plan, plan
    scans = [step for step in plan if step.startswith("SCAN")]
    assert all(s.startswith(("SCAN j VIRTUAL TABLE", "SCAN named", "SCAN CONSTANT")) for s in scans)
