"""The scale-out store: PostgreSQL, shared by any number of ``opencdp serve`` processes.

Writes are group-committed by one task per process; many processes coordinate through
row locks, advisory locks and unique constraints (see ``postgres.append``). Commits
wait for the WAL flush (``synchronous_commit`` on), so a 200 survives a crash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from opencdp.errors import Unavailable
from opencdp.models import (
    Accepted,
    BulkProfile,
    Call,
    PropertyIndex,
    TokenRecord,
    Workspace,
)
from opencdp.store import read_plan
from opencdp.store.base import Store
from opencdp.store.batching import by_workspace, commit_counts, settle, split_answers
from opencdp.store.dialect import property_index
from opencdp.store.guarded_reads import ReadLimits
from opencdp.store.migrations import load_migrations
from opencdp.store.postgres import bulk as postgres_bulk
from opencdp.store.postgres import reads
from opencdp.store.postgres.append import PostgresBatch
from opencdp.store.postgres.dialect import POSTGRES
from opencdp.store.postgres.revocations import RevocationListener
from opencdp.store.read_plan import PlannedReads, Read, Scope

log = logging.getLogger("opencdp.store")
T = TypeVar("T")

_MIGRATION_LOCK = 0x6F70656E636470  # one advisory lock id for "migrating this database"


@dataclass(slots=True)
class _Submission:
    workspace: Workspace
    calls: Sequence[Call]
    future: asyncio.Future[list[Accepted]]


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
    ) -> None:
        self.url = url
        self.read_limits = read_limits or ReadLimits()
        self._ack_before_commit = ack_before_commit
        self._batch_max = batch_max
        self._queue_max = queue_max
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None
        self._queue: asyncio.Queue[_Submission | None] = asyncio.Queue()
        self._queued = 0
        self._writer: asyncio.Task[None] | None = None
        self._workspaces: dict[Workspace, int] = {}
        self._cursor_secret: bytes | None = None
        self._revocations = RevocationListener(url)

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
        self._revocations.open()
        self._queue = asyncio.Queue()
        self._writer = asyncio.create_task(self._run_writer(), name="opencdp-writer")

    async def stop(self) -> None:
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
            self._writer = None
        await self._revocations.close()
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

    # -- ingestion ---------------------------------------------------------------------

    async def append_calls(self, workspace: Workspace, calls: Sequence[Call]) -> list[Accepted]:
        if not calls:
            return []
        if self._queued + len(calls) > self._queue_max:
            raise Unavailable("the write queue is full; retry shortly", retry_after=1)
        future: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
        self._queued += len(calls)
        await self._queue.put(_Submission(workspace, calls, future))
        return await future

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

    async def _run_writer(self) -> None:
        while True:
            group, stopping = await self._take_group()
            if group:
                await self._commit_group(group)
            if stopping:
                return

    async def _take_group(self) -> tuple[list[_Submission], bool]:
        item = await self._queue.get()
        group: list[_Submission] = []
        size = 0
        while item is not None:
            group.append(item)
            size += len(item.calls)
            if size >= self._batch_max or self._queue.empty():
                return group, False
            item = self._queue.get_nowait()
        return group, True

    async def _commit_group(self, group: list[_Submission]) -> None:
        try:
            results: list[list[Accepted] | BaseException] = list(await self._write(group))
        except Exception:
            log.exception("group commit failed; retrying its requests one by one")
            results = [await self._write_alone(s) for s in group]
        self._queued -= sum(len(s.calls) for s in group)
        self.observer.committed(*commit_counts(results))
        settle([s.future for s in group], results)

    async def _write_alone(self, submission: _Submission) -> list[Accepted] | BaseException:
        try:
            return (await self._write([submission]))[0]
        except Exception as exc:
            log.exception("write failed")
            return exc

    async def _write(self, group: list[_Submission]) -> list[list[Accepted]]:
        created: dict[Workspace, int] = {}
        async with self.pool.connection() as conn, conn.transaction():
            results: list[list[Accepted]] = [[] for _ in group]
            sizes = [len(s.calls) for s in group]
            for workspace, indexes, calls in by_workspace([(s.workspace, s.calls) for s in group]):
                ws_id = await self._workspace_id(conn, workspace, created)
                answers = await PostgresBatch(conn, ws_id, self.observer).write(calls)
                split_answers(answers, indexes, sizes, results)
            if self._ack_before_commit:  # the crash harness's negative control only
                settle([s.future for s in group], results)
                await asyncio.sleep(0.05)
        self._workspaces.update(created)  # only once committed: a rollback undoes them
        return results

    async def _workspace_id(
        self, conn: psycopg.AsyncConnection[Any], ws: Workspace, created: dict[Workspace, int]
    ) -> int:
        cached = self._workspaces.get(ws) or created.get(ws)
        if cached is not None:
            return cached
        key = (ws.client_id, ws.account_id, ws.brand_id)
        await conn.execute(
            "INSERT INTO workspaces (client_id, account_id, brand_id) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            key,
        )
        cursor = await conn.execute(
            "SELECT id FROM workspaces WHERE client_id = %s AND account_id = %s AND brand_id = %s",
            key,
        )
        row = await cursor.fetchone()
        assert row is not None
        created[ws] = int(row[0])
        return created[ws]

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

    # -- property indexes: built concurrently, on a connection of their own ------------

    async def index_property(self, path: str) -> bool:
        name = property_index(path)
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            if await reads.one(conn, "SELECT 1 FROM property_indexes WHERE path = %s", (path,)):
                return False
            # An index of that name but no declaration is left over from a build that
            # was interrupted (possibly invalid): build it again.
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            await conn.execute(POSTGRES.property_index_sql(path))
            cursor = await conn.execute(
                "INSERT INTO property_indexes (path, created_time) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                (path, time.time_ns() // 1_000_000),
            )
            return cursor.rowcount > 0

    async def drop_property_index(self, path: str) -> bool:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            cursor = await conn.execute("DELETE FROM property_indexes WHERE path = %s", (path,))
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {property_index(path)}")
            return cursor.rowcount > 0

    async def list_property_indexes(self) -> list[PropertyIndex]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(read_plan.PROPERTY_INDEXES_SELECT)
            return [PropertyIndex(path, created) for path, created in await cursor.fetchall()]

    # -- tokens ------------------------------------------------------------------------

    async def add_token(self, token: TokenRecord) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO tokens (token_id, secret_hash, client_id, accounts, brands, scopes,"
                " name, created_time) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    token.token_id, token.secret_hash, token.client_id, _jsonb(token.accounts),
                    _jsonb(token.brands), _jsonb(token.scopes), token.name, token.created_time,
                ),
            )

    async def find_token(self, token_id: str) -> TokenRecord | None:
        async with self.pool.connection() as conn:
            select = read_plan.TOKEN_SELECT + " WHERE token_id = %s"
            cursor = await conn.execute(select, (token_id,))
            row = await cursor.fetchone()
        return None if row is None else _token_from_row(row)

    def revocations(self) -> int | None:
        return self._revocations.value()

    async def list_tokens(self) -> list[TokenRecord]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(read_plan.TOKEN_SELECT + " ORDER BY created_time, token_id")
            return [_token_from_row(row) for row in await cursor.fetchall()]

    async def revoke_token(self, token_id: str, when: int) -> bool:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "UPDATE tokens SET revoked_time = %s WHERE token_id = %s AND revoked_time IS NULL",
                (when, token_id),
            )
            self._revocations.bump()  # committed (autocommit); other servers are notified
            return cursor.rowcount > 0


def _jsonb(values: Sequence[str] | None) -> Jsonb | None:
    return None if values is None else Jsonb(list(values))


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


