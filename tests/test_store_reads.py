"""The store's read methods on a real SQLite file: every parameter, paging, scrolls."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from opencdp.errors import ProfileNotFound
from opencdp.models import (
    MAX_TOTAL,
    BulkEvent,
    BulkProfile,
    EventKey,
    EventQuery,
    ProfileQuery,
    ProfileRef,
    StoredEvent,
)
from opencdp.store.base import Store
from tests.backends import make_store
from tests.paging import pages
from tests.read_fixtures import (
    OTHER_ACCOUNT,
    OTHER_BRAND,
    T0,
    WS,
    call,
    read_all,
    send,
)

pytestmark = pytest.mark.anyio


async def ids(store: Store, **query: object) -> list[str]:
    page = await store.list_events(WS, EventQuery(**query))  # type: ignore[arg-type]
    return [e.event_id for e in page.events]


async def seed(store: Store) -> list[str]:
    """Six events over three customers, eventTimes T0+0..T0+5 (not in arrival order)."""
    return await send(
        store,
        call("identify", user_id="ABC/123", traits={"email": "a@x.com"}, at=T0 + 2),
        call(user_id="ABC/123", at=T0 + 4, properties={"price": 5, "cat": {"id": "c1"}}),
        call("page", user_id="u2", at=T0 + 0, properties={"path": "/home"}),
        call(event="Email Opened", user_id="u2", at=T0 + 5, properties={"price": "5"}),
        call(event="Email Opened", anonymous_id="anon-1", at=T0 + 1, properties={"ok": True}),
        call("page", user_id="ABC/123", at=T0 + 3, properties={"path": "/home"}),
    )


async def test_default_is_newest_first_with_the_full_record(store: Store) -> None:
    e = await seed(store)
    page = await store.list_events(WS, EventQuery())
    assert page.total == 6
    assert [x.event_id for x in page.events] == [e[3], e[1], e[5], e[0], e[4], e[2]]
    first = page.events[1]
    assert (first.event_action, first.user_id, first.external_id) == (
        "product_added",
        "ABC/123",
        "ABC/123",
    )
    assert first.email == "a@x.com" and first.workspace == WS
    assert first.raw["properties"]["price"] == 5 and first.raw["action"] == "track"


async def test_ascending_and_ties(store: Store) -> None:
    e = await send(
        store,
        call(user_id="u", at=T0, received=T0 + 20),
        call(user_id="u", at=T0, received=T0 + 10),
        call(user_id="u", at=T0 - 1, received=T0 + 30),
    )
    assert await ids(store, sort="asc") == [e[2], e[1], e[0]]
    assert await ids(store, sort="desc") == [e[0], e[1], e[2]]


async def test_include_exclude(store: Store) -> None:
    e = await seed(store)
    assert await ids(store, include=("page",)) == [e[5], e[2]]
    assert await ids(store, include=("page", "email_opened"), sort="asc") == [
        e[2],
        e[4],
        e[5],
        e[3],
    ]
    assert await ids(store, exclude=("page", "email_opened")) == [e[1], e[0]]
    assert await ids(store, include=("page", "identify"), exclude=("page",)) == [e[0]]
    assert await ids(store, include=("page",), exclude=("page",)) == []
    page = await store.list_events(WS, EventQuery(include=("page", "email_opened")))
    assert page.total == 4


async def test_time_window(store: Store) -> None:
    e = await seed(store)
    assert await ids(store, start=T0 + 1, end=T0 + 4, sort="asc") == [e[4], e[0], e[5]]
    assert await ids(store, start=T0 + 4) == [e[3], e[1]]
    assert await ids(store, end=T0 + 1) == [e[2]]


async def test_property_filters(store: Store) -> None:
    e = await seed(store)
    assert await ids(store, properties=(("price", "5"),)) == [e[3], e[1]]  # "5" and 5
    assert await ids(store, properties=(("cat.id", "c1"),)) == [e[1]]
    assert await ids(store, properties=(("ok", "true"),)) == [e[4]]
    assert await ids(store, properties=(("path", "/home"),), sort="asc") == [e[2], e[5]]
    both = (("path", "/home"), ("price", "5"))
    assert await ids(store, properties=both) == []
    assert await ids(store, properties=(("path", "/home"),), include=("page",), user_id="u2") == [
        e[2]
    ]


async def test_user_id_keeps_one_customer_and_unknown_is_empty(store: Store) -> None:
    e = await seed(store)
    assert await ids(store, user_id="ABC/123") == [e[1], e[5], e[0]]
    assert await ids(store, user_id="ABC/123", include=("page", "identify")) == [e[5], e[0]]
    page = await store.list_events(WS, EventQuery(user_id="nobody"))
    assert (page.total, page.events) == (0, [])


async def test_from_and_size_page_through(store: Store) -> None:
    e = await seed(store)
    assert await ids(store, size=2) == [e[3], e[1]]
    assert await ids(store, size=2, offset=2) == [e[5], e[0]]
    assert await ids(store, size=2, offset=6) == []
    assert await ids(store, size=1, offset=2, include=("page", "email_opened")) == [e[4]]
    page = await store.list_events(WS, EventQuery(size=2, offset=4))
    assert page.total == 6


async def test_total_is_capped(store: Store) -> None:
    calls = [call(user_id=f"u{i % 7}", at=T0 + i) for i in range(MAX_TOTAL + 25)]
    await send(store, *calls)
    page = await store.list_events(WS, EventQuery(size=5))
    assert page.total == MAX_TOTAL
    assert len(page.events) == 5
    scrolled = await store.list_events(
        WS, replace(EventQuery(size=5), after=EventKey.of(page.events[-1]))
    )
    assert scrolled.total == MAX_TOTAL


@pytest.mark.parametrize("sort", ["asc", "desc"])
@pytest.mark.parametrize("include", [(), ("a", "b")])
async def test_scroll_while_writing_is_exactly_once(
    store: Store, sort: str, include: tuple[str, ...]
) -> None:
    actions = ["a", "b", "c"]
    before = await send(
        store,
        *[
            call(event=actions[i % 3], user_id=f"u{i % 5}", at=T0 + (i * 7919) % 400)
            for i in range(300)
        ],
    )
    wanted = {x for i, x in enumerate(before) if not include or actions[i % 3] in include}
    stop = asyncio.Event()

    async def keep_writing() -> None:
        for i in range(200):  # bounded: new events keep a scroll going
            if stop.is_set():
                return
            await send(store, call(event=actions[i % 3], user_id="w", at=T0 + (i * 31) % 800 - 200))
            await asyncio.sleep(0)

    writer = asyncio.create_task(keep_writing())
    try:
        query = EventQuery(size=17, sort=sort, include=include)  # type: ignore[arg-type]
        seen: list[str] = []
        for _ in pages(300 + 200, 17):  # what was there, and all the writer may add
            page = await store.list_events(WS, query)
            if not page.events:
                break
            seen += [x.event_id for x in page.events]
            query = replace(query, after=EventKey.of(page.events[-1]))
            await asyncio.sleep(0)
    finally:
        stop.set()
        await writer
    assert len(seen) == len(set(seen)), "an event was repeated"
    assert wanted <= set(seen), "an event committed before the scroll was skipped"


async def test_ascending_scroll_later_returns_what_was_committed_since(store: Store) -> None:
    await send(store, call(user_id="u", at=T0))
    query = EventQuery(sort="asc")
    page = await store.list_events(WS, query)
    query = replace(query, after=EventKey.of(page.events[-1]))
    assert (await store.list_events(WS, query)).events == []
    later = await send(store, call(user_id="u", at=T0 + 1))
    assert [e.event_id for e in (await store.list_events(WS, query)).events] == later


async def test_events_of_a_profile(store: Store) -> None:
    e = await seed(store)
    by_user = EventQuery(profile=ProfileRef("userId", "ABC/123"), sort="asc")
    assert [x.event_id for x in (await store.list_events(WS, by_user)).events] == [e[0], e[5], e[1]]
    with pytest.raises(ProfileNotFound):
        await store.list_events(WS, EventQuery(profile=ProfileRef("userId", "nobody")))


async def test_events_of_every_profile_with_an_email_in_one_order(store: Store) -> None:
    e = await send(
        store,
        call("identify", user_id="p1", traits={"email": "same@x.com"}, at=T0),
        call("identify", user_id="p2", traits={"email": "same@x.com"}, at=T0 + 2),
        call(user_id="p1", at=T0 + 3),
        call(user_id="p2", at=T0 + 1),
        call(user_id="p3", at=T0 + 4),
    )
    query = EventQuery(profile=ProfileRef("email", "same@x.com"))
    page = await store.list_events(WS, query)
    assert [x.event_id for x in page.events] == [e[2], e[1], e[3], e[0]]
    assert page.total == 4
    assert await read_all(store, replace(query, size=1)) == [e[2], e[1], e[3], e[0]]


async def test_get_event(store: Store) -> None:
    e = await seed(store)
    event = await store.get_event(WS, e[1])
    assert isinstance(event, StoredEvent) and event.event_action == "product_added"
    assert event.status == "processed"
    assert await store.get_event(WS, "nope") is None
    assert await store.get_event(OTHER_BRAND, e[1]) is None


async def test_other_workspaces_see_nothing(store: Store) -> None:
    e = await seed(store)
    await send(store, call(user_id="ABC/123"), workspace=OTHER_ACCOUNT)
    for workspace in (OTHER_BRAND, OTHER_ACCOUNT):
        page = await store.list_events(workspace, EventQuery(user_id="u2"))
        assert page.events == []
        assert await store.find_profiles(workspace, ProfileRef("email", "a@x.com")) == []
        assert await store.get_event(workspace, e[0]) is None
    assert (await store.list_events(OTHER_BRAND, EventQuery())).total == 0
    assert (await store.list_profiles(OTHER_BRAND, ProfileQuery())).profiles == []
    assert len((await store.list_events(OTHER_ACCOUNT, EventQuery())).events) == 1


# -- profiles -------------------------------------------------------------------------


async def test_every_id_form(store: Store) -> None:
    await seed(store)
    [profile] = await store.find_profiles(WS, ProfileRef("userId", "ABC/123"))
    assert profile.external_id == "ABC/123" and profile.traits == {"email": "a@x.com"}
    assert await store.find_profiles(WS, ProfileRef("id", profile.id)) == [profile]
    assert await store.find_profiles(WS, ProfileRef("email", "a@x.com")) == [profile]
    [anonymous] = await store.find_profiles(WS, ProfileRef("anonymousId", "anon-1"))
    assert anonymous.external_id == "" and anonymous.anonymous_ids == ["anon-1"]
    for ref in (ProfileRef("userId", "ABC"), ProfileRef("email", "b@x.com"), ProfileRef("id", "x")):
        assert await store.find_profiles(WS, ref) == []


async def test_email_matching_two_profiles(store: Store) -> None:
    await send(
        store,
        call("identify", user_id="p1", traits={"email": "same@x.com"}),
        call("identify", user_id="p2", traits={"email": "same@x.com"}),
    )
    found = await store.find_profiles(WS, ProfileRef("email", "same@x.com"))
    assert [p.external_id for p in found] == ["p1", "p2"]


async def test_meta_after_out_of_order_events(store: Store) -> None:
    e = await send(store, call(user_id="u", at=T0 + 10), call(user_id="u", at=T0 + 20))
    late = await send(store, call(user_id="u", at=T0 + 5))
    [profile] = await store.find_profiles(WS, ProfileRef("userId", "u"), with_events=True)
    assert profile.first_events["product_added"].event_id == late[0]
    assert profile.last_events["product_added"].event_id == e[1]
    assert profile.last_activity_time == T0 + 20
    [plain] = await store.find_profiles(WS, ProfileRef("userId", "u"))
    assert plain.first_events == {}


async def test_an_anonymous_profile_merged_into_an_identified_one(store: Store) -> None:
    anon = await send(store, call(event="Viewed", anonymous_id="anon-9", at=T0 + 1))
    [anonymous] = await store.find_profiles(WS, ProfileRef("anonymousId", "anon-9"))
    await send(store, call("identify", user_id="known", traits={"n": 1}, at=T0))
    [known] = await store.find_profiles(WS, ProfileRef("userId", "known"))
    link = await send(store, call("page", user_id="known", anonymous_id="anon-9", at=T0 + 2))
    assert known.id != anonymous.id
    for ref in (ProfileRef("anonymousId", "anon-9"), ProfileRef("id", anonymous.id)):
        [found] = await store.find_profiles(WS, ref)
        assert found.id == known.id
    [merged] = await store.find_profiles(WS, ProfileRef("id", anonymous.id), with_events=True)
    assert merged.anonymous_ids == ["anon-9"]
    assert merged.first_events["viewed"].event_id == anon[0]
    assert merged.last_events["page"].event_id == link[0]
    events = await store.list_events(WS, EventQuery(profile=ProfileRef("userId", "known")))
    assert len(events.events) == 3
    listed = await store.list_profiles(WS, ProfileQuery(sort="created"))
    assert [p.id for p in listed.profiles] == [known.id]  # the merged one is not listed


async def test_merge_within_one_batch_keeps_every_event_on_the_survivor(store: Store) -> None:
    await send(store, call("identify", user_id="known", traits={}, at=T0))
    await send(
        store,
        call(event="Viewed", anonymous_id="anon-b", at=T0 + 1),
        call("page", user_id="known", anonymous_id="anon-b", at=T0 + 2),
    )
    events = await store.list_events(WS, EventQuery(profile=ProfileRef("userId", "known")))
    assert len(events.events) == 3
    assert {e.external_id for e in (await store.list_events(WS, EventQuery())).events} == {"known"}


async def test_profiles_by_activity_then_the_never_active_ones(
    anyio_backend: str, db_url: str
) -> None:
    """Active profiles (latest activity first), then those with no event (newest first),
    every one once, across pages that end inside either part; nothing of a neighbour."""
    store = make_store(db_url)  # loaded before it starts, as bulk loads are

    def loaded(user: str, at: int | None) -> BulkProfile:
        events = [] if at is None else [BulkEvent("page", at, at, {"action": "page"})]
        return BulkProfile(user, {}, created_time=T0, events=events)

    for workspace in (OTHER_BRAND, WS, OTHER_ACCOUNT):
        await store.bulk_load(workspace, [loaded("a1", T0 + 1), loaded("n1", None),
                                          loaded("a2", T0 + 2), loaded("n2", None),
                                          loaded("n3", None)])  # fmt: skip
    await store.start()
    try:
        for size in (1, 2, 3, 5):
            listed = await list_all(store, ProfileQuery(size=size), 5)
            assert listed == ["a2", "a1", "n3", "n2", "n1"], size
    finally:
        await store.stop()


async def list_all(store: Store, query: ProfileQuery, items: int) -> list[str]:
    """The external ids of a whole listing of ``items`` profiles, page after page."""
    seen: list[str] = []
    for _ in pages(items, query.size):
        found = await store.list_profiles(WS, query)
        if not found.profiles:
            break
        seen += [p.external_id for p in found.profiles]
        query = replace(query, after=found.last)
    return seen


async def test_profiles_by_activity(store: Store) -> None:
    await send(
        store,
        call(user_id="old", at=T0),
        call(user_id="new", at=T0 + 50),
        call(user_id="mid", at=T0 + 20),
    )
    page = await store.list_profiles(WS, ProfileQuery(size=2))
    assert [p.external_id for p in page.profiles] == ["new", "mid"]
    rest = await store.list_profiles(WS, ProfileQuery(size=2, after=page.last))
    assert [p.external_id for p in rest.profiles] == ["old"]
    end = await store.list_profiles(WS, ProfileQuery(size=2, after=rest.last))
    assert end.profiles == [] and end.last == rest.last


async def test_created_scroll_picks_up_later_profiles(store: Store) -> None:
    await send(store, *[call(user_id=f"p{i}", at=T0 + 100 - i) for i in range(5)])
    query = ProfileQuery(sort="created", size=2)
    seen: list[str] = []
    for _ in pages(5 + 2, 2):  # and the two written while scrolling
        page = await store.list_profiles(WS, query)
        query = replace(query, after=page.last)
        if not page.profiles:
            break
        seen += [p.external_id for p in page.profiles]
        if len(seen) < 6:
            await send(store, call(user_id=f"late{len(seen)}", at=T0))
    assert seen == ["p0", "p1", "p2", "p3", "p4", "late2", "late4"]
    await send(store, call(user_id="later"))
    page = await store.list_profiles(WS, query)
    assert [p.external_id for p in page.profiles] == ["later"]


async def test_cursor_secret_is_stable_and_per_database(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    secret = await store.cursor_secret()
    assert len(secret) == 32 and secret == await store.cursor_secret()
    same = make_store(db_url)  # another process on the same database
    await same.start()
    try:
        assert await same.cursor_secret() == secret
    finally:
        await same.stop()
    other = make_store(f"sqlite:///{tmp_path / 'other.db'}")
    await other.start()
    try:
        assert await other.cursor_secret() != secret
    finally:
        await other.stop()
