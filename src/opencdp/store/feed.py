"""The change feed's long poll: readers waiting for a workspace's next commit, and waking them.

A feed read (``read_plan.ReadFeed``) that finds nothing new may wait (``wait``
seconds): ``follow`` reads again as soon as this process hears of a commit to the
workspace, and answers empty when the wait ends. A waiting reader holds no database
connection and no read lane: it waits on an ``asyncio.Event``, and each read takes
its connection afresh.

Who wakes them:
- in this process, the store's observer (``Waiters.committed``), right after a
  commit and before its writers are answered;
- another process's commits, through a *watch* the store runs while anyone waits:
  PostgreSQL's ``LISTEN`` (a notification sent in the writing transaction, delivered
  at commit) with a poll every ``POLL_EVERY`` seconds while the listener is down;
  SQLite's ``PRAGMA data_version``, asked every ``POLL_EVERY`` seconds (cheap: no
  table is read), which changes when any other connection commits.

A read compares the workspace's wake-up count taken before it with the count after,
so a commit landing while a read runs is never slept through. Waiters are bounded
(``MAX_WAITERS`` per process; past it 503), and they all end at once, answering
empty, when the server shuts down (``end_all_waits``) or the store stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

from opencdp.errors import Unavailable
from opencdp.models import FeedPage, FeedQuery, Workspace

log = logging.getLogger("opencdp.store")

#: The longest a feed read may wait (SPEC §5: ``wait`` 0–30 s).
MAX_WAIT = 30.0
#: Readers one process holds waiting at once.
MAX_WAITERS = 1000
#: How often another process's commits are looked for while someone waits and no
#: notification can tell (well within the second SPEC §5 allows).
POLL_EVERY = 0.25

#: Every process-wide set of waiters, so that a server shutting down ends their waits.
_ALL: weakref.WeakSet[Waiters] = weakref.WeakSet()


class _Commit(Protocol):
    """What a ``store.base.Commit`` tells the waiters."""

    @property
    def workspaces(self) -> frozenset[Workspace]: ...

    @property
    def events(self) -> int: ...


#: Runs while anyone waits, calling ``wake`` (a workspace, or None for all) when
#: another process may have committed; cancelled when nobody waits any more.
Watch = Callable[[Callable[[Workspace | None], None]], Awaitable[None]]


class Waiters:
    """The feed readers of one store waiting for commits, by workspace."""

    def __init__(self, watch: Watch | None = None, *, limit: int = MAX_WAITERS) -> None:
        self._watch = watch
        self._limit = limit
        self._versions: dict[Workspace, int] = {}
        self._events: dict[Workspace, asyncio.Event] = {}
        self._waiting = 0
        self._watcher: asyncio.Task[None] | None = None
        self.closed = False
        _ALL.add(self)

    # -- told of commits -------------------------------------------------------------

    def committed(self, commit: _Commit) -> None:
        """A store observer: wake the readers of the workspaces that got new events."""
        if commit.events:
            for workspace in commit.workspaces:
                self.wake(workspace)

    def wake(self, workspace: Workspace | None) -> None:
        """Wake ``workspace``'s readers (None: every reader)."""
        if workspace is None:
            for known in list(self._events):
                self.wake(known)
            return
        self._versions[workspace] = self._versions.get(workspace, 0) + 1
        event = self._events.pop(workspace, None)
        if event is not None:
            event.set()

    # -- waiting ---------------------------------------------------------------------

    def waited(self) -> list[Workspace]:
        """The workspaces whose readers wait now."""
        return list(self._events)

    def version(self, workspace: Workspace) -> int:
        """The workspace's wake-up count, to take before a read."""
        return self._versions.setdefault(workspace, 0)

    async def wait(self, workspace: Workspace, version: int, timeout: float) -> None:
        """Until the workspace is woken after ``version`` was taken, or ``timeout``."""
        if self.closed or self._versions.get(workspace, 0) != version or timeout <= 0:
            return
        if self._waiting >= self._limit:
            raise Unavailable("too many feed readers are waiting; retry shortly", retry_after=1)
        event = self._events.setdefault(workspace, asyncio.Event())
        self._waiting += 1
        self._start_watch()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._stop_watch()

    def open(self) -> None:
        """Waits may be held again (the store started)."""
        self.closed = False

    def close(self) -> None:
        """End every wait now and answer later ones at once (shutdown, store stopped)."""
        self.closed = True
        self.wake(None)
        self._stop_watch()

    def _start_watch(self) -> None:
        if self._watch is not None and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(
                self._watching(self._watch), name="opencdp-feed-watch"
            )

    async def _watching(self, watch: Watch) -> None:
        try:
            await watch(self.wake)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the change feed's watch for other processes' commits failed")
            self._watcher = None

    def _stop_watch(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()


def end_all_waits() -> None:
    """The server is shutting down: every waiting feed read answers now."""
    for waiters in list(_ALL):
        waiters.close()


async def follow(
    read: Callable[[FeedQuery], Awaitable[FeedPage]],
    waiters: Waiters,
    workspace: Workspace,
    query: FeedQuery,
    wait: float,
) -> FeedPage:
    """The feed after ``query.after`` (None: after the last event committed now),
    waiting up to ``wait`` seconds for a matching event when there is none yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, MAX_WAIT)
    if query.after is None:
        query = replace(query, after=(await read(query)).next)
    while True:
        version = waiters.version(workspace)
        page = await read(query)
        left = deadline - loop.time()
        if page.events or left <= 0 or waiters.closed:
            return page
        query = replace(query, after=page.next)
        await waiters.wait(workspace, version, left)
