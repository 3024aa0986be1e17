"""The PostgreSQL read driver: runs the read plans (``store.read_plan``) on an async
connection from the pool.

A read runs in one REPEATABLE READ, READ ONLY transaction (``snapshot``: a page and
its total see the same committed state) whose statements each have the read time
budget (``statement_timeout``; a cancelled statement → ``ReadTimedOut``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from psycopg import AsyncConnection
from psycopg.errors import QueryCanceled

from opencdp.models import Workspace
from opencdp.store import read_plan
from opencdp.store.guarded_reads import ReadLimits, ReadTimedOut
from opencdp.store.postgres.dialect import POSTGRES
from opencdp.store.read_plan import Plan

Conn = AsyncConnection[Any]
T = TypeVar("T")


async def run(conn: Conn, plan: Plan[T]) -> T:
    """Execute each statement the plan yields and send it the rows; its answer."""
    try:
        statement = next(plan)
        while True:
            statement = plan.send(await rows(conn, *statement))
    except StopIteration as done:
        answer: T = done.value
        return answer


@asynccontextmanager
async def snapshot(conn: Conn, limits: ReadLimits) -> AsyncIterator[None]:
    """One read-only transaction on one snapshot, each statement within the budget."""
    try:
        async with conn.transaction():
            await conn.execute(
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY;"
                f"SET LOCAL statement_timeout = {int(limits.timeout_ms)}"
            )
            yield
    except QueryCanceled:
        raise ReadTimedOut(limits.timeout_ms) from None


async def rows(conn: Conn, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchall()


async def one(conn: Conn, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchone()


async def workspace_id(conn: Conn, workspace: Workspace) -> int | None:
    return await run(conn, read_plan.workspace_id(POSTGRES, workspace))


async def setting(conn: Conn, name: str) -> bytes | None:
    return await run(conn, read_plan.setting(POSTGRES, name))
