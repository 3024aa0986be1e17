"""A read's time budget and the cap on one workspace's readers, on both stores.

An expensive read (a filter on an undeclared property over many events) ends with a
503 that says how to make it cheap; while one workspace's reads hold every reader it
may have, another workspace's reads are still answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from opencdp.app import app_from_environment, create_app
from opencdp.auth import new_token
from opencdp.config import Settings
from opencdp.models import BulkEvent, BulkProfile, EventQuery, ProfileRef, Workspace
from opencdp.store import Store, open_store
from opencdp.store.guarded_reads import ReadLimits, ReadTimedOut, WorkspaceReadsBusy
from tests.conftest import client_for
from tests.read_fixtures import OTHER_BRAND, T0, WS, call, send

pytestmark = pytest.mark.anyio
EXPENSIVE = EventQuery(properties=(("never.declared", "nothing-has-this"),), size=1)


def customers(count: int, events_each: int) -> Iterator[BulkProfile]:
    for n in range(count):
        events = [
            BulkEvent(
                "product_added",
                T0 + n * events_each + i,
                T0 + n * events_each + i,
                {"action": "track", "event": "Product Added", "properties": {"i": i, "n": n}},
            )
            for i in range(events_each)
        ]
        yield BulkProfile(f"u{n}", {"email": f"u{n}@x.com"}, T0, [], events)


async def started(db_url: str, limits: ReadLimits, *, events: int = 0) -> Store:
    store = open_store(db_url, read_limits=limits)
    if events:
        await store.bulk_load(WS, customers(events // 100, 100))
    await store.start()
    await send(
        store, call("identify", user_id="other", traits={"plan": "pro"}), workspace=OTHER_BRAND
    )
    return store


@pytest.fixture
async def limited(anyio_backend: str, db_url: str) -> AsyncIterator[Store]:
    store = await started(db_url, ReadLimits(timeout_ms=1, per_workspace=2), events=20_000)
    try:
        yield store
    finally:
        await store.stop()


async def reader_token(store: Store, workspace: Workspace) -> str:
    text, record = new_token(
        workspace.client_id, [workspace.account_id], [workspace.brand_id], ["read"], now=T0
    )
    await store.add_token(record)
    return text


def app_for(db_url: str, store: Store) -> Starlette:
    return create_app(Settings(db=db_url), store)


async def test_an_expensive_read_ends_at_the_budget(limited: Store) -> None:
    with pytest.raises(ReadTimedOut, match="opencdp properties index"):
        await limited.list_events(WS, EXPENSIVE)
    # the reader is usable afterwards, and so is the budget's connection
    profiles = await limited.find_profiles(OTHER_BRAND, ProfileRef("userId", "other"))
    assert profiles[0].traits["plan"] == "pro"


async def test_an_expensive_read_over_http_is_a_503_naming_the_cure(
    limited: Store, db_url: str
) -> None:
    token = await reader_token(limited, WS)
    async with client_for(app_for(db_url, limited)) as http:
        answer = await http.get(
            "/track/c1/a1/b1/v1/events",
            params={"properties.never.declared": "x", "size": "1"},
            headers={"auth-token": token},
        )
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"]
    error = answer.json()["error"]
    assert error["code"] == "internal_server_error"
    assert "time budget of 1 ms" in error["message"]
    assert "opencdp properties index" in error["message"]


async def test_one_workspace_holding_its_readers_leaves_others_answered(
    anyio_backend: str, db_url: str
) -> None:
    limits = ReadLimits(timeout_ms=60_000, per_workspace=2)
    store = await started(db_url, limits)
    try:
        held = [limits.lane(WS) for _ in range(2)]
        for lane in held:  # the workspace's two readers are taken (as by two slow reads)
            await lane.__aenter__()
        waiting = [asyncio.create_task(store.list_events(WS, EventQuery())) for _ in range(6)]
        for _ in range(10_000):
            if limits.busy(WS) == 8:
                break
            await asyncio.sleep(0)
        assert limits.busy(WS) == 8
        other = await store.find_profiles(OTHER_BRAND, ProfileRef("userId", "other"))
        assert other[0].traits["plan"] == "pro"
        assert not any(task.done() for task in waiting)  # they wait for a lane, not a reader
        for lane in held:
            await lane.__aexit__(None, None, None)
        pages = await asyncio.gather(*waiting)
        assert [page.total for page in pages] == [0] * 6
        assert limits.busy(WS) == 0
    finally:
        await store.stop()


async def test_waiting_for_a_reader_ends_at_the_budget(anyio_backend: str, db_url: str) -> None:
    limits = ReadLimits(timeout_ms=50, per_workspace=1)
    store = await started(db_url, limits)
    try:
        async with limits.lane(WS):
            token = await reader_token(store, WS)
            async with client_for(app_for(db_url, store)) as http:
                answer = await http.get("/track/c1/a1/b1/v1/events", headers={"auth-token": token})
        assert answer.status_code == 503
        assert "runs 1 reads at once" in answer.json()["error"]["message"]
    finally:
        await store.stop()


async def test_postgres_expensive_reads_hold_at_most_the_cap(
    anyio_backend: str, db_url: str
) -> None:
    """Reads blocked inside PostgreSQL (a lock held on events) occupy only the cap's
    connections; the other workspace's traits look-up is answered meanwhile, and the
    blocked reads end with the budget's error."""
    if not db_url.startswith("postgresql"):
        pytest.skip("a lock that blocks only event reads is a PostgreSQL feature")
    import psycopg

    limits = ReadLimits(timeout_ms=3000, per_workspace=2)
    store = await started(db_url, limits)
    try:
        await send(store, call(user_id="someone"))
        async with await psycopg.AsyncConnection.connect(db_url) as locker:
            await locker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            reads = [asyncio.create_task(store.list_events(WS, EventQuery())) for _ in range(6)]
            for _ in range(500):
                if await _waiting_on_lock(locker) >= 2:
                    break
                await asyncio.sleep(0.01)
            other = await store.find_profiles(OTHER_BRAND, ProfileRef("userId", "other"))
            assert other[0].traits["plan"] == "pro"
            assert await _waiting_on_lock(locker) == 2
            results = await asyncio.gather(*reads, return_exceptions=True)
            await locker.rollback()
        assert all(isinstance(r, ReadTimedOut | WorkspaceReadsBusy) for r in results)
        assert sum(isinstance(r, ReadTimedOut) for r in results) >= 2
    finally:
        await store.stop()


async def _waiting_on_lock(locker: Any) -> int:
    """Sessions blocked by ``locker``'s lock right now."""
    cursor = await locker.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
    )
    row = await cursor.fetchone()
    return int(row[0])


def test_settings_reach_the_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENCDP_DB", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("OPENCDP_READ_TIMEOUT_MS", "750")
    monkeypatch.setenv("OPENCDP_WORKSPACE_READS", "3")
    store = app_from_environment().state.services.store
    assert (store.read_limits.timeout_ms, store.read_limits.per_workspace) == (750, 3)
