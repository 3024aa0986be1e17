"""The reads of the Events and Profiles APIs, written once for both stores, with no I/O.

A read is a *plan*: a generator that yields each ``Statement`` it needs, is sent that
statement's rows, and returns our models. Multi-step reads (a reference resolved to
profiles, merges followed, then their events) are plans of plans (``yield from``).
Each store runs plans with a small driver (``sqlite.reads`` in a reader thread,
``postgres.reads`` on an async connection), inside one snapshot, so a page and its
total see the same committed state. The SQL differs only where the ``Dialect`` says.

Every query walks an index in its sort order, never a whole table
(``tests/test_query_plans.py`` runs ``EXPLAIN QUERY PLAN`` on each shape): events as
``event_walks`` describes; profile look-ups through ``identities`` (userId,
anonymousId), ``profiles_by_id`` and ``profiles_by_email``; listings through
``profiles_by_created`` (a keyset on pk) and ``profiles_by_activity`` (most recent
first, then the never-active profiles, newest first).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from opencdp.errors import ProfileNotFound
from opencdp.models import (
    MAX_TOTAL,
    EventPage,
    EventQuery,
    FeedPage,
    FeedQuery,
    ProfileKey,
    ProfilePage,
    ProfileQuery,
    ProfileRef,
    StoredEvent,
    StoredProfile,
    TokenRecord,
    Workspace,
)
from opencdp.store.dialect import Dialect, Statement
from opencdp.store.event_walks import (
    EMAIL_PROFILES,
    EVENT_COLUMNS,
    MAX_PROFILE_WALKS,
    Filters,
    count_sql,
    page_sql,
    walks,
)

T = TypeVar("T")
Rows: TypeAlias = Sequence[Sequence[Any]]
#: A read: yields statements, is sent each one's rows, returns its answer.
Plan: TypeAlias = Generator[Statement, Rows, T]

PROFILE_COLUMNS = (
    "pk, id, external_id, traits, anonymous_ids, audiences, created_by, created_time,"
    " last_activity, first_events, last_events"
)
#: The declared property paths (``Store.list_property_indexes``; filters walk their index).
PROPERTY_INDEXES_SELECT = "SELECT path, created_time FROM property_indexes ORDER BY path"
#: Stored tokens, as ``token_from_row`` reads them.
TOKEN_SELECT = (
    "SELECT token_id, secret_hash, client_id, accounts, brands, scopes, created_time,"
    " revoked_time, name FROM tokens"
)
_MAX_MERGE_HOPS = 64


@dataclass(slots=True)
class Scope:
    """Where a read runs: the store's dialect, the workspace and its row id there."""

    dialect: Dialect
    workspace: Workspace
    ws: int


@dataclass(frozen=True, slots=True)
class Window:
    """Which of the profiles one email names: ``limit`` of them after ``offset`` (oldest
    first). Other references name one profile at most and ignore it."""

    offset: int = 0
    limit: int = MAX_PROFILE_WALKS + 1


#: Enough of an email's profiles to see whether their events are merged per profile.
FIRST_WALKS = Window()


class Read(ABC, Generic[T]):
    """One read of a workspace's data, as the store method of the same name answers it."""

    __slots__ = ()

    @abstractmethod
    def plan(self, scope: Scope) -> Plan[T]:
        """The read, in the workspace the store holds rows for."""

    @abstractmethod
    def nothing(self) -> T:
        """The answer for a workspace the store holds nothing of yet."""


@dataclass(slots=True)
class ListEvents(Read[EventPage]):
    """A page of the query's events and its capped total."""

    query: EventQuery

    def plan(self, scope: Scope) -> Plan[EventPage]:
        query, d = self.query, scope.dialect
        profile_pks = yield from _profile_pks(scope, query)
        ranges = walks(scope.ws, query, profile_pks, (yield from _indexed(d, query)))
        if not ranges:
            return EventPage(0, [])
        filters = Filters(d, query)
        total = 0
        for walk in ranges:
            total += int((yield count_sql(filters, walk))[0][0])
        rows = yield page_sql(filters, ranges, query)
        return EventPage(min(total, MAX_TOTAL), [stored_event(scope, row) for row in rows])

    def nothing(self) -> EventPage:
        if self.query.profile is not None:
            raise ProfileNotFound()
        return EventPage(0, [])


