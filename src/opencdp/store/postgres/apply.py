"""What each command does on PostgreSQL, and how a group of them commits.

``GroupWriter`` commits each group the group commit (``store.group_commit``) hands it
in one transaction on a pool connection, one group at a time; each apply function
takes a run of commands of its kind (several ``AppendCalls``, any other command alone)
and returns one result per command. Property indexes are built ``CONCURRENTLY``, which
PostgreSQL allows only outside a transaction: those commands (``own_connection``) run
on a connection of their own, beside the group commit, so writes go on meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from opencdp.models import Accepted, Call, Workspace
from opencdp.store.batching import by_workspace, split_answers
from opencdp.store.commands import (
    AddToken,
    AppendCalls,
    Appliers,
    Command,
    DropPropertyIndex,
    IndexProperty,
    RevokeToken,
)
from opencdp.store.dialect import property_index
from opencdp.store.group_commit import AnswerEarly, Committed
from opencdp.store.postgres import reads
from opencdp.store.postgres.append import PostgresBatch
from opencdp.store.postgres.dialect import POSTGRES

Conn = psycopg.AsyncConnection[Any]


class Transaction:
    """An open transaction, the workspace ids it may create, the refusals it collects."""

    def __init__(self, conn: Conn, known: dict[Workspace, int]) -> None:
        self.conn = conn
        self.refusals: list[str] = []
        #: The feed positions of the events stored, a range per workspace written.
        self.positions: list[range] = []
        self.created: dict[Workspace, int] = {}
        self._known = known

    async def workspace_id(self, ws: Workspace) -> int:
        cached = self._known.get(ws) or self.created.get(ws)
        if cached is not None:
            return cached
        key = (ws.client_id, ws.account_id, ws.brand_id)
        await self.conn.execute(
            "INSERT INTO workspaces (client_id, account_id, brand_id) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            key,
        )
        cursor = await self.conn.execute(
            "SELECT id FROM workspaces WHERE client_id = %s AND account_id = %s AND brand_id = %s",
            key,
        )
        row = await cursor.fetchone()
        assert row is not None
        self.created[ws] = int(row[0])
        return self.created[ws]


class GroupWriter:
    """Commits groups on ``pool`` (the group commit's ``Committer`` on PostgreSQL).

    ``workspaces`` is the store's cache of workspace ids, which it extends only once a
    transaction has committed (a rollback undoes the ids it created).
    """

    def __init__(
        self,
        pool: Callable[[], AsyncConnectionPool],
        workspaces: dict[Workspace, int],
        *,
        ack_before_commit: bool = False,
    ) -> None:
        self._pool = pool
        self._workspaces = workspaces
        self._ack_before_commit = ack_before_commit

    @property
    def ready(self) -> bool:
        return True

    def commit(
        self, commands: list[Command[Any]], answer_early: AnswerEarly
    ) -> asyncio.Future[Committed]:
        return asyncio.ensure_future(self._commit(commands, answer_early))

    async def _commit(self, commands: list[Command[Any]], answer_early: AnswerEarly) -> Committed:
        async with self._pool().connection() as conn, conn.transaction():
            tx = Transaction(conn, self._workspaces)
            results = await applies.of(commands[0])(tx, commands)
            if self._ack_before_commit and isinstance(commands[0], AppendCalls):
                # the crash harness's negative control only: events answered, then lost
                answer_early(results)
                await asyncio.sleep(0.05)
        self._workspaces.update(tx.created)
        return Committed(results, tx.refusals, tuple(tx.positions))


Apply = Callable[[Transaction, Sequence[Any]], Awaitable[list[Any]]]
#: The apply function of each kind of command committed in a transaction.
applies: Appliers[Apply] = Appliers()
#: The apply function of each kind of command run outside any transaction (given the
#: database URL): such a command is never in a group.
own_connection: Appliers[Callable[[str, Any], Awaitable[Any]]] = Appliers()


@applies(AppendCalls)
async def append_calls(tx: Transaction, commands: Sequence[AppendCalls[Call]]) -> list[Any]:
    """Each workspace's calls of the whole group as one batch (a few statements).

    Workspaces go in id order: each batch locks its workspace's feed clock until the
    commit, and one order everywhere means two groups never wait for each other's.
    """
    results: list[list[Accepted]] = [[] for _ in commands]
    sizes = [len(c.calls) for c in commands]
    batches = [
        (await tx.workspace_id(workspace), indexes, calls)
        for workspace, indexes, calls in by_workspace([(c.workspace, c.calls) for c in commands])
    ]
    for ws, indexes, calls in sorted(batches, key=lambda batch: batch[0]):
        batch = PostgresBatch(tx.conn, ws, tx.refusals.append, tx.positions.append)
        split_answers(await batch.write(calls), indexes, sizes, results)
    return results


@applies(AddToken)
async def add_token(tx: Transaction, commands: Sequence[AddToken]) -> list[Any]:
    for command in commands:
        token = command.record
        await tx.conn.execute(
            "INSERT INTO tokens (token_id, secret_hash, client_id, accounts, brands, scopes,"
            " name, created_time) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                token.token_id, token.secret_hash, token.client_id, _jsonb(token.accounts),
                _jsonb(token.brands), _jsonb(token.scopes), token.name, token.created_time,
            ),
        )
    return [None for _ in commands]


@applies(RevokeToken)
async def revoke_token(tx: Transaction, commands: Sequence[RevokeToken]) -> list[Any]:
    results = []
    for command in commands:
        cursor = await tx.conn.execute(
            "UPDATE tokens SET revoked_time = %s WHERE token_id = %s AND revoked_time IS NULL",
            (command.when, command.token_id),
        )
        results.append(cursor.rowcount > 0)
    return results


@own_connection(IndexProperty)
async def index_property(url: str, command: IndexProperty) -> bool:
    path = command.path
    name = property_index(path)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
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


@own_connection(DropPropertyIndex)
async def drop_property_index(url: str, command: DropPropertyIndex) -> bool:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "DELETE FROM property_indexes WHERE path = %s", (command.path,)
        )
        await conn.execute(
            f"DROP INDEX CONCURRENTLY IF EXISTS {property_index(command.path)}"
        )
        return cursor.rowcount > 0


def _jsonb(values: Sequence[str] | None) -> Jsonb | None:
    return None if values is None else Jsonb(list(values))
