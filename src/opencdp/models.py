"""Plain typed data that crosses layers: workspaces, calls, events, profiles, tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

JSON = dict[str, Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
#: A clientId, accountId or brandId: the router, the OpenAPI document and tokens use it.
WORKSPACE_PART = "[A-Za-z0-9_.-]{1,64}"
_WORKSPACE_PART = re.compile(WORKSPACE_PART)


@dataclass(frozen=True, slots=True)
class Workspace:
    """The ``clientId / accountId / brandId`` triple that isolates all data."""

    client_id: str
    account_id: str
    brand_id: str

    @staticmethod
    def is_valid_part(value: str) -> bool:
        return _WORKSPACE_PART.fullmatch(value) is not None

    def __str__(self) -> str:
        return f"{self.client_id}/{self.account_id}/{self.brand_id}"


@dataclass(slots=True)
class Call:
    """One validated, normalised tracking call, ready to be stored.

    ``user_id`` and ``anonymous_id`` are the ids that may be linked: a placeholder
    ``anonymousId`` beside a ``userId`` is already dropped here (it stays in ``raw``).
    Times are milliseconds since the Unix epoch, UTC.
    """

    action: str  # identify | track | page | screen | alias | group
    event_action: str  # snake-case event name stored as eventAction
    user_id: str | None
    anonymous_id: str | None
    event_time: int
    received_time: int
    raw: JSON  # the call as sent, plus "action" and context.ip
    message_id: str | None = None
    traits: JSON | None = None  # identify: traits to merge into the profile
    previous_id: str | None = None  # alias: the id merged into user_id


class CallFacts(Protocol):
    """What the write rules read of a call: a ``Call``, or the SQLite writer's wire form."""

    @property
    def action(self) -> str: ...
    @property
    def event_action(self) -> str: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def anonymous_id(self) -> str | None: ...
    @property
    def event_time(self) -> int: ...
    @property
    def received_time(self) -> int: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def traits(self) -> JSON | None: ...
    @property
    def previous_id(self) -> str | None: ...


@dataclass(slots=True)
class BulkEvent:
    """One past event of a ``BulkProfile``, as a tracking call would have stored it."""

    event_action: str
    event_time: int
    received_time: int
    raw: JSON  # rawData: the call as sent, plus "action"


@dataclass(slots=True)
class BulkProfile:
    """A customer and their history, for ``Store.bulk_load`` (loading tools, benchmarks)."""

    user_id: str
    traits: JSON
    created_time: int
    anonymous_ids: list[str] = field(default_factory=list)
    events: list[BulkEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Accepted:
    """The store's answer for one call: its event id, and whether it was a repeat."""

    event_id: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated token: who it belongs to and what it may do."""

    token_id: str
    client_id: str
    accounts: frozenset[str] | None  # None: every account
    brands: frozenset[str] | None  # None: every brand
    scopes: frozenset[str]

    def can_use(self, workspace: Workspace, scope: str) -> bool:
        return (
            scope in self.scopes
            and workspace.client_id == self.client_id
            and (self.accounts is None or workspace.account_id in self.accounts)
            and (self.brands is None or workspace.brand_id in self.brands)
        )


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored token as the store keeps it: never the secret, only its hash."""

    token_id: str
    secret_hash: bytes
    client_id: str
    accounts: tuple[str, ...] | None
    brands: tuple[str, ...] | None
    scopes: tuple[str, ...]
    created_time: int
    revoked_time: int | None = None
    name: str = ""


@dataclass(slots=True)
class StoredEvent:
    """An event as the read APIs return it (SPEC §1)."""

    event_id: str
    event_action: str
    event_time: int
    received_time: int
    profile_id: str
    external_id: str
    email: str
    user_id: str | None
    anonymous_id: str | None
    workspace: Workspace
    raw: JSON
    source: str = "API"
    status: str = "processed"


@dataclass(slots=True)
class StoredProfile:
    """A profile as the read APIs return it (SPEC §1, §6)."""

    id: str
    external_id: str
    traits: JSON
    anonymous_ids: list[str]
    audiences: list[str]
    created_by: JSON
    created_time: int
    last_activity_time: int | None
    first_events: dict[str, StoredEvent] = field(default_factory=dict)
    last_events: dict[str, StoredEvent] = field(default_factory=dict)


def to_millis(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (sub-millisecond part dropped)."""
    return (moment - _EPOCH) // _MILLISECOND


#: The times an event may carry, in UTC: 0001-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z.
MIN_MILLIS = to_millis(datetime.min.replace(tzinfo=UTC))
MAX_MILLIS = to_millis(datetime.max.replace(tzinfo=UTC))


def format_millis(ms: int) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, the form of every time in responses.

    The year always has four digits (``0001-…``). A value outside ``MIN_MILLIS`` ..
    ``MAX_MILLIS`` (only a database written before that range was enforced holds one)
    reads as the nearest end of the range, so no stored value can break a read.
    """
    ms = min(max(ms, MIN_MILLIS), MAX_MILLIS)
    # by hand, not strftime: glibc's %Y writes year 1 as "1" (and this is no slower)
    t = _EPOCH + ms * _MILLISECOND
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}"
        f"T{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{ms % 1000:03d}Z"
    )


