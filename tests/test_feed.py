"""The change feed (SPEC §5) on both stores: order, filters, cursors, long poll, positions."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import httpx
import psycopg
import pytest

from opencdp.models import FeedQuery, Workspace
from opencdp.store.base import Store
from opencdp.store.feed import Waiters, end_all_waits
from opencdp.store.postgres.append import PostgresBatch
from opencdp.store.postgres.store import PostgresStore
from tests.backends import postgres_schema
from tests.conftest import ACCOUNT, BRAND, CLIENT, TRACK, MakeToken
from tests.read_fixtures import OTHER_BRAND, T0, WS, call

pytestmark = pytest.mark.anyio

FEED = f"{TRACK}/events/feed"


@pytest.fixture
async def tokens(make_token: MakeToken) -> tuple[str, str]:
    """A writer's and a reader's token for the test workspace."""
    return await make_token(scopes=("write",)), await make_token(scopes=("read",))


async def track(client: httpx.AsyncClient, token: str, event: str, at: str) -> str:
    body = {"userId": "u1", "event": event, "timestamp": at}
    answer = await client.post(f"{TRACK}/track", json=body, headers={"auth-token": token})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["eventId"])


async def feed(client: httpx.AsyncClient, token: str, **params: Any) -> httpx.Response:
    return await client.get(FEED, params=params, headers={"auth-token": token})


async def follow(client: httpx.AsyncClient, token: str, **params: Any) -> tuple[list[str], str]:
    """Every event id the feed has from ``params`` on, following ``next``; the last ``next``."""
    seen: list[str] = []
    while True:
        answer = await feed(client, token, **params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"data", "next"}
        seen += [event["eventId"] for event in body["data"]]
        if not body["data"]:
            return seen, body["next"]
        params = {**params, "after": body["next"]}


async def test_events_come_in_commit_order_late_old_times_included(
    client: httpx.AsyncClient, tokens: tuple[str, str]
) -> None:
    writer, reader = tokens
    times = ["2026-01-05T00:00:00Z", "2019-01-01T00:00:00Z", "2026-01-06T00:00:00Z",
             "2001-01-01T00:00:00Z", "2026-01-01T00:00:00Z"]  # fmt: skip
    sent = [await track(client, writer, f"E{n}", at) for n, at in enumerate(times)]
    seen, _ = await follow(client, reader, size=2)
    assert seen == sent
    answer = (await feed(client, reader, size=1)).json()
    record = answer["data"][0]
    assert record["eventId"] == sent[0] and record["eventAction"] == "e0"
    assert (record["clientId"], record["accountId"], record["brandId"]) == (CLIENT, ACCOUNT, BRAND)


async def test_following_next_loses_nothing_and_repeats_nothing(
    client: httpx.AsyncClient, tokens: tuple[str, str]
) -> None:
    writer, reader = tokens
    first = [await track(client, writer, "A", "2026-01-01T00:00:00Z") for _ in range(3)]
    seen, cursor = await follow(client, reader, size=2)
    assert seen == first
    later = [await track(client, writer, "A", "2020-01-01T00:00:00Z") for _ in range(3)]
    more, _ = await follow(client, reader, after=cursor, size=100)
    assert more == later


async def test_include_and_exclude_filter_by_action(
    client: httpx.AsyncClient, tokens: tuple[str, str]
) -> None:
    writer, reader = tokens
    ids: dict[str, list[str]] = {}
    for event in ("Page Viewed", "Order Completed", "Page Viewed", "Signed Up"):
        ids.setdefault(event, []).append(await track(client, writer, event, "2026-01-01T00:00:00Z"))
    included, cursor = await follow(client, reader, include="page_viewed")
    assert included == ids["Page Viewed"]
    excluded, _ = await follow(client, reader, exclude="page_viewed,signed_up", size=1)
    assert excluded == ids["Order Completed"]
    # the empty answer's cursor moved past the events the filter skipped, and loses nothing
    newer = await track(client, writer, "Page Viewed", "2026-01-01T00:00:00Z")
    assert (await follow(client, reader, include="page_viewed", after=cursor))[0] == [newer]


async def test_after_now_starts_after_the_last_committed_event(
    client: httpx.AsyncClient, tokens: tuple[str, str]
) -> None:
    writer, reader = tokens
    await track(client, writer, "Old", "2026-01-01T00:00:00Z")
    answer = (await feed(client, reader, after="now")).json()
    assert answer["data"] == [] and answer["next"]
    new = await track(client, writer, "New", "2026-01-01T00:00:00Z")
    assert (await follow(client, reader, after=answer["next"]))[0] == [new]


async def test_an_empty_workspace_still_answers_a_cursor(
    client: httpx.AsyncClient, tokens: tuple[str, str]
) -> None:
    writer, reader = tokens
    for params in ({}, {"after": "now"}):
        answer = (await feed(client, reader, **params)).json()
        assert answer["data"] == [] and answer["next"]
        sent = await track(client, writer, "First", "2026-01-01T00:00:00Z")
        assert (await follow(client, reader, after=answer["next"]))[0] == [sent]


async def test_cursors_are_signed_and_bound_to_the_workspace(
    client: httpx.AsyncClient, make_token: MakeToken, tokens: tuple[str, str]
) -> None:
    writer, reader = tokens
    await track(client, writer, "A", "2026-01-01T00:00:00Z")
    cursor = (await feed(client, reader, size=1)).json()["next"]
    altered = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    for bad in (altered, "garbage", "x" * 5000):
        answer = await feed(client, reader, after=bad)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["message"].startswith("after:")
    everywhere = await make_token(scopes=("read",), brands=None)
    other = f"/track/{CLIENT}/{ACCOUNT}/other/v1/events/feed"
    answer = await client.get(other, params={"after": cursor}, headers={"auth-token": everywhere})
    assert answer.status_code == 400, answer.text
    events_scroll = (await client.get(f"{TRACK}/events", headers={"auth-token": reader})).json()
    answer = await feed(client, reader, after=events_scroll["scrollId"])
    assert answer.status_code == 400


@pytest.mark.parametrize(
    "params",
    [
        {"size": "0"}, {"size": "1001"}, {"size": "-1"}, {"size": "ten"}, {"wait": "31"},
        {"wait": "-1"}, {"wait": "0.5x"}, {"after": ""}, {"scrollId": "x"}, {"sort": "asc"},
        {"include": ","}, {"include": ",".join(f"a{n}" for n in range(51))}, {"after\x00": "now"},
    ],
)  # fmt: skip
async def test_bad_parameters_are_refused(
    client: httpx.AsyncClient, tokens: tuple[str, str], params: dict[str, str]
) -> None:
    answer = await feed(client, tokens[1], **params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "validation_error"


async def test_a_repeated_parameter_and_the_bounds(
    client: httpx.AsyncClient, tokens: tuple[str, str]
) -> None:
    reader = tokens[1]
    answer = await client.get(f"{FEED}?size=1&size=2", headers={"auth-token": reader})
    assert answer.status_code == 400
    for size in ("1", "1000"):
        assert (await feed(client, reader, size=size)).status_code == 200


async def test_the_feed_needs_the_read_scope(
    client: httpx.AsyncClient, tokens: tuple[str, str]
) -> None:
    writer, _ = tokens
    assert (await feed(client, writer)).status_code == 403
    assert (await client.get(FEED)).status_code == 401


async def test_a_long_poll_is_answered_within_a_second_of_the_commit(
    client: httpx.AsyncClient, tokens: tuple[str, str]
) -> None:
    writer, reader = tokens
    start = (await feed(client, reader, after="now")).json()["next"]
    waiting = asyncio.ensure_future(feed(client, reader, after=start, wait=10))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    sent = await track(client, writer, "Woken", "2026-01-01T00:00:00Z")
    committed = time.monotonic()
    answer = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - committed < 1.0
    assert [e["eventId"] for e in answer.json()["data"]] == [sent]


async def test_a_long_poll_ignores_events_its_filter_excludes(
    client: httpx.AsyncClient, tokens: tuple[str, str]
) -> None:
    writer, reader = tokens
    waiting = asyncio.ensure_future(feed(client, reader, after="now", wait=10, include="wanted"))
    await asyncio.sleep(0.3)
    await track(client, writer, "Unwanted", "2026-01-01T00:00:00Z")
    await asyncio.sleep(0.3)
    assert not waiting.done()
    sent = await track(client, writer, "Wanted", "2026-01-01T00:00:00Z")
    answer = await asyncio.wait_for(waiting, 5)
    assert [e["eventId"] for e in answer.json()["data"]] == [sent]


async def test_an_empty_long_poll_ends_with_its_wait_and_a_cursor(
    client: httpx.AsyncClient, tokens: tuple[str, str]
) -> None:
    started = time.monotonic()
    answer = await feed(client, tokens[1], wait=1)
    assert 0.9 < time.monotonic() - started < 3
    assert answer.status_code == 200 and answer.json()["data"] == [] and answer.json()["next"]


async def test_a_shutdown_ends_held_long_polls_at_once(
    client: httpx.AsyncClient, tokens: tuple[str, str], store: Store
) -> None:
    waiting = asyncio.ensure_future(feed(client, tokens[1], after="now", wait=20))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    end_all_waits()
    answer = await asyncio.wait_for(waiting, 2)
    assert answer.status_code == 200 and answer.json()["data"] == []
    store.feed_waiters.open()


async def test_waiters_are_bounded() -> None:
    waiters = Waiters(limit=1)
    version = waiters.version(WS)
    held = asyncio.ensure_future(waiters.wait(WS, version, 5))
    await asyncio.sleep(0.05)
    with pytest.raises(Exception, match="too many feed readers"):
        await waiters.wait(WS, version, 5)
    waiters.wake(WS)
    await asyncio.wait_for(held, 1)


async def test_a_wait_is_woken_by_another_process_commit(store: Store, db_url: str) -> None:
    """Another process's commit is not told to this store's observer: the watch (LISTEN
    on PostgreSQL, ``data_version`` on SQLite) must wake the reader."""
    await store.append_calls(WS, [call(user_id="u1")])
    start = (await store.feed(WS, FeedQuery(after=None))).next
    waiting = asyncio.ensure_future(store.feed(WS, FeedQuery(after=start), wait=10))
    await asyncio.sleep(0.5)
    other = make_other_store(db_url)
    await other.start()
    try:
        sent = await other.append_calls(WS, [call(user_id="u2")])
        committed = time.monotonic()
        page = await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - committed < 1.0
        assert [e.event_id for e in page.events] == [sent[0].event_id]
    finally:
        await other.stop()


async def test_a_wait_is_woken_while_the_listener_is_down() -> None:
    """A commit whose notification is lost (the LISTEN connection cut, as by a failover)
    still reaches a waiting reader within a second: the watch polls, and reads again
    when the listener is back."""
    from tests.test_token_verifier import cut_listener

    with postgres_schema() as url:
        store, other = PostgresStore(url), PostgresStore(url)
        await store.start()
        await other.start()
        try:
            await store.append_calls(WS, [call(user_id="u1")])
            start = (await store.feed(WS, FeedQuery(after=None))).next
            waiting = asyncio.ensure_future(store.feed(WS, FeedQuery(after=start), wait=10))
            await asyncio.sleep(0.5)  # the watch has started the listener by now
            await cut_listener(store)
            sent = await other.append_calls(WS, [call(user_id="u2")])
            committed = time.monotonic()
            page = await asyncio.wait_for(waiting, 5)
            assert time.monotonic() - committed < 1.0
            assert [e.event_id for e in page.events] == [sent[0].event_id]
        finally:
            await other.stop()
            await store.stop()


def make_other_store(db_url: str) -> Store:
    from tests.backends import make_store

    return make_store(db_url)


async def test_positions_are_never_reused_after_the_newest_events_are_deleted(
    store: Store, db_url: str
) -> None:
    """A consumer past the deleted events must still see the ones stored after them."""
    await store.append_calls(WS, [call(user_id="u1", at=T0 + n) for n in range(3)])
    page = await store.feed(WS, FeedQuery(after=0))
    assert len(page.events) == 3
    delete = "DELETE FROM events WHERE event_id = ?"
    for event in page.events[1:]:  # the two newest
        if db_url.startswith("sqlite:"):
            with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
                conn.execute(delete, (event.event_id,))
        else:
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute(delete.replace("?", "%s"), (event.event_id,))
    again = await store.append_calls(WS, [call(user_id="u1", at=T0) for _ in range(2)])
    after = await store.feed(WS, FeedQuery(after=page.next))
    assert [e.event_id for e in after.events] == [a.event_id for a in again]


async def test_workspaces_have_feeds_of_their_own(store: Store) -> None:
    mine = await store.append_calls(WS, [call(user_id="u1")])
    await store.append_calls(OTHER_BRAND, [call(user_id="u1")])
    page = await store.feed(WS, FeedQuery(after=0))
    assert [e.event_id for e in page.events] == [mine[0].event_id]
    assert (await store.feed(Workspace("no", "such", "ws"), FeedQuery(after=0))).events == []


async def test_commits_carry_their_positions(store: Store) -> None:
    first = await store.append_calls(WS, [call(user_id="u1"), call(user_id="u2")])
    page = await store.feed(WS, FeedQuery(after=0))
    assert [e.event_id for e in page.events] == [a.event_id for a in first]
    assert page.next >= 2


_RAW_EVENT = (
    "INSERT INTO events (workspace_id, event_id, profile_pk, action, event_time, received_time,"
    " raw, position) VALUES (%s, %s, 0, 'raw', 0, 0, '{}', %s) RETURNING seq"
)


async def test_on_postgres_seq_order_skips_a_late_commit_and_positions_do_not() -> None:
    """Two transactions on one workspace, the first held open while the second commits.

    Negative control: rows ordered by ``seq`` (a sequence, handed out before commit),
    read between the two commits, make a reader skip the first. The write path's
    positions instead make the second transaction wait for the first's commit.
    """
    with postgres_schema() as url:
        store = PostgresStore(url)
        await store.start()
        try:
            await store.append_calls(WS, [call(user_id="seed")])
            start = (await store.feed(WS, FeedQuery(after=None))).next
            ws = store._workspaces[WS]
            first, second, reader = [await psycopg.AsyncConnection.connect(url) for _ in "abc"]
            await reader.set_autocommit(True)
            try:
                # the negative control, in a workspace of its own: order by seq
                control = ws + 1000
                one = await (await first.execute(_RAW_EVENT, (control, "late", 1))).fetchone()
                two = await (await second.execute(_RAW_EVENT, (control, "early", 2))).fetchone()
                await second.commit()
                assert one is not None and two is not None and one[0] < two[0]
                by_seq = "SELECT event_id, seq FROM events WHERE workspace_id = %s AND seq > %s"
                seen = await (await reader.execute(by_seq, (control, 0))).fetchall()
                assert [row[0] for row in seen] == ["early"]
                await first.commit()
                after = await (await reader.execute(by_seq, (control, seen[-1][1]))).fetchall()
                assert after == []  # "late" committed below the reader's seq: skipped

                # the write path: the second transaction waits for the first's commit
                batches = [PostgresBatch(c, ws, lambda _: None, lambda _: None)
                           for c in (first, second)]
                held = await batches[0].write([call(user_id="u1")])

                async def write_and_commit() -> str:
                    written = await batches[1].write([call(user_id="u2")])
                    await second.commit()
                    return written[0].event_id

                waiting = asyncio.ensure_future(write_and_commit())
                await asyncio.sleep(0.5)
                assert not waiting.done()  # the workspace's clock row is held until commit
                assert (await store.feed(WS, FeedQuery(after=start))).events == []
                await first.commit()
                later = await asyncio.wait_for(waiting, 5)
                page = await store.feed(WS, FeedQuery(after=start))
                assert [e.event_id for e in page.events] == [held[0].event_id, later]
            finally:
                for conn in (first, second, reader):
                    await conn.close()
        finally:
            await store.stop()
