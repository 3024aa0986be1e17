"""The store contract, in the domain's words. Only our own typed data crosses it.

Two implementations satisfy it: ``SQLiteStore`` (embedded, the default) and
``PostgresStore`` (scale-out). Every store test runs against each. Every write is a
command (``store.commands``) given to ``Store.execute``; the domain's write methods
(``append_calls``, ``add_token``…) are its short forms. Observers, given when a store
is made, are told of each commit with a ``Commit`` record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from opencdp.models import (
    Accepted,
    BulkProfile,
    Call,
    EventPage,
    EventQuery,
    FeedPage,
    FeedQuery,
    ProfilePage,
    ProfileQuery,
    ProfileRef,
    PropertyIndex,
    StoredEvent,
    StoredProfile,
    TokenRecord,
    Workspace,
)
from opencdp.store.commands import (
    AddToken,
    AppendCalls,
    Command,
    DropPropertyIndex,
    IndexProperty,
    RevokeToken,
)
from opencdp.store.feed import Waiters, follow
from opencdp.store.read_plan import FIRST_WALKS, Window

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Commit:
    """What one committed transaction wrote, as observers are told of it.

    Enough to wake whoever waits for new events (``workspaces``, ``events``, their
    ``positions``) and to count writes (``calls``, ``duplicates``, ``refusals``, and
    ``commands``: how many were committed together).
    """

    commands: tuple[Command[Any], ...]
    #: Workspaces that received tracking calls.
    workspaces: frozenset[Workspace]
    #: Tracking calls answered, and how many of them repeated a stored ``messageId``.
    calls: int
    duplicates: int
    #: Identity links or merges a guardrail refused (the reason of each).
    refusals: tuple[str, ...]
    #: The new events' change feed positions: a range per workspace batch written
    #: (SQLite: ``seq``, one order for every workspace; PostgreSQL: each workspace's
    #: own); empty when it stored none.
    positions: tuple[range, ...] | None = None

    @property
    def events(self) -> int:
        """New events stored."""
        return self.calls - self.duplicates


class StoreObserver(Protocol):
    """Told of each commit (metrics; the change feed's waiting readers, ``feed.Waiters``).

    Called on the event loop, after the commit and before the writers are answered:
    it must be quick. An observer that raises is logged; the write still succeeds.
    """

    def committed(self, commit: Commit) -> None: ...


class Store(ABC):
    """Durable home of events, profiles and tokens.

    A write answers only after the transaction holding it has committed to disk
    (``execute``): the caller may then acknowledge it.
    """

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, **options: Any) -> Store:
        """The store of a database URL (``backends.open_store`` picks the class)."""

    @abstractmethod
    async def start(self) -> None:
        """Open connections (and the writer); apply pending migrations."""

    @abstractmethod
    async def stop(self) -> None:
        """Finish every queued write, commit, and close."""

    @abstractmethod
    async def ping(self) -> bool:
        """True when the store answers a trivial query."""

    @abstractmethod
    def migrate(self) -> int:
        """Bring the schema up to date; return the schema version now in force."""

    # -- writes ------------------------------------------------------------------

    @abstractmethod
    async def execute(self, command: Command[R]) -> R:
        """Apply ``command`` in a transaction of its own or shared with others (a group
        commit); return its result once that transaction has committed.

        Raises ``Unavailable`` (503, worth a retry) when the write queue is full or the
        writer restarted; a command failing alone raises its own error.
        """

    async def append_calls(self, workspace: Workspace, calls: Sequence[Call]) -> list[Accepted]:
        """Store the calls (one event each), resolve identities, merge traits.

        Returns one ``Accepted`` per call, in order. A call whose ``message_id`` the
        workspace has already accepted is not stored again: its ``Accepted`` carries
        the first call's event id and ``duplicate=True``.
        """
        return await self.execute(AppendCalls(workspace, list(calls)))

    async def bulk_load(self, workspace: Workspace, profiles: Iterable[BulkProfile]) -> int:
        """Store many profiles and their events at once; return the events stored.

        For loading tools and the benchmark, on consistent data (one profile per
        ``userId``, none already stored): no identity resolution, no idempotency.
        """
        raise NotImplementedError(f"{type(self).__name__} has no bulk load")

    # -- reads (an unknown workspace simply has no data) ----------------------------

    @abstractmethod
    async def list_events(self, workspace: Workspace, query: EventQuery) -> EventPage:
        """A page of the workspace's events, in ``query.sort`` order, and the capped total.

        Events are ordered by eventTime, then receivedTime, then eventId. With
        ``query.after`` only events strictly after that key are returned (keyset); the
        total ignores ``after`` and ``offset``. ``query.profile`` naming no profile
        raises ``ProfileNotFound``; an unknown ``query.user_id`` gives an empty page.
        """

    @abstractmethod
    async def get_event(self, workspace: Workspace, event_id: str) -> StoredEvent | None: ...

    @abstractmethod
    async def read_feed(self, workspace: Workspace, query: FeedQuery) -> FeedPage:
        """The change feed once, without waiting (see ``feed``)."""

    #: The store's waiting feed readers, woken by its commits (``store.feed``).
    feed_waiters: Waiters

    async def feed(self, workspace: Workspace, query: FeedQuery, *, wait: float = 0) -> FeedPage:
        """The workspace's events after ``query.after`` in commit order (SPEC §5).

        A position once given is never given again, and no commit lands below a
        position a read has seen: following ``next`` sees every event exactly once.
        With ``wait``, an empty answer waits up to that many seconds for an event.
        """
        read = partial(self.read_feed, workspace)
        return await follow(read, self.feed_waiters, workspace, query, wait)

    @abstractmethod
    async def find_profiles(
        self,
        workspace: Workspace,
        ref: ProfileRef,
        *,
        with_events: bool = False,
        page: Window = FIRST_WALKS,
    ) -> list[StoredProfile]:
        """The live profiles ``ref`` names (several only for ``email``: the ``page`` of
        them), oldest first.

        A ``userId``/``anonymousId``/``id`` of a merged profile names the profile it was
        merged into. ``with_events`` also fills each profile's first/last events.
        """

    @abstractmethod
    async def list_profiles(self, workspace: Workspace, query: ProfileQuery) -> ProfilePage:
        """A page of live (never merged) profiles; see ``ProfileQuery`` for the orders."""

    @abstractmethod
    async def cursor_secret(self) -> bytes:
        """This database's key for signing scroll cursors (shared by every process)."""

    # -- property indexes: declared by an operator (``opencdp properties``) ---------

    async def index_property(self, path: str) -> bool:
        """Index ``properties.<path>`` so filters on it walk one value's events; False when
        it already is. Builds an index over every event: slow on a big store, and on
        SQLite writes wait for it. Needs no started store (its own connection)."""
        return await self.execute(IndexProperty(path))

    async def drop_property_index(self, path: str) -> bool:
        """Drop the path's index (filters on it scan again); False when it had none."""
        return await self.execute(DropPropertyIndex(path))

    @abstractmethod
    async def list_property_indexes(self) -> list[PropertyIndex]:
        """The declared paths, by path."""

    # -- tokens ------------------------------------------------------------------

    async def add_token(self, token: TokenRecord) -> None:
        await self.execute(AddToken(token))

    @abstractmethod
    async def find_token(self, token_id: str) -> TokenRecord | None:
        """The stored record of ``token_id`` (revoked or not), read from the database;
        ``auth.TokenVerifier`` caches it against ``revocations``."""

    @abstractmethod
    def revocations(self) -> int | None:
        """A count that changes after every committed revocation, by any process, read
        without a query (it is asked on every request). ``None`` while the store cannot
        tell: then no cached token record may be trusted.

        A record read after this count was read is current for as long as the count
        is unchanged, up to how late the store sees another process's revocation: at
        once on SQLite (a shared file), a notification's delivery on PostgreSQL.
        """

    @abstractmethod
    async def list_tokens(self, client_id: str | None = None) -> list[TokenRecord]:
        """Every token (of ``client_id`` only, if given), revoked ones too, oldest first."""

    async def revoke_token(self, token_id: str, when: int) -> bool:
        """Mark the token revoked; False when no such (unrevoked) token exists."""
        return await self.execute(RevokeToken(token_id, when))
