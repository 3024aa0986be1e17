"""The SQLite read driver: runs the read plans (``store.read_plan``) on a reader thread.

A reader thread has its own connection, never blocked by the writer process. A read
runs in one read transaction (``snapshot``: a page and its total see the same
committed state) under the read time budget (``deadline``: a progress handler
interrupts a statement once the budget is spent).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from opencdp.models import Workspace
from opencdp.store import read_plan
from opencdp.store.guarded_reads import ReadLimits, ReadTimedOut
from opencdp.store.read_plan import Plan
from opencdp.store.sqlite.dialect import SQLITE

T = TypeVar("T")
#: SQLite virtual-machine steps between two looks at the clock (a look costs ~0.1 µs).
_PROGRESS_STEPS = 4000


def run(conn: sqlite3.Connection, plan: Plan[T]) -> T:
    """Execute each statement the plan yields and send it the rows; its answer."""
    try:
        statement = next(plan)
        while True:
            statement = plan.send(conn.execute(*statement).fetchall())
    except StopIteration as done:
        answer: T = done.value
        return answer


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: every statement inside sees the same committed state."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:  # an interrupted statement may have ended it
            conn.execute("COMMIT")


@contextmanager
def deadline(conn: sqlite3.Connection, limits: ReadLimits) -> Iterator[None]:
    """Interrupt whatever ``conn`` runs once the budget is spent → ``ReadTimedOut``."""
    end = time.monotonic() + limits.seconds
    conn.set_progress_handler(lambda: time.monotonic() > end, _PROGRESS_STEPS)
    try:
        yield
    except sqlite3.OperationalError as exc:
        if str(exc) != "interrupted":
            raise
        raise ReadTimedOut(limits.timeout_ms) from None
    finally:
        conn.set_progress_handler(None, 0)


def workspace_id(conn: sqlite3.Connection, workspace: Workspace) -> int | None:
    return run(conn, read_plan.workspace_id(SQLITE, workspace))


def setting(conn: sqlite3.Connection, name: str) -> bytes | None:
    return run(conn, read_plan.setting(SQLITE, name))
