"""The server's side of the SQLite writer: the event loop feeds the writer process.

Every write is a command (``store.commands``) handed to the store's group commit
(``store.group_commit``). Whenever fewer than two groups are with the writer process
(``sqlite.writer_process``), what is pending goes to it as one group over a Unix
socket (``sqlite.protocol``); the process answers each group after its commit, and the
answer wakes that group's requests. While the process commits one group the next is
already on its way and a third gathers: that is the group commit, kept busy. It all
runs on the event loop, so no thread stands between a request and its answer; the
identity rules and the SQL run in the process, on another core.

If the writer process dies, the requests of the groups it held get 503 (a retry with
the same ``messageId`` is safe: they may have been committed) and a new process starts.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec

from opencdp.errors import OpenCDPError, Unavailable
from opencdp.store.base import StoreObserver
from opencdp.store.commands import Command
from opencdp.store.group_commit import AnswerEarly, Committed, GroupCommit
from opencdp.store.sqlite.protocol import BUSY, LENGTH, Answer, Group, frame, wire_command

log = logging.getLogger("opencdp.store")
R = TypeVar("R")

#: How long to wait before starting a new writer process after one died.
RESTART_DELAY = 0.5
#: Groups sent to the process and not yet answered: one committing, one waiting its turn.
IN_FLIGHT = 2


class WriterProcess:
    """One ``python -m opencdp.store.sqlite.writer_process`` process and the stream to it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._process = process
        self._reader = reader
        self._writer = writer
        self._decode = msgspec.msgpack.Decoder(Answer).decode

    @classmethod
    async def start(cls, path: str, *, log_level: str, ack_before_commit: bool) -> WriterProcess:
        """Start the process and wait until its connection is open."""
        ours, theirs = socket.socketpair()
        command = [
            sys.executable, "-m", "opencdp.store.sqlite.writer_process", "--db", path,
            "--fd", str(theirs.fileno()), "--log-level", log_level,
        ]
        if ack_before_commit:
            command.append("--unsafe-ack-before-commit")
        try:
            process = subprocess.Popen(command, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        started = cls(process, reader, writer)
        if await started.receive() is None:  # the process says it is ready
            await started.close(timeout=5)
            raise RuntimeError(f"the SQLite writer process exited ({process.returncode})")
        return started

    @property
    def pid(self) -> int:
        return self._process.pid

    def send(self, group: bytes) -> None:
        """Send one encoded ``Group``."""
        self._writer.write(frame(group))

    async def receive(self) -> Answer | None:
        """The next answer; None once the process has closed its end (or died)."""
        try:
            head = await self._reader.readexactly(LENGTH.size)
            return self._decode(await self._reader.readexactly(LENGTH.unpack(head)[0]))
        except (asyncio.IncompleteReadError, ConnectionError, msgspec.DecodeError):
            return None

    async def close(self, timeout: float = 60) -> None:
        """Close the stream (the process finishes its commit and exits) and wait for it."""
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except ConnectionError:
            pass
        try:
            await asyncio.to_thread(self._process.wait, timeout)
        except subprocess.TimeoutExpired:
            log.error("the SQLite writer process did not stop; killing it")
            self._process.kill()
            await asyncio.to_thread(self._process.wait)


class WriterClient:
    """The store's group commit, committing through a writer process it keeps running."""

    def __init__(
        self,
        path: str,
        *,
        batch_max: int,
        queue_max: int,
        observers: Sequence[StoreObserver] = (),
        ack_before_commit: bool = False,
    ) -> None:
        self._path = path
        self._ack_before_commit = ack_before_commit
        self.queue = GroupCommit(
            self, batch_max=batch_max, queue_max=queue_max, observers=observers,
            in_flight=IN_FLIGHT,
        )
        self._in_flight: deque[tuple[list[Command[Any]], asyncio.Future[Committed]]] = deque()
        self._process: WriterProcess | None = None
        self._answers: asyncio.Task[None] | None = None
        self._closing = False
        self._encode = msgspec.msgpack.Encoder().encode

    async def start(self) -> None:
        """Start the writer process (returns once it is ready) and the answer reader."""
        self.queue.start()
        self._process = await self._new_process()
        self._answers = asyncio.create_task(self._read_answers(), name="opencdp-writer")

    async def stop(self) -> None:
        """Write everything pending, then end the process."""
        await self.queue.drain()
        self._closing = True
        if self._process is not None:
            await self._process.close()
        if self._answers is not None:
            await self._answers

    async def submit(self, command: Command[R]) -> R:
        return await self.queue.submit(command)

    @property
    def process_id(self) -> int | None:
        """The writer process's pid (None between a crash and its restart)."""
        return None if self._process is None else self._process.pid

    # -- Committer ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._process is not None

    def commit(
        self, commands: list[Command[Any]], answer_early: AnswerEarly
    ) -> asyncio.Future[Committed]:
        """Send the group; the process answers early itself in the negative control."""
        assert self._process is not None
        future: asyncio.Future[Committed] = asyncio.get_running_loop().create_future()
        self._in_flight.append((commands, future))
        group = Group([wire_command(command) for command in commands])
        self._process.send(self._encode(group))
        return future

    # -- answers -----------------------------------------------------------------------

    async def _read_answers(self) -> None:
        while self._process is not None:
            answer = await self._process.receive()
            if answer is None:
                if self._closing:
                    return
                await self._replace_process()
                continue
            commands, future = self._in_flight.popleft()
            _settle(future, commands, answer)

    async def _replace_process(self) -> None:
        """The process died: answer its groups 503, then start a new one (and go on)."""
        log.error("the SQLite writer process died; its requests are answered 503")
        restarted = Unavailable("the store's writer restarted; retry shortly", retry_after=1)
        while self._in_flight:
            self._in_flight.popleft()[1].set_exception(restarted)
        dead, self._process = self._process, None
        if dead is not None:
            await dead.close(timeout=5)
        while self._process is None:
            await asyncio.sleep(RESTART_DELAY)
            if self._closing:
                return
            try:
                self._process = await self._new_process()
            except Exception:
                log.exception("the SQLite writer process could not start")
                self.queue.fail_pending(restarted)  # nobody waits for one that may not come
        self.queue.resume()

    async def _new_process(self) -> WriterProcess:
        level = logging.getLevelName(logging.getLogger("opencdp").getEffectiveLevel())
        return await WriterProcess.start(
            self._path, log_level=level, ack_before_commit=self._ack_before_commit
        )


def _settle(
    future: asyncio.Future[Committed], commands: list[Command[Any]], answer: Answer
) -> None:
    if answer.results is None:
        future.set_exception(_error(answer.error))
        return
    results = [_decoder(c).decode(r) for c, r in zip(commands, answer.results, strict=True)]
    positions = tuple(range(first, last + 1) for first, last in answer.positions)
    future.set_result(Committed(results, answer.refusals, positions))


_DECODERS: dict[type[Command[Any]], msgspec.msgpack.Decoder[Any]] = {}


def _decoder(command: Command[Any]) -> msgspec.msgpack.Decoder[Any]:
    """The decoder of ``command``'s result (one per kind, made once)."""
    kind = type(command)
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.msgpack.Decoder(kind.result_type)
    return decoder


def _error(reason: str | None) -> OpenCDPError:
    if reason == BUSY:
        return Unavailable("the database is busy (an index being built?); retry shortly")
    return OpenCDPError("internal error")