@dataclass(slots=True)
class GetEvent(Read[StoredEvent | None]):
    event_id: str

    def plan(self, scope: Scope) -> Plan[StoredEvent | None]:
        found = yield from events_by_ids(scope, [self.event_id])
        return found[0] if found else None

    def nothing(self) -> StoredEvent | None:
        return None


@dataclass(slots=True)
class FindProfiles(Read[list[StoredProfile]]):
    """The profiles a reference names (for an email, the ``page`` of them), with their
    first/last events when asked: a look-up by event id each, never a scan."""

    ref: ProfileRef
    with_events: bool = False
    page: Window = FIRST_WALKS

    def plan(self, scope: Scope) -> Plan[list[StoredProfile]]:
        d = scope.dialect
        pks = yield from resolve(scope, self.ref, self.page)
        if not pks:
            return []
        where, params = d.one_of("pk", pks, negate=False)
        sql = f"SELECT {PROFILE_COLUMNS} FROM profiles WHERE {where} ORDER BY pk"
        rows = yield d.statement(sql, params)
        profiles = [stored_profile(row, d) for row in rows]
        if self.with_events:
            for row, profile in zip(rows, profiles, strict=True):
                first, last = d.decode(row[9]), d.decode(row[10])
                # A stamp is [eventTime, receivedTime, eventId].
                wanted = sorted({stamp[2] for stamp in (*first.values(), *last.values())})
                found = {e.event_id: e for e in (yield from events_by_ids(scope, wanted))}
                profile.first_events = {a: found[s[2]] for a, s in first.items() if s[2] in found}
                profile.last_events = {a: found[s[2]] for a, s in last.items() if s[2] in found}
        return profiles

    def nothing(self) -> list[StoredProfile]:
        return []


@dataclass(slots=True)
class ListProfiles(Read[ProfilePage]):
    query: ProfileQuery

    def plan(self, scope: Scope) -> Plan[ProfilePage]:
        query, d = self.query, scope.dialect
        rows: list[Sequence[Any]] = []
        if query.sort == "created":
            rows.extend((yield created_sql(d, scope.ws, query)))
        else:
            for active in (True, False):
                if len(rows) >= query.size:
                    break
                left = query.size - len(rows)
                step = activity_sql(d, scope.ws, query.after, left, active=active)
                if step is not None:
                    rows.extend((yield step))
        last = profile_key(rows[-1]) if rows else query.after
        return ProfilePage([stored_profile(row, d) for row in rows], last)

    def nothing(self) -> ProfilePage:
        return ProfilePage([], self.query.after)


@dataclass(slots=True)
class ReadFeed(Read[FeedPage]):
    """The change feed: the workspace's events after a position, in position (commit)
    order, through the ``events_by_position`` index.

    Read in one snapshot with the highest position committed: when the page is not
    full it held every matching event up to there, so ``next`` moves past events the
    filters skipped (nothing can later commit below a position a snapshot saw).
    """

    query: FeedQuery

    def plan(self, scope: Scope) -> Plan[FeedPage]:
        query, d = self.query, scope.dialect
        index, position = d.index("events_by_position"), f"e.{d.position}"
        rows = yield d.statement(
            f"SELECT max({position}) FROM events e {index} WHERE e.workspace_id = ?", (scope.ws,)
        )
        last = int(rows[0][0] or 0)
        if query.after is None:
            return FeedPage([], last)
        after = (f"e.workspace_id = ? AND {position} > ?", [scope.ws, query.after])
        terms: list[tuple[str, list[Any]]] = [after]
        if query.include:
            terms.append(d.one_of("e.action", query.include, negate=False))
        if query.exclude:
            terms.append(d.one_of("e.action", query.exclude, negate=True))
        where = " AND ".join(term for term, _ in terms)
        params = [p for _, ps in terms for p in ps]
        rows = yield d.statement(
            f"SELECT {EVENT_COLUMNS}, {position} FROM events e {index}"
            f" {d.join} profiles p ON p.pk = e.profile_pk"
            f" WHERE {where} ORDER BY {position} LIMIT ?",
            [*params, query.size],
        )
        events = [stored_event(scope, row) for row in rows]
        if len(rows) == query.size:
            return FeedPage(events, int(rows[-1][-1]))
        return FeedPage(events, max(query.after, last))

    def nothing(self) -> FeedPage:
        return FeedPage([], self.query.after or 0)


