"""The Events API query, as SQL text for either store (only execution differs).

A query becomes one or more *walks* (index ranges: the workspace's time index, one
action's range, one profile's range), each checked against the same filters; several
walks are merged in sort order. ``total`` counts at most ``MAX_TOTAL`` entries per
walk, so every page costs the same at any depth. SQL is written with ``?`` marks;
the PostgreSQL dialect turns them into ``%s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opencdp.models import MAX_TOTAL, EventQuery

EVENT_COLUMNS = (
    "e.event_id, e.action, e.event_time, e.received_time, e.user_id, e.anonymous_id, e.raw,"
    " p.id, p.external_id, coalesce(p.email, '')"
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

    def property_is(self, dotted: str, value: str) -> tuple[str, list[Any]]:
        """``rawData.properties.<dotted>`` equals ``value`` (string compare of the scalar)."""
        keys = dotted.split(".")
        if self.name == "sqlite":
            path = "$.properties" + "".join(f'."{key}"' for key in keys)
            return "(e.raw -> ?) IN (json_quote(?), ?)", [path, value, value]
        return "(e.raw #>> ?::text[]) = ?", [["properties", *keys], value]

    def sql(self, text: str) -> str:
        return text if self.name == "sqlite" else text.replace("?", "%s")


SQLITE = Dialect("sqlite", "CROSS JOIN")
POSTGRES = Dialect("postgres", "JOIN")


@dataclass(frozen=True, slots=True)
class Walk:
    """One index range: the index, and the equality terms that pick the range."""

    index: str
    where: str
    params: list[Any]


def walks(ws: int, query: EventQuery, profile_pks: list[int] | None) -> list[Walk]:
    """The ranges to read: the profiles' (when the query names customers), else by action
    (``include``), else the whole workspace by time."""
    if profile_pks is not None:
        where = "e.workspace_id = ? AND e.profile_pk = ?"
        return [Walk("events_by_profile", where, [ws, pk]) for pk in profile_pks]
    if query.include:
        actions = [a for a in query.include if a not in query.exclude]
        where = "e.workspace_id = ? AND e.action = ?"
        return [Walk("events_by_action", where, [ws, action]) for action in actions]
    return [Walk("events_by_time", "e.workspace_id = ?", [ws])]


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
