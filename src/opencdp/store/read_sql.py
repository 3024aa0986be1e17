"""The read side's SQL text and row shapes, shared by both stores (only execution differs).

Events: a query becomes one or more *walks* (index ranges: the workspace's time index, one
action's range, one profile's range, one value of a declared property index), each
checked against the same filters; several walks are merged in sort order. ``total``
counts at most ``MAX_TOTAL`` entries per walk, so every page costs the same at any
depth. SQL is written with ``?`` marks; the PostgreSQL dialect turns them into ``%s``.

Profiles: listing by creation is a keyset on pk; by activity, most recent first, then
the never-active profiles (NULL activity), newest first. Row mappers take the store's
``decode`` for JSON columns (SQLite returns text, PostgreSQL decoded values).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from opencdp.models import (
    MAX_TOTAL,
    EventQuery,
    ProfileKey,
    ProfileQuery,
    StoredEvent,
    StoredProfile,
    TokenRecord,
    Workspace,
)
from opencdp.store.number_text import number_forms

Decode = Callable[[Any], Any]
#: How much of a declared property's value a PostgreSQL index keeps (see ``property_key``).
PG_INDEXED_PREFIX = 256

EVENT_COLUMNS = (
    "e.event_id, e.action, e.event_time, e.received_time, e.user_id, e.anonymous_id, e.raw,"
    " p.id, p.external_id, coalesce(p.email, '')"
)
PROFILE_COLUMNS = (
    "pk, id, external_id, traits, anonymous_ids, audiences, created_by, created_time,"
    " last_activity, first_events, last_events"
)
PROPERTY_INDEXES_SELECT = "SELECT path, created_time FROM property_indexes ORDER BY path"
TOKEN_SELECT = (
    "SELECT token_id, secret_hash, client_id, accounts, brands, scopes, created_time,"
    " revoked_time, name FROM tokens"
)
_KEY = ("e.event_time", "e.received_time", "e.event_id")


@dataclass(frozen=True)
class Dialect:
    """What differs between the stores' SQL."""

    name: str
    join: str  # SQLite's CROSS JOIN keeps the written join order

    def index(self, name: str) -> str:
        return f"INDEXED BY {name}" if self.name == "sqlite" else ""

    def one_of(self, column: str, values: Sequence[str], *, negate: bool) -> tuple[str, list[Any]]:
        if self.name == "sqlite":
            marks = ", ".join("?" * len(values))
            return f"{column} {'NOT IN' if negate else 'IN'} ({marks})", list(values)
        return f"{'NOT ' if negate else ''}({column} = ANY(?))", [list(values)]

    def literal(self, text: str) -> str:
        """A SQL string literal. On PostgreSQL an ``E''`` string (read the same whatever
        ``standard_conforming_strings`` says) with ``?`` and ``%`` as hex escapes, so
        neither our ``?`` marks nor psycopg's ``%s`` can be found inside it."""
        if self.name == "sqlite":
            return "'" + text.replace("'", "''") + "'"
        escaped = text.replace("\\", "\\\\").replace("'", "''")
        return "E'" + escaped.replace("?", "\\x3f").replace("%", "\\x25") + "'"

    def property_value(self, column: str, dotted: str) -> str:
        """``<column>.properties.<dotted>`` as text: a string's own text, any other JSON
        value its JSON text. The filter and the declared index both use this expression
        (a planner uses an expression index only for the identical expression), so the
        path is written in as literals, never bound."""
        path = self._property_path(dotted)
        if self.name == "sqlite":
            return (
                f"(CASE json_type({column}, {path}) WHEN 'text' THEN {column} ->> {path}"
                f" ELSE {column} -> {path} END)"
            )
        return f"({column} #>> {path})"

    def property_type(self, column: str, dotted: str) -> str:
        """The JSON type of ``<column>.properties.<dotted>``: both stores name ``null``,
        ``array`` and ``object`` alike; numbers are ``integer``/``real`` or ``number``."""
        path = self._property_path(dotted)
        if self.name == "sqlite":
            return f"json_type({column}, {path})"
        return f"jsonb_typeof({column} #> {path})"

    def _property_path(self, dotted: str) -> str:
        keys = dotted.split(".")
        if self.name == "sqlite":
            return self.literal("$.properties" + "".join(f'."{key}"' for key in keys))
        return f"ARRAY[{', '.join(map(self.literal, ['properties', *keys]))}]"

    def property_key(self, column: str, dotted: str) -> str:
        """What a declared index keeps of the value: all of it on SQLite, its first
        ``PG_INDEXED_PREFIX`` characters on PostgreSQL, whose index entries hold about
        2,700 bytes (a longer value failed its whole insert)."""
        value = self.property_value(column, dotted)
        return value if self.name == "sqlite" else f"left({value}, {PG_INDEXED_PREFIX})"

    def property_is(self, dotted: str, value: str) -> tuple[str, list[Any]]:
        """``rawData.properties.<dotted>`` matches ``value``, the same on both stores:

        a string by its text, a boolean as ``true``/``false``, a number by its decimal
        text without exponent (``1e16`` = ``10000000000000000``, ``3`` ≠ ``3.0``); JSON
        ``null``, arrays and objects match nothing. The stores write a number's text
        differently (SQLite as sent, PostgreSQL in plain decimals), so a number whose
        forms differ is compared against each store's own forms of it. On PostgreSQL
        a term on ``property_key`` comes first, for the declared index.
        """
        texts, sql, params = self._property_match(dotted, value)
        if self.name == "sqlite":
            return sql, params
        prefixes = sorted({text[:PG_INDEXED_PREFIX] for text in texts})
        key = f"{self.property_key('e.raw', dotted)} IN ({', '.join('?' * len(prefixes))})"
        return f"{key} AND {sql}", [*prefixes, *params]

    def _property_match(self, dotted: str, value: str) -> tuple[list[str], str, list[Any]]:
        """The texts the value may have in the store, and the terms that match it."""
        text, kind = self.property_value("e.raw", dotted), self.property_type("e.raw", dotted)
        if value == "null" or value[:1] in ("[", "{"):
            return [value], f"{text} = ? AND {kind} NOT IN ('null', 'array', 'object')", [value]
        forms = number_forms(value, plain=self.name == "postgres")
        if forms is None or forms == [value]:
            return [value], f"{text} = ?", [value]
        numeric = "('integer', 'real')" if self.name == "sqlite" else "('number')"
        marks = ", ".join("?" * len(forms))
        sql = (
            f"{text} IN (?, {marks}) AND CASE WHEN {kind} IN {numeric}"
            f" THEN {text} IN ({marks}) ELSE {text} = ? END"
        )
        return [value, *forms], sql, [value, *forms, *forms, value]

    def property_index_sql(self, dotted: str) -> str:
        """The statement that builds the index for filters on ``properties.<dotted>``: the
        events of a workspace with one value, in the sort order (and their action, so
        ``include``/``exclude`` and the total need no event rows)."""
        name, value = property_index(dotted), self.property_key("raw", dotted)
        if self.name == "sqlite":
            return (
                f"CREATE INDEX IF NOT EXISTS {name} ON events"
                f" (workspace_id, {value}, event_time, received_time, event_id, action)"
            )
        return (
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON events"
            f" (workspace_id, {value}, event_time, received_time, event_id) INCLUDE (action)"
        )

    def sql(self, text: str) -> str:
        return text if self.name == "sqlite" else text.replace("?", "%s")


