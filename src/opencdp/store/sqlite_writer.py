"""The server's side of the SQLite writer: a queue, and threads that feed the writer process.

Requests put their calls on a queue and wait. A thread takes everything queued (up to
a bound) and sends it as one group to the writer process (``sqlite_commit``); another
reads the process's answers (each sent after its group's commit) and wakes the waiting
requests. While the process commits a group, the next one is already on its way and a
third gathers in the queue: that is the group commit, kept busy. The identity rules
and the SQL run in that process, on another core than the one serving HTTP.

If the writer process dies, the requests of the groups it held get 503 (a retry with
the same ``messageId`` is safe: they may have been committed) and a new process starts.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from opencdp.errors import OpenCDPError, Unavailable
from opencdp.models import Accepted, Call, Workspace
from opencdp.store.base import StoreObserver
from opencdp.store.batching import settle
from opencdp.store.sqlite_batch import WireCall
from opencdp.store.sqlite_commit import Answer, Group, Submission, receive_frame, send_frame

log = logging.getLogger("opencdp.store")

#: How long to wait before starting a new writer process after one died.
RESTART_DELAY = 0.5
#: Groups sent to the process and not yet answered: one committing, one waiting its turn.
IN_FLIGHT = 2


@dataclass(slots=True)
class _Waiting:
    submission: Submission
    future: asyncio.Future[list[Accepted]]
    loop: asyncio.AbstractEventLoop


_STOP = object()
Batch = list[_Waiting]


class WriterProcess:
    """One ``python -m opencdp.store.sqlite_commit`` process, the socket to it, and the
    thread that reads its answers and hands each to ``answered`` with its group."""

    def __init__(
        self,
        path: str,
        answered: Callable[[Batch, Answer | None], None],
        *,
        log_level: str,
        ack_before_commit: bool,
    ) -> None:
        ours, theirs = socket.socketpair()
        command = [
            sys.executable, "-m", "opencdp.store.sqlite_commit", "--db", path,
            "--fd", str(theirs.fileno()), "--log-level", log_level,
        ]
        if ack_before_commit:
            command.append("--unsafe-ack-before-commit")
        try:
            self._process = subprocess.Popen(command, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        self._sock = ours
        self._answered = answered
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(Answer).decode
        self._lock = threading.Lock()
        self._in_flight: deque[Batch] = deque()
        self._slots = threading.Semaphore(IN_FLIGHT)
        self.alive = True
        if self._receive() is None:  # the process says it is ready
            raise RuntimeError(f"the SQLite writer process exited ({self._process.wait()})")
        self._reader = threading.Thread(
            target=self._read, name="opencdp-writer-answers", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def send(self, batch: Batch) -> bool:
        """Send ``batch`` as one group; False if the process is gone (nothing was sent)."""
        self._slots.acquire()
        with self._lock:
            if not self.alive:
                self._slots.release()
                return False
            self._in_flight.append(batch)
        try:
            send_frame(self._sock, self._encode(Group([w.submission for w in batch])))
        except OSError:
            pass  # the reader sees the socket close and answers the batch
        return True

    def _read(self) -> None:
        while True:
            try:
                answer = self._receive()
            except (OSError, msgspec.DecodeError):
                answer = None
            if answer is None:
                break
            with self._lock:
                batch = self._in_flight.popleft()
            self._answered(batch, answer)
            self._slots.release()
        with self._lock:
            self.alive = False
            lost = list(self._in_flight)
            self._in_flight.clear()
        for batch in lost:
            self._answered(batch, None)
            self._slots.release()

    def _receive(self) -> Answer | None:
        frame = receive_frame(self._sock)
        return None if frame is None else self._decode(frame)

    def close(self, timeout: float = 60) -> None:
        """Wait for the answers in flight, then end the process (it finishes its commit)."""
        for _ in range(IN_FLIGHT):
            self._slots.acquire()
        try:
            self._sock.shutdown(socket.SHUT_WR)  # the process sees the end and exits
        except OSError:
            pass  # it is gone already
        self._reader.join()
        self._sock.close()
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.error("the SQLite writer process did not stop; killing it")
            self._process.kill()
            self._process.wait()


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
        self._queue: queue.SimpleQueue[_Waiting | object] = queue.SimpleQueue()
        self._queued = 0  # calls waiting; read without the lock, an estimate is enough
        self._lock = threading.Lock()
        self._process: WriterProcess | None = None
        self._thread = threading.Thread(target=self._run, name="opencdp-writer", daemon=True)

    def start(self) -> None:
        """Start the writer process (blocks until it is ready) and the feeding thread."""
        self._process = self._new_process()
        self._thread.start()

    def stop(self) -> None:
        """Write everything queued, then end the thread and the process."""
        self._queue.put(_STOP)
        self._thread.join()

    @property
    def process_id(self) -> int | None:
        """The writer process's pid (None between a crash and its restart)."""
        process = self._process
        return None if process is None or not process.alive else process.pid

    async def submit(self, workspace: Workspace, calls: Sequence[Call]) -> list[Accepted]:
        if self._queued + len(calls) > self._queue_max:
            raise Unavailable("the write queue is full; retry shortly", retry_after=1)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Accepted]] = loop.create_future()
        with self._lock:
            self._queued += len(calls)
        submission = Submission(workspace, [WireCall.of(call) for call in calls])
        self._queue.put(_Waiting(submission, future, loop))
        return await future

    # -- the feeding thread ------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._take_batch()
            if batch:
                self._send(batch)
        if self._process is not None:
            self._process.close()
            self._process = None

    def _take_batch(self) -> tuple[Batch, bool]:
        item = self._queue.get()
        batch: Batch = []
        size = 0
        while True:
            if item is _STOP:
                return batch, True
            assert isinstance(item, _Waiting)
            batch.append(item)
            size += len(item.submission.calls)
            if size >= self._batch_max:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _send(self, batch: Batch) -> None:
        """Hand ``batch`` to the writer process, starting a new one if the last one died."""
        process = self._process
        if process is not None and process.send(batch):
            return
        if process is not None:
            log.error("the SQLite writer process died; starting a new one")
            process.close(timeout=5)
        self._process = process = self._restart()
        if process is None or not process.send(batch):
            self._answered(batch, None)

    def _answered(self, batch: Batch, answer: Answer | None) -> None:
        """On the answer-reading thread: count, and wake the batch's requests."""
        with self._lock:
            self._queued -= sum(len(w.submission.calls) for w in batch)
        results = _results(answer, len(batch))
        if answer is not None:
            for reason in answer.refusals:
                self._observer.refused(reason)
            self._observer.committed(*_counts(results))
        _deliver(batch, results)

    def _new_process(self) -> WriterProcess:
        level = logging.getLevelName(logging.getLogger("opencdp").getEffectiveLevel())
        return WriterProcess(
            self._path, self._answered, log_level=level, ack_before_commit=self._ack_before_commit
        )

    def _restart(self) -> WriterProcess | None:
        time.sleep(RESTART_DELAY)
        try:
            return self._new_process()
        except Exception:
            log.exception("the SQLite writer process could not start")
            return None


def _results(answer: Answer | None, size: int) -> list[list[Accepted] | BaseException]:
    """Each request's answer: its ``Accepted`` list, or the error to raise in it."""
    if answer is None:
        message = "the store's writer restarted; retry shortly"
        return [Unavailable(message, retry_after=1) for _ in range(size)]
    return [
        OpenCDPError("internal error") if o.accepted is None else o.accepted
        for o in answer.outcomes
    ]


def _counts(results: Sequence[list[Accepted] | BaseException]) -> tuple[int, int]:
    """(calls answered, how many of them were repeats) for the observer."""
    answered = [a for r in results if not isinstance(r, BaseException) for a in r]
    return len(answered), sum(1 for a in answered if a.duplicate)


def _deliver(group: Batch, results: Sequence[list[Accepted] | BaseException]) -> None:
    """Wake the waiting requests: one hand-over per event loop, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[int]] = {}
    for index, waiting in enumerate(group):
        by_loop.setdefault(waiting.loop, []).append(index)
    for loop, indexes in by_loop.items():
        futures = [group[i].future for i in indexes]
        answers = [results[i] for i in indexes]
        try:
            loop.call_soon_threadsafe(settle, futures, answers)
        except RuntimeError:
            log.warning("event loop closed before its writes were answered")
