"""How an events query becomes SQL: index walks, the filters on them, the page and total.

A query becomes one or more *walks* (index ranges: the workspace's time index, one
action's range, one profile's range, one value of a declared property index), each
checked against the same filters; several walks are merged in sort order. ``total``
counts at most ``MAX_TOTAL`` entries per walk, so every page costs the same at any
depth. Pure: statements and parameters, in the store's dialect.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from opencdp.models import MAX_TOTAL, EventQuery
from opencdp.store.dialect import Dialect, Statement, property_index

#: The columns ``read_plan.stored_event`` reads (``e``: events, ``p``: their profile).
EVENT_COLUMNS = (
    "e.event_id, e.action, e.event_time, e.received_time, e.user_id, e.anonymous_id, e.raw,"
    " p.id, p.external_id, coalesce(p.email, '')"
)
#: Past this many profiles (one email) a customer's events are not merged per profile
#: (SQLite allows 500 arms in one compound SELECT) but read by time, filtered.
MAX_PROFILE_WALKS = 100
#: The live profiles of one email in a workspace (parameters: workspace id, email).
EMAIL_PROFILES = (
    "SELECT pk FROM profiles WHERE workspace_id = ? AND email = ? AND merged_into IS NULL"
)
_KEY = ("e.event_time", "e.received_time", "e.event_id")


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


def count_sql(filters: Filters, walk: Walk) -> Statement:
    """Matches in one walk, counted up to ``MAX_TOTAL``."""
    where, params = filters.where(walk, keyset=False)
    index = filters.dialect.index(walk.index)
    sql = (
        f"SELECT count(*) FROM (SELECT 1 FROM events e {index}"
        f" WHERE {where} LIMIT {MAX_TOTAL}) AS hits"
    )
    return filters.dialect.statement(sql, params)


def page_sql(filters: Filters, ranges: list[Walk], query: EventQuery) -> Statement:
    """One page: ``offset`` then ``size`` events, every walk merged in the sort order."""
    d = filters.dialect
    profiles = f"{d.join} profiles p ON p.pk = e.profile_pk"
    if len(ranges) == 1:
        where, params = filters.where(ranges[0], keyset=True)
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM events e {d.index(ranges[0].index)} {profiles}"
            f" WHERE {where} ORDER BY {filters.order} LIMIT ? OFFSET ?"
        )
        return d.statement(sql, [*params, query.size, query.offset])
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
    return d.statement(sql, [*params, query.size, query.offset])
