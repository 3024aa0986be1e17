"""Group commit, for every back-end: many requests' writes, one transaction.

Requests hand their command to ``GroupCommit.submit`` and wait. Whenever the back-end
can take another group (``in_flight`` of them at once), what is pending goes to it as
one group, once the requests ready to run on the loop have queued theirs: consecutive
``AppendCalls`` up to ``batch_max`` calls, any other command alone, in arrival order.
The back-end commits the group in one transaction and only then reports its results;
the observers are told of the commit, and each waiting request gets its own result
(a request that gave up is skipped). If a group fails as a whole, its commands are
committed again one by one, so one bad request cannot fail the others; the failure
of a command alone is its answer, and ``Unavailable`` (the database busy, the writer
restarting) answers the whole group at once, since trying again at once would not
help. The queue is bounded (``queue_max`` calls): past it a write is refused with 503
rather than waiting without limit. ``drain`` waits for everything queued.

Everything here runs on the event loop; a back-end supplies only how one group
commits (``Committer``): PostgreSQL in one transaction on a pool connection, SQLite
as one frame to its writer process.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar, cast

from opencdp.errors import Unavailable
from opencdp.models import Accepted
from opencdp.store.base import Commit, StoreObserver
from opencdp.store.commands import AppendCalls, Command

log = logging.getLogger("opencdp.store")
R = TypeVar("R")

#: Answers a group's requests at once, before its commit (the crash harness's negative
#: control only): one result per command.
AnswerEarly = Callable[[Sequence[Any]], None]


@dataclass(slots=True)
class Committed:
    """A back-end's report of a committed group: one result per command, in order."""

    results: list[Any]
    refusals: list[str] = field(default_factory=list)
    positions: tuple[range, ...] | None = None


class Committer(Protocol):
    """How one back-end commits a group (on the event loop's side)."""

    @property
    def ready(self) -> bool:
        """Whether a group can be handed over now (SQLite: a writer process is up)."""

    def commit(
        self, commands: list[Command[Any]], answer_early: AnswerEarly
    ) -> asyncio.Future[Committed]:
        """Start committing ``commands`` in one transaction; the future has its results,
        or the error that failed the whole transaction."""


@dataclass(slots=True)
class _Waiting:
    command: Command[Any]
    future: asyncio.Future[Any]
    alone: bool = False  # a retry of a failed group: its own failure is its answer


class GroupCommit:
    """The bounded write queue of one store and the groups it commits."""

    def __init__(
        self,
        committer: Committer,
        *,
        batch_max: int,
        queue_max: int,
        observers: Sequence[StoreObserver] = (),
        in_flight: int = 1,
    ) -> None:
        self._committer = committer
        self._batch_max = batch_max
        self._queue_max = queue_max
        self._observers = tuple(observers)
        self._in_flight = in_flight
        self._pending: deque[_Waiting] = deque()
        self._busy = 0  # groups with the back-end
        self._queued = 0  # weight of the commands pending or being committed
        self._drained = asyncio.Event()
        self._drained.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resuming = False  # a call to ``resume`` is scheduled

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed and answered."""
        await self._drained.wait()

    async def submit(self, command: Command[R]) -> R:
        """Commit ``command`` with whatever else is pending; its result once committed."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise RuntimeError("the store writes from the event loop that started it")
        if isinstance(command, AppendCalls) and not command.calls:
            return cast(R, [])
        weight = command.weight
        if self._queued + weight > self._queue_max:
            raise Unavailable("the write queue is full; retry shortly", retry_after=1)
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append(_Waiting(command, future))
        self._queued += weight
        self._drained.clear()
        if not self._resuming:  # once the requests ready to run now have queued theirs
            self._resuming = True
            loop.call_soon(self.resume)
        return await future

    def resume(self) -> None:
        """Hand pending groups to the back-end while it can take them."""
        self._resuming = False
        committer = self._committer
        while self._pending and self._busy < self._in_flight and committer.ready:
            group = self._take_group()
            self._busy += 1
            commands = [w.command for w in group]
            committing = committer.commit(commands, partial(_settle, group))
            committing.add_done_callback(partial(self._committed, group))

    def fail_pending(self, error: Exception) -> None:
        """Answer every pending request with ``error`` (the back-end cannot come back)."""
        while self._pending:
            self._answer([self._pending.popleft()], [error])

    def _take_group(self) -> list[_Waiting]:
        first = self._pending.popleft()
        group = [first]
        if first.alone or not isinstance(first.command, AppendCalls):
            return group
        size = first.command.weight
        pending = self._pending
        while pending and size < self._batch_max:
            following = pending[0]
            if following.alone or not isinstance(following.command, AppendCalls):
                break
            group.append(pending.popleft())
            size += following.command.weight
        return group

    def _committed(self, group: list[_Waiting], done: asyncio.Future[Committed]) -> None:
        self._busy -= 1
        if done.cancelled():
            error: BaseException | None = Unavailable("the store stopped; retry shortly")
        else:
            error = done.exception()
        if error is None:
            committed = done.result()
            self._tell(group, committed)
            self._answer(group, committed.results)
        elif isinstance(error, Unavailable) or len(group) == 1:
            if not isinstance(error, Unavailable):
                log.error("write failed", exc_info=error)
            self._answer(group, [error] * len(group))
        else:
            log.error("group commit failed; retrying its requests one by one", exc_info=error)
            self._pending.extendleft(_Waiting(w.command, w.future, True) for w in reversed(group))
        self.resume()

    def _answer(self, group: list[_Waiting], results: Sequence[Any]) -> None:
        self._queued -= sum(w.command.weight for w in group)
        _settle(group, results)
        if not self._pending and not self._busy:
            self._drained.set()

    def _tell(self, group: list[_Waiting], committed: Committed) -> None:
        if self._observers:
            tell(self._observers, describe([w.command for w in group], committed))


def describe(commands: list[Command[Any]], committed: Committed) -> Commit:
    """The ``Commit`` observers are told of, for ``commands`` as committed."""
    calls = duplicates = 0
    workspaces = set()
    for command, result in zip(commands, committed.results, strict=True):
        if isinstance(command, AppendCalls):
            workspaces.add(command.workspace)
            answers = cast(list[Accepted], result)
            calls += len(answers)
            duplicates += sum(1 for a in answers if a.duplicate)
    return Commit(
        commands=tuple(commands),
        workspaces=frozenset(workspaces),
        calls=calls,
        duplicates=duplicates,
        refusals=tuple(committed.refusals),
        positions=committed.positions,
    )


def tell(observers: Sequence[StoreObserver], commit: Commit) -> None:
    """Tell each observer of ``commit``; one that raises is logged, not propagated."""
    for observer in observers:
        try:
            observer.committed(commit)
        except Exception:
            log.exception("a store observer failed (the commit stands)")


def _settle(group: list[_Waiting], results: Sequence[Any]) -> None:
    """Answer the waiting requests (skipping any that gave up or were answered early)."""
    for waiting, result in zip(group, results, strict=True):
        future = waiting.future
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
