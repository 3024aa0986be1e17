"""The SQLite writer process: it owns the one write connection and commits in groups.

``opencdp serve`` parses and checks requests on one core; this process applies the
identity and trait rules and runs the SQL on the other. The server's ``GroupCommitWriter``
(``sqlite.writer_client``) sends it a whole group of requests' calls as one frame over a Unix
socket; it applies the group in one transaction, commits (one fsync with
``synchronous=FULL``) and only then answers with one frame. A request is answered 200
only after that answer arrives, so nothing acknowledged is uncommitted.

Frames are a 4-byte big-endian length and a msgpack body (``Group``, ``Answer``). The
process ends when the server closes its end of the socket (on stop, or when the
server dies): it never outlives the server by more than the group it is committing.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sqlite3
import struct
import time
from collections.abc import Callable, Sequence

import msgspec

from opencdp.logs import configure_logging
from opencdp.models import Accepted, Workspace
from opencdp.store.base import StoreObserver
from opencdp.store.batching import by_workspace, split_answers
from opencdp.store.sqlite.append import BatchWriter, WireCall
from opencdp.store.sqlite.connection import connect

log = logging.getLogger("opencdp.store")

LENGTH = struct.Struct(">I")


class Submission(msgspec.Struct, array_like=True):
    """One request's calls."""

    workspace: Workspace
    calls: list[WireCall]


class Group(msgspec.Struct, array_like=True):
    """What the server sends: the requests to commit together."""

    submissions: list[Submission]


class Outcome(msgspec.Struct, array_like=True):
    """One request's answer: its calls' ``Accepted``, or why the write failed."""

    accepted: list[Accepted] | None = None
    error: str | None = None


#: ``Outcome.error`` when another connection held the write lock past the busy timeout
#: (an index being built, a long ``opencdp`` command): worth a retry, unlike other errors.
BUSY = "busy"


class Answer(msgspec.Struct, array_like=True):
    """What the process sends back, once the group is committed (or has failed)."""

    outcomes: list[Outcome]
    refusals: list[str]  # guardrail refusals, for the server's metrics


# -- frames ----------------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    """``payload`` as one frame: its length, then itself."""
    return LENGTH.pack(len(payload)) + payload


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(frame(payload))


def receive_frame(sock: socket.socket) -> bytes | None:
    """The next frame's body, or None when the other end has closed the socket."""
    head = _receive_exactly(sock, LENGTH.size)
    if head is None:
        return None
    body = _receive_exactly(sock, LENGTH.unpack(head)[0])
    if body is None:
        raise ConnectionError("the socket closed in the middle of a frame")
    return body


def _receive_exactly(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            if got == 0:
                return None
            raise ConnectionError("the socket closed in the middle of a frame")
        got += n
    return bytes(buffer)


# -- committing ------------------------------------------------------------------------


class _Refusals(StoreObserver):
    """Collects the guardrail refusals of a group, to send them with its answer."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def refused(self, reason: str) -> None:
        self.reasons.append(reason)


class CommitEngine:
    """Applies groups of requests on the write connection, one transaction per group.

    If a group fails as a whole, its requests are retried one by one, so one bad
    request cannot fail the others committed with it.
    """

    def __init__(self, conn: sqlite3.Connection, *, ack_before_commit: bool = False) -> None:
        self._conn = conn
        self._ack_before_commit = ack_before_commit
        self._refusals = _Refusals()
        self._batch = BatchWriter(conn, self._refusals)
        self._workspaces: dict[Workspace, int] = {}

    def commit(self, group: Group, answer: Callable[[Answer], None]) -> None:
        """Commit ``group``, then ``answer`` (before committing only for the negative control)."""
        answered = False

        def before_commit(outcomes: list[Outcome]) -> None:
            nonlocal answered
            if self._ack_before_commit and not answered:
                answered = True
                _answer_too_early(answer, self._answer(outcomes))

        submissions = group.submissions
        try:
            outcomes = self._write(submissions, before_commit)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            log.error("the database stayed locked by another connection; answering 503")
            outcomes = [Outcome(error=BUSY) for _ in submissions]
        except Exception:
            log.exception("group commit failed; retrying its requests one by one")
            outcomes = [self._write_alone(s, before_commit) for s in submissions]
        if not answered:
            answer(self._answer(outcomes))

    def _answer(self, outcomes: list[Outcome]) -> Answer:
        reasons, self._refusals.reasons = self._refusals.reasons, []
        return Answer(outcomes, reasons)

    def _write_alone(
        self, submission: Submission, before_commit: Callable[[list[Outcome]], None]
    ) -> Outcome:
        try:
            return self._write([submission], before_commit)[0]
        except Exception as exc:
            log.exception("write failed")
            return Outcome(error=type(exc).__name__)

    def _write(
        self, submissions: Sequence[Submission], before_commit: Callable[[list[Outcome]], None]
    ) -> list[Outcome]:
        known_workspaces = dict(self._workspaces)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            results: list[list[Accepted]] = [[] for _ in submissions]
            sizes = [len(s.calls) for s in submissions]
            requests = [(s.workspace, s.calls) for s in submissions]
            for workspace, indexes, calls in by_workspace(requests):
                answers = self._batch.write(self._workspace_id(workspace), calls)
                split_answers(answers, indexes, sizes, results)
            outcomes = [Outcome(accepted) for accepted in results]
            before_commit(outcomes)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._workspaces = known_workspaces
            self._refusals.reasons.clear()
            self._batch.rolled_back()
            raise
        self._batch.committed()
        return outcomes

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


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _answer_too_early(answer: Callable[[Answer], None], early: Answer) -> None:
    """The negative control of the crash harness: answer, then commit a moment later.

    Only ever enabled by the test-only setting ``unsafe_ack_before_commit``; it exists
    to prove that the harness notices lost events.
    """
    answer(early)
    time.sleep(0.05)


# -- the process -----------------------------------------------------------------------


def serve(sock: socket.socket, engine: CommitEngine) -> None:
    """Commit each group the server sends until it closes the socket."""
    decode = msgspec.msgpack.Decoder(Group).decode
    encode = msgspec.msgpack.Encoder().encode

    def answer(reply: Answer) -> None:
        send_frame(sock, encode(reply))

    send_frame(sock, encode(Answer([], [])))  # ready: the connection is open
    while (frame := receive_frame(sock)) is not None:
        engine.commit(decode(frame), answer)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="opencdp-sqlite-writer")
    parser.add_argument("--db", required=True, help="the SQLite file")
    parser.add_argument("--fd", type=int, required=True, help="the socket to the server")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--unsafe-ack-before-commit", action="store_true")
    args = parser.parse_args(argv)
    # The server decides when this process ends (by closing the socket): Ctrl-C in a
    # terminal or SIGTERM to the whole group must not cut a commit short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(args.log_level)

    sock = socket.socket(fileno=args.fd)
    conn = connect(args.db)
    try:
        serve(sock, CommitEngine(conn, ack_before_commit=args.unsafe_ack_before_commit))
    except (BrokenPipeError, ConnectionError):
        pass  # the server is gone; whatever was committed stays committed
    finally:
        conn.close()
        sock.close()


if __name__ == "__main__":
    main()
