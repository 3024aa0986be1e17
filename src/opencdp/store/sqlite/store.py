"""The embedded store: one SQLite file in WAL mode.

Every write is a command committed by the one writer connection, which the writer
process owns (``sqlite.writer_process``, fed in groups by ``sqlite.writer_client``);
a store that is not started (a tool, a test) commits each command alone on a
connection of its own, in a worker thread, with the same code (``sqlite.apply``).
Readers use their own connections (one per thread) and are never blocked by the
writer. Nothing here touches the database on the event loop. Every commit is flushed
to disk (``synchronous=FULL``) before a request is answered.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from opencdp.models import (
    BulkProfile,
    PropertyIndex,
    TokenRecord,
    Workspace,
)
from opencdp.store import read_plan
from opencdp.store.base import Store, StoreObserver
from opencdp.store.commands import Command
from opencdp.store.feed import POLL_EVERY, Waiters
from opencdp.store.group_commit import describe, tell
from opencdp.store.guarded_reads import ReadLimits
from opencdp.store.migrations import load_migrations
from opencdp.store.read_plan import PlannedReads, Read, Scope
from opencdp.store.sqlite import bulk as sqlite_bulk
from opencdp.store.sqlite import reads
from opencdp.store.sqlite.apply import run_once
from opencdp.store.sqlite.connection import connect, sqlite_path
from opencdp.store.sqlite.dialect import SQLITE
from opencdp.store.sqlite.revocations import RevocationCount, bump_revocations, revocations_path
from opencdp.store.sqlite.writer_client import WriterClient

T = TypeVar("T")
R = TypeVar("R")


class SQLiteStore(PlannedReads, Store):
    def __init__(
        self,
        path: str,
        *,
        batch_max: int = 2000,
        queue_max: int = 20000,
        ack_before_commit: bool = False,
        read_limits: ReadLimits | None = None,
        observers: Sequence[StoreObserver] = (),
    ) -> None:
        self.path = path
        self.read_limits = read_limits or ReadLimits()
        self._ack_before_commit = ack_before_commit
        self._batch_max = batch_max
        self._queue_max = queue_max
        self.feed_waiters = Waiters(self._watch_commits)
        self._observers = (*observers, self.feed_waiters)
        self._writer: WriterClient | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._watch_conn: sqlite3.Connection | None = None
        self._workspace_ids: dict[Workspace, int] = {}
        self._cursor_secret: bytes | None = None
        self._revocations: RevocationCount | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        return cls(sqlite_path(url), **options)

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.migrate)
        self._revocations = RevocationCount(self._revocations_path)
        writer = WriterClient(
            self.path,
            batch_max=self._batch_max,
            queue_max=self._queue_max,
            observers=self._observers,
            ack_before_commit=self._ack_before_commit,
        )
        await writer.start()
        self._writer = writer
        self.feed_waiters.open()

    async def stop(self) -> None:
        self.feed_waiters.close()
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        if self._revocations is not None:
            self._revocations.close()
            self._revocations = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._watch_conn = None
        self._local = threading.local()

    async def ping(self) -> bool:
        def ask() -> bool:
            return bool(self.reader().execute("SELECT 1").fetchone() == (1,))

        try:
            return await asyncio.to_thread(ask)
        except sqlite3.Error:
            return False

    def migrate(self) -> int:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path)
        try:
            return _apply_migrations(conn)
        finally:
            conn.close()

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (created on first use)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @property
    def writer(self) -> WriterClient:
        if self._writer is None:
            raise RuntimeError("the store is not started")
        return self._writer

    # -- writes ------------------------------------------------------------------------

    async def execute(self, command: Command[R]) -> R:
        if self._writer is not None:
            return await self._writer.submit(command)
        committed = await asyncio.to_thread(run_once, self.path, command)
        tell(self._observers, describe([command], committed))
        result: R = committed.results[0]
        return result

    async def bulk_load(self, workspace: Workspace, profiles: Iterable[BulkProfile]) -> int:
        """Only on a store that is not started: the writer owns row ids while it runs."""
        if self._writer is not None:
            raise RuntimeError("bulk_load needs a store that is not started")
        self.migrate()

        def run() -> int:
            conn = connect(self.path)
            try:
                ws = _ensure_workspace(conn, workspace)
                first_pk = conn.execute("SELECT coalesce(max(pk), 0) + 1 FROM profiles")
                report = sqlite_bulk.load(conn, ws, profiles, int(first_pk.fetchone()[0]))
                return report.events
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    # -- reads: in a worker thread, on that thread's read connection --------------------

    async def cursor_secret(self) -> bytes:
        if self._cursor_secret is None:
            secret = await asyncio.to_thread(lambda: reads.setting(self.reader(), "cursor_key"))
            if secret is None:
                raise RuntimeError("the cursor key is missing: run the migrations")
            self._cursor_secret = secret
        return self._cursor_secret

    async def _read(self, workspace: Workspace, read: Read[T]) -> T:
        """Run ``read`` in one read transaction, within the read limits."""

        def run() -> T:
            conn = self.reader()
            ws = self._workspace_id(conn, workspace)
            if ws is None:
                return read.nothing()
            with reads.snapshot(conn), reads.deadline(conn, self.read_limits):
                return reads.run(conn, read.plan(Scope(SQLITE, workspace, ws)))

        async with self.read_limits.lane(workspace):
            return await asyncio.to_thread(run)

    async def _watch_commits(self, wake: Callable[[Workspace | None], None]) -> None:
        """While feed readers wait: wake them all when another connection has committed
        (``PRAGMA data_version`` changed: another server on this file, or this server's
        own writer process, whose commits the observer has already told)."""
        seen = await asyncio.to_thread(self._data_version)
        while True:
            await asyncio.sleep(POLL_EVERY)
            version = await asyncio.to_thread(self._data_version)
            if version != seen:
                seen = version
                wake(None)

    def _data_version(self) -> int:
        """``PRAGMA data_version`` on the feed watch's own connection (a count that
        changes when another connection commits; each connection has its own count)."""
        with self._readers_lock:
            if self._watch_conn is None:
                self._watch_conn = connect(self.path, readonly=True)
                self._readers.append(self._watch_conn)
            return int(self._watch_conn.execute("PRAGMA data_version").fetchone()[0])

    def _workspace_id(self, conn: sqlite3.Connection, workspace: Workspace) -> int | None:
        ws = self._workspace_ids.get(workspace)
        if ws is None:
            ws = reads.workspace_id(conn, workspace)
            if ws is not None:
                self._workspace_ids[workspace] = ws
        return ws

    # -- property indexes: built by the writer (``sqlite.apply``) ------------------------

    async def list_property_indexes(self) -> list[PropertyIndex]:
        def read() -> list[PropertyIndex]:
            rows = self.reader().execute(read_plan.PROPERTY_INDEXES_SELECT).fetchall()
            return [PropertyIndex(path, created) for path, created in rows]

        return await asyncio.to_thread(read)

    # -- tokens ------------------------------------------------------------------------

    async def find_token(self, token_id: str) -> TokenRecord | None:
        def read() -> TokenRecord | None:
            select = read_plan.TOKEN_SELECT + " WHERE token_id = ?"
            row = self.reader().execute(select, (token_id,)).fetchone()
            return None if row is None else _token_from_row(row)

        return await asyncio.to_thread(read)

    def revocations(self) -> int | None:
        return None if self._revocations is None else self._revocations.value()

    async def list_tokens(self, client_id: str | None = None) -> list[TokenRecord]:
        where, params = ("", ()) if client_id is None else (" WHERE client_id = ?", (client_id,))

        def read() -> list[TokenRecord]:
            select = read_plan.TOKEN_SELECT + where + " ORDER BY created_time, token_id"
            rows = self.reader().execute(select, params).fetchall()
            return [_token_from_row(row) for row in rows]

        return await asyncio.to_thread(read)

    async def revoke_token(self, token_id: str, when: int) -> bool:
        """Revoke, then (after the commit) bump the revocation count every process reads."""
        revoked = await super().revoke_token(token_id, when)
        await asyncio.to_thread(bump_revocations, self._revocations_path)
        return revoked

    @property
    def _revocations_path(self) -> str:
        return revocations_path(self.path)


def _token_from_row(row: tuple[Any, ...]) -> TokenRecord:
    return read_plan.token_from_row(row, msgspec.json.decode)


def _ensure_workspace(conn: sqlite3.Connection, workspace: Workspace) -> int:
    key = (workspace.client_id, workspace.account_id, workspace.brand_id)
    conn.execute(
        "INSERT OR IGNORE INTO workspaces (client_id, account_id, brand_id) VALUES (?, ?, ?)", key
    )
    found = reads.workspace_id(conn, workspace)
    assert found is not None
    return found


def _apply_migrations(conn: sqlite3.Connection) -> int:
    """Apply pending migrations under an exclusive lock, so concurrent starts migrate once."""
    conn.execute("BEGIN EXCLUSIVE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_time INTEGER NOT NULL)"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        version = max(applied, default=0)
        for migration in load_migrations("sqlite"):
            if migration.version in applied:
                continue
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                (migration.version, migration.name, int(time.time() * 1000)),
            )
            version = migration.version
        conn.execute("COMMIT")
        return version
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split a script into complete statements (``sqlite3.complete_statement``)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip() and not pending.strip().startswith("--"):
        statements.append(pending.strip())
    return [s for s in statements if s.strip(" \n;")]
