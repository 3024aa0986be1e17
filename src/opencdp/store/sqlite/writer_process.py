"""The SQLite writer process: it owns the one write connection and commits in groups.

``opencdp serve`` parses and checks requests on one core; this process applies the
identity and trait rules and runs the SQL on the other. Every write of the server
comes here as a command (``store.commands``): the server's group commit
(``sqlite.writer_client``) sends a whole group of them as one frame over a Unix socket
(``sqlite.protocol``); the process applies the group in one transaction
(``sqlite.apply``), commits (one fsync with ``synchronous=FULL``) and only then answers
with one frame. A request is answered 200 only after that answer arrives, so nothing
acknowledged is uncommitted. The process ends when the server closes its end of the
socket (on stop, or when the server dies): it never outlives the server by more than
the group it is committing.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import msgspec

from opencdp.logs import configure_logging
from opencdp.store.commands import AppendCalls
from opencdp.store.sqlite.apply import Transaction
from opencdp.store.sqlite.connection import connect
from opencdp.store.sqlite.protocol import BUSY, READY, Answer, Group, receive_frame, send_frame

log = logging.getLogger("opencdp.store")


class CommitEngine:
    """Commits each group it is given in one transaction, then answers.

    A group that fails is answered with why, and nothing of it stays: the server
    decides what to do next (commit its commands again one by one).
    """

    def __init__(self, conn: sqlite3.Connection, *, ack_before_commit: bool = False) -> None:
        self._transaction = Transaction(conn)
        self._ack_before_commit = ack_before_commit
        self._encode = msgspec.msgpack.Encoder().encode

    def commit(self, group: Group, answer: Callable[[Answer], None]) -> None:
        """Commit ``group``, then ``answer`` (before committing only for the negative control)."""
        answered = False

        def before_commit(results: list[Any]) -> None:
            nonlocal answered
            if self._ack_before_commit and isinstance(group.commands[0], AppendCalls):
                answered = True
                _answer_too_early(answer, self._answer(results))

        try:
            results = self._transaction.apply(group.commands, before_commit)
        except Exception as exc:
            busy = isinstance(exc, sqlite3.OperationalError) and _is_busy(exc)
            if busy:
                log.error("the database stayed locked by another connection; answering 503")
            else:
                log.exception("group commit failed")
            if not answered:  # an early answer was the only one (the negative control)
                answer(Answer(None, BUSY if busy else type(exc).__name__))
            return
        if not answered:
            answer(self._answer(results))

    def _answer(self, results: list[Any]) -> Answer:
        encode, tx = self._encode, self._transaction
        raw = [msgspec.Raw(encode(result)) for result in results]
        return Answer(raw, None, list(tx.refusals), list(tx.positions))


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

    send_frame(sock, encode(READY))
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
