"""Declared property indexes, on every store: the same answers with and without them, and
the query plans really use them."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from typing import Any

import pytest

from opencdp.models import EventQuery, PropertyIndex
from opencdp.store.base import Store
from opencdp.store.dialect import property_index
from opencdp.store.event_walks import Filters, count_sql, page_sql, walks
from opencdp.store.postgres import reads as postgres_reads
from opencdp.store.postgres.dialect import POSTGRES
from opencdp.store.postgres.store import PostgresStore
from tests.backends import postgres_schema
from tests.read_fixtures import T0, WS, call, read_all, send

pytestmark = pytest.mark.anyio

# Strings, numbers, booleans, null and objects under plain, dotted and awkward keys.
VALUES: list[Any] = ["GBP", "EUR", 5, "5", 5.5, True, "true", None, {"id": "c1"}, "it's 100%?"]
PATHS = ["currency", "cart.id", "it's", "a?b%c"]
DECLARED = ["currency", "cart.id", "it's", "a?b%c"]
#: 12,800 characters that no index compression shrinks below an index entry's limit.
UNCOMPRESSIBLE = "".join(hashlib.sha256(str(n).encode()).hexdigest() for n in range(200))


def _properties(n: int) -> dict[str, Any]:
    value = VALUES[n % len(VALUES)]
    return {
        "currency": value,
        "cart": {"id": VALUES[(n // 2) % len(VALUES)]},
        "it's": value,
        "a?b%c": "x" if n % 3 else "y",
    }


async def seed(store: Store) -> None:
    actions = itertools.cycle(["Product Added", "Order Completed", "Email Opened"])
    calls = [
        call(event=next(actions), user_id=f"u{n % 4}", at=T0 + n // 3, properties=_properties(n))
        for n in range(90)
    ]
    calls.append(call("page", user_id="u1", at=T0 + 5, properties={"currency": "GBP"}))
    await send(store, *calls)


FILTERS: list[tuple[tuple[str, str], ...]] = [
    (("currency", "GBP"),),
    (("currency", "5"),),  # the number 5 and the string "5"
    (("currency", "5.5"),),
    (("currency", "true"),),  # the boolean and the string
    (("currency", '{"id":"c1"}'),),
    (("currency", "it's 100%?"),),
    (("cart.id", "EUR"),),
    (("it's", "GBP"),),
    (("a?b%c", "y"),),
    (("cart.id", "5"), ("currency", "GBP")),
    (("currency", "GBP"), ("nothing", "GBP")),
    (("currency", "nobody"),),
]
SHAPES: list[dict[str, Any]] = [
    {},
    {"sort": "asc"},
    {"size": 4, "offset": 3},
    {"include": ("product_added", "page")},
    {"exclude": ("order_completed",)},
    {"start": T0 + 5, "end": T0 + 20, "sort": "asc"},
    {"exclude": ("page",), "start": T0 + 3},
    {"user_id": "u1"},
]


async def answers(store: Store) -> list[tuple[int, list[str], list[str]]]:
    """Every filter in every shape: total, the page, and every event by scrolling."""
    found = []
    for properties, shape in itertools.product(FILTERS, SHAPES):
        query = EventQuery(properties=properties, **shape)
        page = await store.list_events(WS, query)
        scrolled = await read_all(store, replace(query, offset=0, size=5))
        found.append((page.total, [e.event_id for e in page.events], scrolled))
    return found


async def test_declared_indexes_change_no_answer(store: Store) -> None:
    await seed(store)
    before = await answers(store)
    assert sum(1 for total, _, _ in before if total) > len(before) // 2  # the filters match
    for path in DECLARED:
        assert await store.index_property(path) is True
    assert await answers(store) == before
    for path in DECLARED:
        assert await store.drop_property_index(path) is True
    assert await answers(store) == before


async def test_declare_list_and_drop(store: Store) -> None:
    assert await store.list_property_indexes() == []
    assert await store.index_property("currency") is True
    assert await store.index_property("cart.id") is True
    assert await store.index_property("currency") is False  # already indexed
    listed = await store.list_property_indexes()
    assert [index.path for index in listed] == ["cart.id", "currency"]
    assert all(isinstance(i, PropertyIndex) and i.created_time > T0 for i in listed)
    assert await store.drop_property_index("currency") is True
    assert await store.drop_property_index("currency") is False
    assert [index.path for index in await store.list_property_indexes()] == ["cart.id"]


async def test_events_stored_after_the_declaration_are_found(store: Store) -> None:
    await store.index_property("currency")
    calls = (call(user_id="u", at=T0 + n, properties={"currency": "GBP"}) for n in range(3))
    ids = await send(store, *calls)
    page = await store.list_events(WS, EventQuery(properties=(("currency", "GBP"),), sort="asc"))
    assert (page.total, [e.event_id for e in page.events]) == (3, ids)


async def test_postgresql_plans_walk_the_declared_index() -> None:
    """The filter's expression is the index's: with sequential scans off, the planner
    reaches the events through the declared index."""
    path = "it's.a?b%c"
    with postgres_schema() as url:
        store = PostgresStore(url)
        await store.start()
        try:
            await send(store, call(user_id="u", properties={"it's": {"a?b%c": "x"}}))
            await store.index_property(path)
            query = EventQuery(properties=((path, "x"),), exclude=("page",))
            async with store.pool.connection() as conn:
                ws = await postgres_reads.workspace_id(conn, WS)
                assert ws is not None
                walk = walks(ws, query, None, {path})[0]
                filters = Filters(POSTGRES, query)
                await conn.execute("SET enable_seqscan = off")
                for sql, params in (count_sql(filters, walk), page_sql(filters, [walk], query)):
                    plan = await postgres_reads.rows(conn, "EXPLAIN " + sql, params)
                    assert property_index(path) in str(plan), plan
            page = await store.list_events(WS, query)
            assert page.total == 1
        finally:
            await store.stop()


async def test_a_long_value_at_a_declared_path_is_stored_and_found(store: Store) -> None:
    """PostgreSQL indexes a prefix: a value far past an index entry's size still goes in,
    without failing the calls written with it, and its filter finds exactly it."""
    await store.index_property("note")
    long = UNCOMPRESSIBLE
    twin = long[:-1] + "x"  # the same indexed prefix, another value
    ids = await send(
        store,
        call(user_id="u", properties={"note": long}),
        call(user_id="u", properties={"note": twin}),
        call(user_id="v", properties={"note": "short"}),
    )
    for value, wanted in ((long, ids[:1]), (twin, ids[1:2]), ("short", ids[2:])):
        page = await store.list_events(WS, EventQuery(properties=(("note", value),)))
        assert [e.event_id for e in page.events] == wanted


async def test_postgresql_rebuilds_indexes_declared_before_the_prefix() -> None:
    """An index of the whole value (as declared before) is rebuilt by the migration."""
    with postgres_schema() as url:
        store = PostgresStore(url)
        await store.start()
        try:
            name, whole = property_index("note"), "(raw #>> ARRAY['properties', 'note'])"
            async with store.pool.connection() as conn:
                await conn.execute(f"DROP INDEX IF EXISTS {name}")
                await conn.execute(
                    f"CREATE INDEX {name} ON events (workspace_id, {whole}, event_time,"
                    " received_time, event_id) INCLUDE (action)"
                )
                await conn.execute("INSERT INTO property_indexes VALUES ('note', 0)")
                await conn.execute("DELETE FROM schema_migrations WHERE version >= 4")
            store.migrate()
            async with store.pool.connection() as conn:  # a second run leaves it as it is
                await conn.execute("DELETE FROM schema_migrations WHERE version >= 4")
            store.migrate()
            await send(store, call(user_id="u", properties={"note": UNCOMPRESSIBLE}))
            query = EventQuery(properties=(("note", UNCOMPRESSIBLE),))
            async with store.pool.connection() as conn:
                definition = await postgres_reads.rows(
                    conn, "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (name,)
                )
                assert '(workspace_id, "left"((raw #>>' in str(definition), definition
                ws = await postgres_reads.workspace_id(conn, WS)
                assert ws is not None
                walk = walks(ws, query, None, {"note"})[0]
                sql, params = count_sql(Filters(POSTGRES, query), walk)
                await conn.execute("SET enable_seqscan = off")
                plan = await postgres_reads.rows(conn, "EXPLAIN " + sql, params)
                assert name in str(plan), plan
            assert (await store.list_events(WS, query)).total == 1
        finally:
            await store.stop()