SQLITE = Dialect("sqlite", "CROSS JOIN")
POSTGRES = Dialect("postgres", "JOIN")


def property_index(dotted: str) -> str:
    """The name of the declared index on ``properties.<dotted>``: readable, and unique."""
    slug = re.sub(r"[^a-z0-9]+", "_", dotted.lower()).strip("_")[:24]
    return f"events_by_property_{slug}_{hashlib.sha256(dotted.encode()).hexdigest()[:8]}"


#: Past this many profiles (one email) a customer's events are not merged per profile
#: (SQLite allows 500 arms in one compound SELECT) but read by time, filtered.
MAX_PROFILE_WALKS = 100
@dataclass(frozen=True, slots=True)
class Window:
    """Which of the profiles one email names: ``limit`` of them after ``offset`` (oldest
    first). Other references name one profile at most and ignore it."""

    offset: int = 0
    limit: int = MAX_PROFILE_WALKS + 1


#: Enough of an email's profiles to see whether their events are merged per profile.
FIRST_WALKS = Window()
#: The live profiles of one email in a workspace (parameters: workspace id, email).
EMAIL_PROFILES = (
    "SELECT pk FROM profiles WHERE workspace_id = ? AND email = ? AND merged_into IS NULL"
)


@dataclass(frozen=True, slots=True)
class Walk:
    """One index range: the index, and the equality terms that pick the range."""

    index: str
    where: str
    params: list[Any]


