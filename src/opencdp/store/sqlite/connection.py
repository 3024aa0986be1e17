"""How every SQLite connection is opened: WAL, full sync, the same pragmas everywhere."""

from __future__ import annotations

import sqlite3

_PRAGMAS = (
    "PRAGMA busy_timeout = 10000",  # first: the others may wait for another writer's lock
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = OFF",
    "PRAGMA cache_size = -65536",
    "PRAGMA temp_store = MEMORY",
)


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with our pragmas."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


def sqlite_path(url: str) -> str:
    """``sqlite:///./x.db`` → ``./x.db``; ``sqlite:////abs/x.db`` → ``/abs/x.db``."""
    rest = url.removeprefix("sqlite:")
    if rest.startswith("///"):
        return rest[3:]
    if rest.startswith("//"):
        return rest[2:]
    return rest
