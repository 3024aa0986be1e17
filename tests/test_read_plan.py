"""The read plan without a database: the statements a read asks for, in each dialect,
and what it makes of the rows it is sent."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
import pytest

from opencdp.errors import ProfileNotFound
from opencdp.models import EventKey, EventQuery, ProfileRef
from opencdp.store.dialect import Dialect, Statement
from opencdp.store.event_walks import Filters, count_sql, page_sql, walks
from opencdp.store.postgres.dialect import POSTGRES
from opencdp.store.read_plan import ListEvents, Plan, Scope, resolve
from opencdp.store.sqlite.dialect import SQLITE
from tests.read_fixtures import T0, WS

T = TypeVar("T")
DIALECTS = [pytest.param(SQLITE, id="sqlite"), pytest.param(POSTGRES, id="postgres")]
Answer = Callable[[Statement], Sequence[Sequence[Any]]]


def drive(plan: Plan[T], answer: Answer) -> tuple[T, list[Statement]]:
    """Run ``plan`` as a driver does, with ``answer`` giving each statement's rows."""
    statements: list[Statement] = []
    try:
        statement = next(plan)
        while True:
            statements.append(statement)
            statement = plan.send(answer(statement))
    except StopIteration as done:
        return done.value, statements


@pytest.mark.parametrize("d", DIALECTS)
def test_a_reference_leads_through_merges_to_the_live_profile(d: Dialect) -> None:
    merged_into = {7: 9, 9: 12, 12: None}

    def answer(statement: Statement) -> list[tuple[Any, ...]]:
        if "FROM identities" in statement[0]:
            return [(7,)]
        return [(merged_into[statement[1][0]],)]

    pks, statements = drive(resolve(Scope(d, WS, 1), ProfileRef("userId", "u")), answer)
    assert pks == [12]
    assert [params for _, params in statements] == [(1, "user", "u"), (7,), (9,), (12,)]


@pytest.mark.parametrize("d", DIALECTS)
def test_a_merge_cycle_ends_the_walk(d: Dialect) -> None:
    def answer(statement: Statement) -> list[tuple[Any, ...]]:
        if "FROM identities" in statement[0]:
            return [(1,)]
        return [(3 - statement[1][0],)]  # 1 → 2 → 1 …

    pks, statements = drive(resolve(Scope(d, WS, 1), ProfileRef("anonymousId", "a")), answer)
    assert pks == [1]
    assert len(statements) == 1 + 64  # the look-up, then at most 64 hops


@pytest.mark.parametrize("d", DIALECTS)
def test_events_carry_the_workspace_read_and_decoded_raw_data(d: Dialect) -> None:
    raw = {"action": "track", "properties": {"a": 1}}
    stored = msgspec.json.encode(raw).decode() if d is SQLITE else raw
    row = ("e1", "product_added", T0, T0 + 1, "u", None, stored, "p1", "x1", "")

    def answer(statement: Statement) -> list[tuple[Any, ...]]:
        return [(1,)] if statement[0].startswith("SELECT count(*)") else [row]

    page, statements = drive(ListEvents(EventQuery()).plan(Scope(d, WS, 5)), answer)
    assert page.total == 1
    [event] = page.events
    assert (event.event_id, event.raw, event.workspace) == ("e1", raw, WS)
    assert len(statements) == 2  # the total, then the page: no other look-up


@pytest.mark.parametrize("d", DIALECTS)
def test_a_profile_that_is_not_there_is_not_found(d: Dialect) -> None:
    query = EventQuery(profile=ProfileRef("email", "nobody@x.com"))
    with pytest.raises(ProfileNotFound):
        drive(ListEvents(query).plan(Scope(d, WS, 5)), lambda statement: [])
    with pytest.raises(ProfileNotFound):
        ListEvents(query).nothing()


QUERIES = [
    EventQuery(),
    EventQuery(include=("a", "b"), exclude=("b",), start=T0, end=T0 + 5, sort="asc"),
    EventQuery(user_id="u", include=("a",), after=EventKey(T0, T0, "e")),
    EventQuery(properties=(("it's.a?b%c", "x?%"), ("n", "1e16"), ("z", "null"), ("o", "{}"))),
    EventQuery(properties=(("n", "-0.0"),), exclude=("c",)),
]


@pytest.mark.parametrize("query", QUERIES, ids=str)
def test_every_postgresql_mark_has_its_parameter(query: EventQuery) -> None:
    """Keys and values with ``?`` and ``%`` in them leave no stray mark in the SQL."""
    profiles = [1, 2] if query.user_id else None
    ranges = walks(5, query, profiles, {"n"})
    filters = Filters(POSTGRES, query)
    for sql, params in [*(count_sql(filters, walk) for walk in ranges),
                        page_sql(filters, ranges, query)]:
        assert "?" not in sql
        assert len(re.findall("%s", sql)) == len(params)
        assert "%" not in sql.replace("%s", "")


@pytest.mark.parametrize("query", QUERIES[:3], ids=str)
def test_only_the_dialect_parts_differ(query: EventQuery) -> None:
    """Written once: without their marks, index hints, join words and lists of values,
    the statements are the same on both stores."""

    def plain(statement: Statement) -> str:
        sql = re.sub(r"INDEXED BY \w+", "", statement[0].replace("%s", "?"))
        sql = re.sub(r"([\w.]+) (NOT )?IN \((\?, )*\?\)", r"\2\1 ∈ ?", sql)  # SQLite's lists
        sql = re.sub(r"(NOT )?\(([\w.]+) = ANY\(\?\)\)", r"\1\2 ∈ ?", sql)  # PostgreSQL's
        return " ".join(sql.replace("CROSS JOIN", "JOIN").split())

    ranges = walks(5, query, None)
    sqlite, postgres = Filters(SQLITE, query), Filters(POSTGRES, query)
    assert plain(page_sql(sqlite, ranges, query)) == plain(page_sql(postgres, ranges, query))
    for walk in ranges:
        assert plain(count_sql(sqlite, walk)) == plain(count_sql(postgres, walk))