class PlannedReads(ABC):
    """A store's read methods (``Store.list_events``…), each a ``Read`` that the store
    runs with ``_read``: the only read code a back-end writes."""

    async def list_events(self, workspace: Workspace, query: EventQuery) -> EventPage:
        return await self._read(workspace, ListEvents(query))

    async def get_event(self, workspace: Workspace, event_id: str) -> StoredEvent | None:
        return await self._read(workspace, GetEvent(event_id))

    async def find_profiles(
        self,
        workspace: Workspace,
        ref: ProfileRef,
        *,
        with_events: bool = False,
        page: Window = FIRST_WALKS,
    ) -> list[StoredProfile]:
        return await self._read(workspace, FindProfiles(ref, with_events, page))

    async def list_profiles(self, workspace: Workspace, query: ProfileQuery) -> ProfilePage:
        return await self._read(workspace, ListProfiles(query))

    async def read_feed(self, workspace: Workspace, query: FeedQuery) -> FeedPage:
        return await self._read(workspace, ReadFeed(query))

    @abstractmethod
    async def _read(self, workspace: Workspace, read: Read[T]) -> T:
        """``read.plan`` run in one snapshot of the workspace, within the read limits;
        ``read.nothing()`` when the store holds nothing of the workspace."""


# -- look-ups ----------------------------------------------------------------------------


def workspace_id(d: Dialect, workspace: Workspace) -> Plan[int | None]:
    """The workspace's row id; None when the store holds nothing of it."""
    rows = yield d.statement(
        "SELECT id FROM workspaces WHERE client_id = ? AND account_id = ? AND brand_id = ?",
        (workspace.client_id, workspace.account_id, workspace.brand_id),
    )
    return int(rows[0][0]) if rows else None


def setting(d: Dialect, name: str) -> Plan[bytes | None]:
    rows = yield d.statement("SELECT value FROM settings WHERE name = ?", (name,))
    return bytes(rows[0][0]) if rows else None


def resolve(scope: Scope, ref: ProfileRef, page: Window = FIRST_WALKS) -> Plan[list[int]]:
    """The live profiles (row ids) a reference names; merged profiles lead to their target.

    For ``email``, the ``page`` of them, oldest first."""
    d, ws = scope.dialect, scope.ws
    if ref.id_type == "email":
        sql = EMAIL_PROFILES + " ORDER BY pk LIMIT ? OFFSET ?"
        rows = yield d.statement(sql, (ws, ref.value, page.limit, page.offset))
        return [int(row[0]) for row in rows]
    params: tuple[Any, ...]
    if ref.id_type == "id":
        sql, params = "SELECT pk FROM profiles WHERE workspace_id = ? AND id = ?", (ws, ref.value)
    else:
        kind = "user" if ref.id_type == "userId" else "anon"
        sql = "SELECT profile_pk FROM identities WHERE workspace_id = ? AND kind = ? AND value = ?"
        params = (ws, kind, ref.value)
    rows = yield d.statement(sql, params)
    return [(yield from _follow_merges(d, int(rows[0][0])))] if rows else []


def _follow_merges(d: Dialect, pk: int) -> Plan[int]:
    for _ in range(_MAX_MERGE_HOPS):
        rows = yield d.statement("SELECT merged_into FROM profiles WHERE pk = ?", (pk,))
        if not rows or rows[0][0] is None:
            return pk
        pk = int(rows[0][0])
    return pk


def events_by_ids(scope: Scope, event_ids: Sequence[str]) -> Plan[list[StoredEvent]]:
    if not event_ids:
        return []
    d = scope.dialect
    where, params = d.one_of("e.event_id", event_ids, negate=False)
    rows = yield d.statement(
        f"SELECT {EVENT_COLUMNS} FROM events e {d.index('events_by_event_id')}"
        f" {d.join} profiles p ON p.pk = e.profile_pk WHERE {where} AND e.workspace_id = ?",
        [*params, scope.ws],
    )
    return [stored_event(scope, row) for row in rows]


