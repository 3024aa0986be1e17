"""The server's side of the SQLite writer: the event loop feeds the writer process.

Requests add their calls to a pending list and wait. Whenever fewer than two groups
are with the writer process (``sqlite.writer_process``), everything pending (up to a bound)
goes to it as one group over a Unix socket; the process answers each group after its
commit, and the answer wakes that group's requests. While the process commits one
group the next is already on its way and a third gathers: that is the group commit,
kept busy. It all runs on the event loop, so no thread stands between a request and
its answer. The identity rules and the SQL run in the process, on another core.

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
from dataclasses import dataclass

import msgspec

from opencdp.errors import OpenCDPError, Unavailable
from opencdp.models import Accepted, Call, Workspace
from opencdp.store.base import StoreObserver
from opencdp.store.batching import commit_counts, settle
from opencdp.store.sqlite.append import WireCall
from opencdp.store.sqlite.writer_process import BUSY, LENGTH, Answer, Group, Submission, frame

log = logging.getLogger("opencdp.store")

#: How long to wait before starting a new writer process after one died.
RESTART_DELAY = 0.5
#: Groups sent to the process and not yet answered: one committing, one waiting its turn.
IN_FLIGHT = 2


@dataclass(slots=True)
class _Waiting:
    submission: Submission
    future: asyncio.Future[list[Accepted]]


Batch = list[_Waiting]


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
        self._encode = msgspec.msgpack.Encoder().encode
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

    def send(self, group: Group) -> None:
        self._writer.write(frame(self._encode(group)))

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


class GroupCommitWriter:
    def __init__(
        self,
        path: str,
        *,
        batch_max: int,
        queue_max: int,
        observer: StoreObserver,
        ack_before_commit: bool = False,
    ) -> None:
        self._path = path
        self._observer = observer
        self._ack_before_commit = ack_before_commit
        self._batch_max = batch_max
        self._queue_max = queue_max
        self._pending: deque[_Waiting] = deque()
        self._in_flight: deque[Batch] = deque()
        self._queued = 0  # calls pending or in flight
        self._drained = asyncio.Event()
        self._drained.set()
        self._process: WriterProcess | None = None
        self._answers: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    async def start(self) -> None:
        """Start the writer process (returns once it is ready) and the answer reader."""
        self._loop = asyncio.get_running_loop()
        self._process = await self._new_process()
        self._answers = asyncio.create_task(self._read_answers(), name="opencdp-writer")

    async def stop(self) -> None:
        """Write everything pending, then end the process."""
        await self._drained.wait()
        self._closing = True
        if self._process is not None:
            await self._process.close()
        if self._answers is not None:
            await self._answers

    @property
    def process_id(self) -> int | None:
        """The writer process's pid (None between a crash and its restart)."""
        return None if self._process is None else self._process.pid

    async def submit(self, workspace: Workspace, calls: Sequence[Call]) -> list[Accepted]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise RuntimeError("the SQLite store writes from the event loop that started it")
        if self._queued + len(calls) > self._queue_max:
            raise Unavailable("the write queue is full; retry shortly", retry_after=1)
        future: asyncio.Future[list[Accepted]] = loop.create_future()
        submission = Submission(workspace, [WireCall.of(call) for call in calls])
        self._pending.append(_Waiting(submission, future))
        self._queued += len(calls)
        self._drained.clear()
        self._send_pending()
        return await future

    def _send_pending(self) -> None:
        """Send what is pending as one group, unless two groups are already with the process."""
        while self._pending and self._process is not None and len(self._in_flight) < IN_FLIGHT:
            batch = self._take_batch()
            self._in_flight.append(batch)
            self._process.send(Group([w.submission for w in batch]))

    def _take_batch(self) -> Batch:
        batch: Batch = []
        size = 0
        while self._pending and size < self._batch_max:
            waiting = self._pending.popleft()
            batch.append(waiting)
            size += len(waiting.submission.calls)
        return batch

    async def _read_answers(self) -> None:
        while self._process is not None:
            answer = await self._process.receive()
            if answer is None:
                if self._closing:
                    return
                await self._replace_process()
                continue
            self._answered(self._in_flight.popleft(), answer)
            self._send_pending()

    def _answered(self, batch: Batch, answer: Answer | None) -> None:
        self._queued -= sum(len(w.submission.calls) for w in batch)
        results = _results(answer, len(batch))
        if answer is not None:
            for reason in answer.refusals:
                self._observer.refused(reason)
            self._observer.committed(*commit_counts(results))
        settle([w.future for w in batch], results)
        if not self._pending and not self._in_flight:
            self._drained.set()

    async def _replace_process(self) -> None:
        """The process died: answer its groups 503, then start a new one (and retry)."""
        log.error("the SQLite writer process died; its requests are answered 503")
        while self._in_flight:
            self._answered(self._in_flight.popleft(), None)
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
                while self._pending:  # nobody waits for a writer that may not come back
                    self._answered([self._pending.popleft()], None)
        self._send_pending()

    async def _new_process(self) -> WriterProcess:
        level = logging.getLevelName(logging.getLogger("opencdp").getEffectiveLevel())
        return await WriterProcess.start(
            self._path, log_level=level, ack_before_commit=self._ack_before_commit
        )


def _results(answer: Answer | None, size: int) -> list[list[Accepted] | BaseException]:
    """Each request's answer: its ``Accepted`` list, or the error to raise in it."""
    if answer is None:
        message = "the store's writer restarted; retry shortly"
        return [Unavailable(message, retry_after=1) for _ in range(size)]
    return [o.accepted if o.accepted is not None else _error(o.error) for o in answer.outcomes]


def _error(reason: str | None) -> OpenCDPError:
    if reason == BUSY:
        return Unavailable("the database is busy (an index being built?); retry shortly")
    return OpenCDPError("internal error")
