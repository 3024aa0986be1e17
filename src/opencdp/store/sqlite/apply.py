"""What each command does on SQLite, inside the writer connection's open transaction.

The writer process (``sqlite.writer_process``) begins the transaction, applies a group
with ``apply_group`` and commits; a store that is not started runs the same code on a
connection of its own (``Transaction.run_once``). Each apply function takes a run of
commands of its kind (several ``AppendCalls`` of one group commit, any other command
alone) and returns one result per command.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from opencdp.models import Accepted, Workspace
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
from opencdp.store.group_commit import Committed
from opencdp.store.sqlite.append import BatchWriter, WireCall
from opencdp.store.sqlite.connection import connect
from opencdp.store.sqlite.dialect import SQLITE

log = logging.getLogger("opencdp.store")


class Transaction:
    """The writer connection and what a transaction on it collects for its answer.

    ``refusals`` (guardrail refusals) and ``positions`` (the new events' ``seq``
    ranges) belong to the transaction in progress; ``begin`` clears them.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.refusals: list[str] = []
        self.positions: list[tuple[int, int]] = []
        self.appends = BatchWriter(conn, self.refusals.append, self._stored_events)
        self._workspaces: dict[Workspace, int] = {}
        self._known: dict[Workspace, int] = {}

    def begin(self) -> None:
        self.refusals.clear()
        self.positions.clear()
        self._known = dict(self._workspaces)
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")
        self.appends.committed()

    def roll_back(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self._workspaces = self._known  # ids created by the rolled-back transaction are gone
        self.appends.rolled_back()

    def apply(self, commands: Sequence[Command[Any]], before_commit: Callable[[list[Any]], None]
              ) -> list[Any]:
        """Apply ``commands`` (one kind) in one transaction and commit; their results."""
        self.begin()
        try:
            results: list[Any] = applies.of(commands[0])(self, commands)
            before_commit(results)
            self.commit()
        except BaseException:
            self.roll_back()
            raise
        return results

    def workspace_id(self, workspace: Workspace) -> int:
        cached = self._workspaces.get(workspace)
        if cached is not None:
            return cached
        key = (workspace.client_id, workspace.account_id, workspace.brand_id)
        self.conn.execute(
            "INSERT OR IGNORE INTO workspaces (client_id, account_id, brand_id) VALUES (?, ?, ?)",
            key,
        )
        row = self.conn.execute(
            "SELECT id FROM workspaces WHERE client_id = ? AND account_id = ? AND brand_id = ?",
            key,
        ).fetchone()
        self._workspaces[workspace] = int(row[0])
        return int(row[0])

    def _stored_events(self, count: int) -> None:
        """``count`` events were just inserted: their ``seq`` are the last ones given."""
        last = int(self.conn.execute("SELECT last_insert_rowid()").fetchone()[0])
        self.positions.append((last - count + 1, last))


def run_once(path: str, command: Command[Any]) -> Committed:
    """Commit ``command`` alone on a connection of its own (a store that is not started)."""
    conn = connect(path)
    try:
        tx = Transaction(conn)
        results = tx.apply([command], lambda results: None)
        positions = tuple(range(first, last + 1) for first, last in tx.positions)
        return Committed(results, list(tx.refusals), positions)
    finally:
        conn.close()


Apply = Callable[[Transaction, Sequence[Any]], list[Any]]
#: The apply function of each kind of command.
applies: Appliers[Apply] = Appliers()


@applies(AppendCalls)
def append_calls(tx: Transaction, commands: Sequence[AppendCalls[WireCall]]) -> list[Any]:
    """Each workspace's calls of the whole group as one batch (a few statements)."""
    results: list[list[Accepted]] = [[] for _ in commands]
    sizes = [len(c.calls) for c in commands]
    requests = [(c.workspace, c.calls) for c in commands]
    for workspace, indexes, calls in by_workspace(requests):
        answers = tx.appends.write(tx.workspace_id(workspace), calls)
        split_answers(answers, indexes, sizes, results)
    return results


@applies(AddToken)
def add_token(tx: Transaction, commands: Sequence[AddToken]) -> list[Any]:
    for command in commands:
        token = command.record
        tx.conn.execute(
            "INSERT INTO tokens (token_id, secret_hash, client_id, accounts, brands, scopes,"
            " name, created_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token.token_id, token.secret_hash, token.client_id, _json_list(token.accounts),
                _json_list(token.brands), _json_list(token.scopes), token.name,
                token.created_time,
            ),
        )
    return [None for _ in commands]


@applies(RevokeToken)
def revoke_token(tx: Transaction, commands: Sequence[RevokeToken]) -> list[Any]:
    return [
        tx.conn.execute(
            "UPDATE tokens SET revoked_time = ? WHERE token_id = ? AND revoked_time IS NULL",
            (command.when, command.token_id),
        ).rowcount > 0
        for command in commands
    ]


@applies(IndexProperty)
def index_property(tx: Transaction, commands: Sequence[IndexProperty]) -> list[Any]:
    """Declare and build the index (every write waits: this holds the write lock)."""
    results = []
    for command in commands:
        added = tx.conn.execute(
            "INSERT OR IGNORE INTO property_indexes (path, created_time) VALUES (?, ?)",
            (command.path, time.time_ns() // 1_000_000),
        ).rowcount
        tx.conn.execute(SQLITE.property_index_sql(command.path))
        results.append(added > 0)
    return results


@applies(DropPropertyIndex)
def drop_property_index(tx: Transaction, commands: Sequence[DropPropertyIndex]) -> list[Any]:
    results = []
    for command in commands:
        removed = tx.conn.execute("DELETE FROM property_indexes WHERE path = ?", (command.path,))
        tx.conn.execute(f"DROP INDEX IF EXISTS {property_index(command.path)}")
        results.append(removed.rowcount > 0)
    return results


def _json_list(values: Sequence[str] | None) -> str | None:
    return None if values is None else msgspec.json.encode(list(values)).decode()