def walks(
    ws: int, query: EventQuery, profile_pks: list[int] | None, indexed: Collection[str] = ()
) -> list[Walk]:
    """The ranges to read: the profiles' (when the query names customers), else by action
    (``include``), else one property value's (a filter on an ``indexed`` path), else the
    whole workspace by time. A property's range is picked by its filter term itself."""
    if profile_pks is not None:
        if len(profile_pks) > MAX_PROFILE_WALKS and query.profile is not None:
            return [_email_walk(ws, query.profile.value)]
        where = "e.workspace_id = ? AND e.profile_pk = ?"
        return [Walk("events_by_profile", where, [ws, pk]) for pk in profile_pks]
    if query.include:
        actions = [a for a in query.include if a not in query.exclude]
        where = "e.workspace_id = ? AND e.action = ?"
        return [Walk("events_by_action", where, [ws, action]) for action in actions]
    for path, _ in query.properties:
        if path in indexed:
            return [Walk(property_index(path), "e.workspace_id = ?", [ws])]
    return [Walk("events_by_time", "e.workspace_id = ?", [ws])]


def _email_walk(ws: int, email: str) -> Walk:
    """The events of more profiles than ``MAX_PROFILE_WALKS`` (one email): the workspace
    walked by time, keeping those profiles' events (bounded by the read time budget)."""
    where = f"e.workspace_id = ? AND e.profile_pk IN ({EMAIL_PROFILES})"
    return Walk("events_by_time", where, [ws, ws, email])


class Filters:
    """The terms every walk checks: actions, time window, properties (and the keyset)."""

    def __init__(self, dialect: Dialect, query: EventQuery) -> None:
        self.dialect = dialect
        terms: list[tuple[str, list[Any]]] = []
        if (query.profile is not None or query.user_id is not None) and query.include:
            terms.append(dialect.one_of("e.action", query.include, negate=False))
        if query.exclude:
            terms.append(dialect.one_of("e.action", query.exclude, negate=True))
        if query.start is not None:
            terms.append(("e.event_time >= ?", [query.start]))
        if query.end is not None:
            terms.append(("e.event_time < ?", [query.end]))
        terms += [dialect.property_is(path, value) for path, value in query.properties]
        self.terms = terms
        self.direction = "ASC" if query.sort == "asc" else "DESC"
        self.keyset: tuple[str, list[Any]] | None = None
        if query.after is not None:
            after = query.after
            op = ">" if query.sort == "asc" else "<"
            self.keyset = (
                f"({', '.join(_KEY)}) {op} (?, ?, ?)",
                [after.event_time, after.received_time, after.event_id],
            )

    def where(self, walk: Walk, *, keyset: bool) -> tuple[str, list[Any]]:
        terms = [(walk.where, walk.params), *self.terms]
        if keyset and self.keyset is not None:
            terms.append(self.keyset)
        return " AND ".join(t for t, _ in terms), [p for _, ps in terms for p in ps]

    @property
    def order(self) -> str:
        return ", ".join(f"{column} {self.direction}" for column in _KEY)


def count_sql(filters: Filters, walk: Walk) -> tuple[str, list[Any]]:
    """Matches in one walk, counted up to ``MAX_TOTAL``."""
    where, params = filters.where(walk, keyset=False)
    index = filters.dialect.index(walk.index)
    sql = (
        f"SELECT count(*) FROM (SELECT 1 FROM events e {index}"
        f" WHERE {where} LIMIT {MAX_TOTAL}) AS hits"
    )
    return filters.dialect.sql(sql), params


