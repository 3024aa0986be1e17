"""The scale-out store: PostgreSQL, shared by any number of ``opencdp serve`` processes.

Every write is a command, group-committed in each process one transaction at a time
(``store.group_commit`` with ``postgres.apply``); many processes coordinate through
row locks, advisory locks and unique constraints (see ``postgres.append``). Commits
wait for the WAL flush (``synchronous_commit`` on), so a 200 survives a crash.
Reads run in one REPEATABLE READ snapshot each, on the same connection pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

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
from opencdp.store.group_commit import Committed, GroupCommit, describe, tell
from opencdp.store.guarded_reads import ReadLimits
from opencdp.store.migrations import load_migrations
from opencdp.store.postgres import bulk as postgres_bulk
from opencdp.store.postgres import reads
from opencdp.store.postgres.apply import GroupWriter, own_connection
from opencdp.store.postgres.dialect import POSTGRES
from opencdp.store.postgres.listener import Listener
from opencdp.store.read_plan import PlannedReads, Read, Scope

log = logging.getLogger("opencdp.store")
T = TypeVar("T")
R = TypeVar("R")

_MIGRATION_LOCK = 0x6F70656E636470  # one advisory lock id for "migrating this database"


class PostgresStore(PlannedReads, Store):
    def __init__(
        self,
        url: str,
        *,
        batch_max: int = 2000,
        queue_max: int = 20000,
        pool_size: int = 8,
        ack_before_commit: bool = False,
        read_limits: ReadLimits | None = None,
        observers: Sequence[StoreObserver] = (),
    ) -> None:
        self.url = url
        self.read_limits = read_limits or ReadLimits()
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None
        self._workspaces: dict[Workspace, int] = {}
        self._cursor_secret: bytes | None = None
        self._listener = Listener(url, on_feed=self._notified)
        self.feed_waiters = Waiters(self._watch_commits)
        self._observers = (*observers, self.feed_waiters)
        writer = GroupWriter(
            lambda: self.pool, self._workspaces, ack_before_commit=ack_before_commit
        )
        self._writes = GroupCommit(
            writer, batch_max=batch_max, queue_max=queue_max, observers=self._observers
        )
        self._started = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStore:
        return cls(url, **options)

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.migrate)
        self._pool = AsyncConnectionPool(
            self.url, min_size=2, max_size=self._pool_size, open=False,
            kwargs={"autocommit": True},
        )
        await self._pool.open(wait=True)
        self._listener.open()
        self._writes.start()
        self._started = True
        self.feed_waiters.open()

    async def stop(self) -> None:
        self.feed_waiters.close()
        if self._started:
            await self._writes.drain()
            self._started = False
        await self._listener.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        try:
            async with self.pool.connection(timeout=2) as conn:
                cursor = await conn.execute("SELECT 1")
                return await cursor.fetchone() == (1,)
        except (psycopg.Error, TimeoutError):
            return False

    def migrate(self) -> int:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                return _apply_migrations(conn)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise RuntimeError("the store is not started")
        return self._pool

    # -- writes ------------------------------------------------------------------------

    async def execute(self, command: Command[R]) -> R:
        if command in own_connection:
            result: R = await own_connection.of(command)(self.url, command)
            tell(self._observers, describe([command], Committed([result])))
            return result
        if not self._started:
            raise RuntimeError("the store is not started")
        return await self._writes.submit(command)

    async def bulk_load(self, workspace: Workspace, profiles: Iterable[BulkProfile]) -> int:
        def run() -> int:
            self.migrate()
            with psycopg.connect(self.url, autocommit=True) as conn:
                key = (workspace.client_id, workspace.account_id, workspace.brand_id)
                conn.execute(
                    "INSERT INTO workspaces (client_id, account_id, brand_id)"
                    " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    key,
                )
                row = conn.execute(
                    "SELECT id FROM workspaces"
                    " WHERE client_id = %s AND account_id = %s AND brand_id = %s",
                    key,
                ).fetchone()
                assert row is not None
                return postgres_bulk.load(conn, int(row[0]), profiles).events

        return await asyncio.to_thread(run)

    # -- reads: one REPEATABLE READ transaction each ----------------------------------

    async def cursor_secret(self) -> bytes:
        if self._cursor_secret is None:
            async with self.pool.connection() as conn:
                secret = await reads.setting(conn, "cursor_key")
            if secret is None:
                raise RuntimeError("the cursor key is missing: run the migrations")
            self._cursor_secret = secret
        return self._cursor_secret

    async def _read(self, workspace: Workspace, read: Read[T]) -> T:
        """Run ``read`` in one snapshot, within the read limits."""
        limits = self.read_limits
        async with limits.lane(workspace), self.pool.connection() as conn:
            ws = self._workspaces.get(workspace)
            if ws is None:
                ws = await reads.workspace_id(conn, workspace)
                if ws is None:
                    return read.nothing()
                self._workspaces[workspace] = ws
            async with reads.snapshot(conn, limits):
                return await reads.run(conn, read.plan(Scope(POSTGRES, workspace, ws)))

    # -- the change feed's wake-ups from other processes -------------------------------

    async def _watch_commits(self, wake: Callable[[Workspace | None], None]) -> None:
        """While feed readers wait: notifications wake them (``_notified``); while the
        listener is down, every reader reads again each ``POLL_EVERY`` seconds, and
        once more when it listens again (a commit may have come just before)."""
        listener = self._listener
        listener.ensure_started()
        sessions = listener.sessions
        while True:
            await asyncio.sleep(POLL_EVERY)
            if not listener.listening or listener.sessions != sessions:
                sessions = listener.sessions
                wake(None)

    def _notified(self, workspace_id: int) -> None:
        """A transaction that stored events in ``workspace_id`` committed (any process)."""
        for workspace in self.feed_waiters.waited():
            known = self._workspaces.get(workspace)
            if known is None or known == workspace_id:  # None: it had no row when read
                self.feed_waiters.wake(workspace)

    # -- property indexes: built concurrently (``postgres.apply``) -----------------------

    async def list_property_indexes(self) -> list[PropertyIndex]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(read_plan.PROPERTY_INDEXES_SELECT)
            return [PropertyIndex(path, created) for path, created in await cursor.fetchall()]

    # -- tokens ------------------------------------------------------------------------

    async def find_token(self, token_id: str) -> TokenRecord | None:
        async with self.pool.connection() as conn:
            select = read_plan.TOKEN_SELECT + " WHERE token_id = %s"
            cursor = await conn.execute(select, (token_id,))
            row = await cursor.fetchone()
        return None if row is None else _token_from_row(row)

    def revocations(self) -> int | None:
        return self._listener.value()

    async def list_tokens(self, client_id: str | None = None) -> list[TokenRecord]:
        where, params = ("", ()) if client_id is None else (" WHERE client_id = %s", (client_id,))
        select = read_plan.TOKEN_SELECT + where + " ORDER BY created_time, token_id"
        async with self.pool.connection() as conn:
            cursor = await conn.execute(select, params)
            return [_token_from_row(row) for row in await cursor.fetchall()]

    async def revoke_token(self, token_id: str, when: int) -> bool:
        changed = await super().revoke_token(token_id, when)
        self._listener.bump()  # committed; other servers hear of it through NOTIFY
        return changed


def _token_from_row(row: tuple[Any, ...]) -> TokenRecord:
    return read_plan.token_from_row(row, list)


def _apply_migrations(conn: psycopg.Connection[Any]) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_time BIGINT NOT NULL)"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    version = max(applied, default=0)
    for migration in load_migrations("postgres"):
        if migration.version in applied:
            continue
        with conn.transaction():
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                (migration.version, migration.name, int(time.time() * 1000)),
            )
        version = migration.version
    return version


