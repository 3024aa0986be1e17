"""The single SQLite writer: a thread that commits queued calls in groups.

Requests put their calls on a queue and wait. The thread takes everything queued
(up to a bound), applies it in one transaction, commits (one fsync with
``synchronous=FULL``), and only then wakes the waiting requests. While it commits,
the next group gathers: that is the group commit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from opencdp.errors import Unavailable
from opencdp.models import Accepted, Call, Workspace
from opencdp.store.base import StoreObserver
from opencdp.store.batching import by_workspace, settle, split_answers
from opencdp.store.sqlite_batch import BatchWriter

log = logging.getLogger("opencdp.store")


@dataclass(slots=True)
class _Submission:
    workspace: Workspace
    calls: Sequence[Call]
    future: asyncio.Future[list[Accepted]]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class GroupCommitWriter:
    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        batch_max: int,
        queue_max: int,
        observer: StoreObserver,
        ack_before_commit: bool = False,
    ) -> None:
        self._conn = conn
        self._observer = observer
        self._ack_before_commit = ack_before_commit
        self._batch_max = batch_max
        self._queue_max = queue_max
        self._queue: queue.SimpleQueue[_Submission | object] = queue.SimpleQueue()
        self._queued = 0  # calls waiting; read without the lock, an estimate is enough
        self._lock = threading.Lock()
        self._workspaces: dict[Workspace, int] = {}
        self._batch = BatchWriter(conn, observer)
        self._thread = threading.Thread(target=self._run, name="opencdp-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write everything queued, then end the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    async def submit(self, workspace: Workspace, calls: Sequence[Call]) -> list[Accepted]:
        if self._queued + len(calls) > self._queue_max:
            raise Unavailable("the write queue is full; retry shortly", retry_after=1)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Accepted]] = loop.create_future()
        with self._lock:
            self._queued += len(calls)
        self._queue.put(_Submission(workspace, calls, future, loop))
        return await future

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            group, stopping = self._take_group()
            if group:
                self._commit_group(group)

    def _take_group(self) -> tuple[list[_Submission], bool]:
        item = self._queue.get()
        group: list[_Submission] = []
        size = 0
        while True:
            if item is _STOP:
                return group, True
            assert isinstance(item, _Submission)
            group.append(item)
            size += len(item.calls)
            if size >= self._batch_max:
                return group, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return group, False

    def _commit_group(self, group: list[_Submission]) -> None:
        try:
            results: list[list[Accepted] | BaseException] = list(self._write(group))
        except Exception:
            log.exception("group commit failed; retrying its requests one by one")
            results = [self._write_alone(s) for s in group]
        with self._lock:
            self._queued -= sum(len(s.calls) for s in group)
        self._observer.committed(*_counts(results))
        if not self._ack_before_commit:
            _deliver(group, results)

    def _write_alone(self, submission: _Submission) -> list[Accepted] | BaseException:
        try:
            return self._write([submission])[0]
        except Exception as exc:
            log.exception("write failed")
            return exc

    def _write(self, group: list[_Submission]) -> list[list[Accepted]]:
        known_workspaces = dict(self._workspaces)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            results: list[list[Accepted]] = [[] for _ in group]
            sizes = [len(s.calls) for s in group]
            for workspace, indexes, calls in by_workspace([(s.workspace, s.calls) for s in group]):
                answers = self._batch.write(self._workspace_id(workspace), calls)
                split_answers(answers, indexes, sizes, results)
            if self._ack_before_commit:
                _answer_too_early(group, results)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._workspaces = known_workspaces
            raise
        return results

    def _workspace_id(self, workspace: Workspace) -> int:
        cached = self._workspaces.get(workspace)
        if cached is not None:
            return cached
        key = (workspace.client_id, workspace.account_id, workspace.brand_id)
        self._conn.execute(
            "INSERT OR IGNORE INTO workspaces (client_id, account_id, brand_id) VALUES (?, ?, ?)",
            key,
        )
        row = self._conn.execute(
            "SELECT id FROM workspaces WHERE client_id = ? AND account_id = ? AND brand_id = ?",
            key,
        ).fetchone()
        self._workspaces[workspace] = int(row[0])
        return int(row[0])


def _counts(results: Sequence[list[Accepted] | BaseException]) -> tuple[int, int]:
    """(calls answered, how many of them were repeats) for the observer."""
    answered = [a for r in results if not isinstance(r, BaseException) for a in r]
    return len(answered), sum(1 for a in answered if a.duplicate)


def _answer_too_early(group: list[_Submission], results: list[list[Accepted]]) -> None:
    """The negative control of the crash harness: answer, then commit a moment later.

    Only ever enabled by the test-only setting ``unsafe_ack_before_commit``; it exists
    to prove that the harness notices lost events.
    """
    _deliver(group, results)
    time.sleep(0.05)


def _deliver(
    group: list[_Submission], results: Sequence[list[Accepted] | BaseException]
) -> None:
    """Wake the waiting requests: one hand-over per event loop, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[int]] = {}
    for index, submission in enumerate(group):
        by_loop.setdefault(submission.loop, []).append(index)
    for loop, indexes in by_loop.items():
        futures = [group[i].future for i in indexes]
        answers = [results[i] for i in indexes]
        try:
            loop.call_soon_threadsafe(settle, futures, answers)
        except RuntimeError:
            log.warning("event loop closed before its writes were answered")