def page_sql(filters: Filters, ranges: list[Walk], query: EventQuery) -> tuple[str, list[Any]]:
    """One page: ``offset`` then ``size`` events, every walk merged in the sort order."""
    d = filters.dialect
    profiles = f"{d.join} profiles p ON p.pk = e.profile_pk"
    if len(ranges) == 1:
        where, params = filters.where(ranges[0], keyset=True)
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM events e {d.index(ranges[0].index)} {profiles}"
            f" WHERE {where} ORDER BY {filters.order} LIMIT ? OFFSET ?"
        )
        return d.sql(sql), [*params, query.size, query.offset]
    arms, params = [], []
    for n, walk in enumerate(ranges):
        where, arm_params = filters.where(walk, keyset=True)
        arms.append(
            "SELECT * FROM (SELECT e.seq, e.event_time, e.received_time, e.event_id"
            f" FROM events e {d.index(walk.index)} WHERE {where}"
            f" ORDER BY {filters.order} LIMIT ?) AS arm{n}"
        )
        params += [*arm_params, query.offset + query.size]
    direction = filters.direction
    sql = (
        f"WITH page (seq, event_time, received_time, event_id) AS ("
        f"{' UNION ALL '.join(arms)}"
        f" ORDER BY 2 {direction}, 3 {direction}, 4 {direction} LIMIT ? OFFSET ?)"
        f" SELECT {EVENT_COLUMNS} FROM page {d.join} events e ON e.seq = page.seq {profiles}"
        f" ORDER BY {filters.order}"
    )
    return d.sql(sql), [*params, query.size, query.offset]


# -- profiles ----------------------------------------------------------------------------


def created_sql(d: Dialect, ws: int, query: ProfileQuery) -> tuple[str, list[Any]]:
    """The next page of live profiles in creation (commit) order."""
    after = -1 if query.after is None else query.after.seq
    sql = (
        f"SELECT {PROFILE_COLUMNS} FROM profiles {d.index('profiles_by_created')}"
        " WHERE workspace_id = ? AND merged_into IS NULL AND pk > ? ORDER BY pk LIMIT ?"
    )
    return d.sql(sql), [ws, after, query.size]


def activity_sql(
    d: Dialect, ws: int, after: ProfileKey | None, size: int, *, active: bool
) -> tuple[str, list[Any]] | None:
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
    return d.sql(sql), [ws, *params, size]


def profile_key(row: Sequence[Any]) -> ProfileKey:
    """A listed profile row's place in the listing (for the next page's keyset)."""
    return ProfileKey(row[8], int(row[0]))


def stored_profile(row: Sequence[Any], decode: Decode) -> StoredProfile:
    return StoredProfile(
        id=row[1],
        external_id=row[2],
        traits=decode(row[3]),
        anonymous_ids=decode(row[4]),
        audiences=decode(row[5]),
        created_by=decode(row[6]),
        created_time=row[7],
        last_activity_time=row[8],
    )


def stamped_event_ids(first: dict[str, list[Any]], last: dict[str, list[Any]]) -> list[str]:
    """The event ids a profile's first/last stamps (``[eventTime, receivedTime, id]``) name."""
    return sorted({stamp[2] for stamp in (*first.values(), *last.values())})


def attach_events(
    profile: StoredProfile,
    first: dict[str, list[Any]],
    last: dict[str, list[Any]],
    found: dict[str, StoredEvent],
) -> None:
    profile.first_events = {a: found[s[2]] for a, s in first.items() if s[2] in found}
    profile.last_events = {a: found[s[2]] for a, s in last.items() if s[2] in found}


# -- events and tokens -------------------------------------------------------------------


def stored_event(row: Sequence[Any], workspace: Workspace, decode: Decode) -> StoredEvent:
    """A row of ``EVENT_COLUMNS`` as the read APIs return it."""
    return StoredEvent(
        event_id=row[0],
        event_action=row[1],
        event_time=row[2],
        received_time=row[3],
        user_id=row[4],
        anonymous_id=row[5],
        raw=decode(row[6]),
        profile_id=row[7],
        external_id=row[8],
        email=row[9],
        workspace=workspace,
    )


def token_from_row(row: Sequence[Any], decode: Decode) -> TokenRecord:
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