@dataclass(frozen=True, slots=True)
class BatchItemError:
    """Why one item of a ``batch`` call was rejected; ``index`` is its position."""

    index: int
    code: str
    message: str


# -- reads: queries and pages (SPEC §5, §6) ----------------------------------------------

IdType = Literal["userId", "email", "id", "anonymousId"]
ID_TYPES: tuple[IdType, ...] = ("userId", "email", "id", "anonymousId")
MAX_TOTAL = 10_000  # ``total`` is capped here, and ``from + size`` may not pass it


@dataclass(frozen=True, slots=True)
class ProfileRef:
    """``{idType}:{id}`` as the Profiles API names a customer."""

    id_type: IdType
    value: str

    def __str__(self) -> str:
        return f"{self.id_type}:{self.value}"


@dataclass(frozen=True, slots=True)
class EventKey:
    """An event's place in the sort order: eventTime, then receivedTime, then eventId."""

    event_time: int
    received_time: int
    event_id: str

    @staticmethod
    def of(event: StoredEvent) -> EventKey:
        return EventKey(event.event_time, event.received_time, event.event_id)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events to read, in which order, and from where (SPEC §5).

    ``user_id`` keeps one customer's events (unknown: no events); ``profile`` scopes the
    query to the profiles a reference names (none: ``ProfileNotFound``). ``after`` is
    the keyset position of a scroll: only events strictly after it in the sort order.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    start: int | None = None  # start <= eventTime
    end: int | None = None  # eventTime < end
    sort: Literal["asc", "desc"] = "desc"
    offset: int = 0
    size: int = 100
    properties: tuple[tuple[str, str], ...] = ()  # (dotted path under properties, value)
    user_id: str | None = None
    profile: ProfileRef | None = None
    after: EventKey | None = None


@dataclass(frozen=True, slots=True)
class PropertyIndex:
    """A ``properties.<path>`` an operator declared for fast filters, and since when."""

    path: str
    created_time: int


@dataclass(slots=True)
class EventPage:
    """One page of events and the query's whole hit count (capped at ``MAX_TOTAL``)."""

    total: int
    events: list[StoredEvent]


@dataclass(frozen=True, slots=True)
class FeedQuery:
    """A change feed read (SPEC §5): events after ``after`` in commit order.

    Positions grow in commit order within a workspace and are never reused, and no
    transaction commits below a position a reader has seen (the stores' migrations say
    how). ``after=None`` means "after the last event committed now".
    """

    after: int | None = 0
    size: int = 100
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(slots=True)
class FeedPage:
    """Events after the query's position, and where the next read goes on from.

    ``next`` may pass the last event: when the page is not full, every matching event
    up to the highest committed position was in it, so later reads start there.
    """

    events: list[StoredEvent]
    next: int


@dataclass(frozen=True, slots=True)
class ProfileKey:
    """A profile's place in a listing: its last activity and its creation sequence number.

    ``seq`` grows in commit order: a profile committed later has a greater one.
    """

    last_activity: int | None
    seq: int


@dataclass(frozen=True, slots=True)
class ProfileQuery:
    """``sort="activity"``: most recent activity first; ``"created"``: oldest first."""

    sort: Literal["activity", "created"] = "activity"
    size: int = 100
    after: ProfileKey | None = None


@dataclass(slots=True)
class ProfilePage:
    """Profiles of one listing page; ``last`` is the key of the last one (None: empty)."""

    profiles: list[StoredProfile]
    last: ProfileKey | None