def _profile_pks(scope: Scope, query: EventQuery) -> Plan[list[int] | None]:
    """The profiles a query is limited to (None: not limited to customers)."""
    pks: list[int] | None = None
    if query.profile is not None:
        pks = yield from resolve(scope, query.profile)
        if not pks:
            raise ProfileNotFound()
    if query.user_id is not None:
        users = yield from resolve(scope, ProfileRef("userId", query.user_id))
        pks = users if pks is None else [pk for pk in pks if pk in users]
    return pks


def _indexed(d: Dialect, query: EventQuery) -> Plan[set[str]]:
    """The declared property paths, when the query filters on properties."""
    if not query.properties:
        return set()
    return {row[0] for row in (yield d.statement(PROPERTY_INDEXES_SELECT, ()))}


# -- profile listings --------------------------------------------------------------------


def created_sql(d: Dialect, ws: int, query: ProfileQuery) -> Statement:
    """The next page of live profiles in creation (commit) order."""
    after = -1 if query.after is None else query.after.seq
    sql = (
        f"SELECT {PROFILE_COLUMNS} FROM profiles {d.index('profiles_by_created')}"
        " WHERE workspace_id = ? AND merged_into IS NULL AND pk > ? ORDER BY pk LIMIT ?"
    )
    return d.statement(sql, [ws, after, query.size])


def activity_sql(
    d: Dialect, ws: int, after: ProfileKey | None, size: int, *, active: bool
) -> Statement | None:
    """Up to ``size`` profiles after ``after``: the ``active`` ones (most recent first), or
    the never-active ones (newest first). None when the scroll is already past them."""
    if active:
        if after is not None and after.last_activity is None:
            return None
        keyset = "" if after is None else " AND (last_activity, pk) < (?, ?)"
        params = [] if after is None else [after.last_activity, after.seq]
        condition = "IS NOT NULL" + keyset
    else:
        below = after is not None and after.last_activity is None
        condition = "IS NULL" + (" AND pk < ?" if below else "")
        params = [after.seq] if after is not None and below else []
    sql = (
        f"SELECT {PROFILE_COLUMNS} FROM profiles {d.index('profiles_by_activity')}"
        f" WHERE workspace_id = ? AND merged_into IS NULL AND last_activity {condition}"
        " ORDER BY last_activity DESC, pk DESC LIMIT ?"
    )
    return d.statement(sql, [ws, *params, size])


# -- rows into models --------------------------------------------------------------------


def profile_key(row: Sequence[Any]) -> ProfileKey:
    """A listed profile row's place in the listing (for the next page's keyset)."""
    return ProfileKey(row[8], int(row[0]))


def stored_profile(row: Sequence[Any], d: Dialect) -> StoredProfile:
    """A row of ``PROFILE_COLUMNS``, without its first/last events."""
    return StoredProfile(
        id=row[1],
        external_id=row[2],
        traits=d.decode(row[3]),
        anonymous_ids=d.decode(row[4]),
        audiences=d.decode(row[5]),
        created_by=d.decode(row[6]),
        created_time=row[7],
        last_activity_time=row[8],
    )


def stored_event(scope: Scope, row: Sequence[Any]) -> StoredEvent:
    """A row of ``EVENT_COLUMNS`` as the read APIs return it."""
    return StoredEvent(
        event_id=row[0],
        event_action=row[1],
        event_time=row[2],
        received_time=row[3],
        user_id=row[4],
        anonymous_id=row[5],
        raw=scope.dialect.decode(row[6]),
        profile_id=row[7],
        external_id=row[8],
        email=row[9],
        workspace=scope.workspace,
    )


def token_from_row(row: Sequence[Any], decode: Callable[[Any], Any]) -> TokenRecord:
    """A row of ``TOKEN_SELECT``; accounts/brands/scopes are JSON arrays (NULL: all)."""

    def as_tuple(value: Any) -> tuple[str, ...] | None:
        return None if value is None else tuple(decode(value))

    return TokenRecord(
        token_id=row[0],
        secret_hash=bytes(row[1]),
        client_id=row[2],
        accounts=as_tuple(row[3]),
        brands=as_tuple(row[4]),
        scopes=as_tuple(row[5]) or (),
        created_time=row[6],
        revoked_time=row[7],
        name=row[8],
    )
