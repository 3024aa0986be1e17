"""The ingestion contract, on every store: idempotency, identity, trait order."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import pytest

from opencdp.models import EventQuery, ProfileRef, Workspace
from opencdp.store.base import Store
from tests.backends import make_store
from tests.read_fixtures import T0, WS, call

pytestmark = pytest.mark.anyio


async def traits_of(store: Store, user_id: str, workspace: Workspace = WS) -> dict[str, object]:
    [profile] = await store.find_profiles(workspace, ProfileRef("userId", user_id))
    return profile.traits


async def test_identify_order_does_not_change_the_traits(store: Store) -> None:
    identifies = [
        call("identify", user_id="u", at=T0 + 30, traits={"plan": "team", "seats": 5}),
        call("identify", user_id="u", at=T0 + 10, traits={"plan": "free", "city": "Leeds"}),
        call(
            "identify", user_id="u", at=T0 + 20,
            traits={"plan": "pro", "marketingPreferences": {"channels": [
                {"channel": "sms", "subscribed": False}, {"channel": "email", "subscribed": True},
            ]}},
        ),
        call(
            "identify", user_id="u", at=T0 + 5,
            traits={"marketingPreferences": {"channels": [{"channel": "sms", "subscribed": True}]}},
        ),
    ]
    seen = []
    for n, order in enumerate(itertools.permutations(identifies)):
        workspace = Workspace("c1", "a1", f"order{n}")
        for one in order:  # one call per commit, in this order
            await store.append_calls(workspace, [one])
        seen.append(await traits_of(store, "u", workspace))
    assert all(traits == seen[0] for traits in seen)
    assert seen[0] == {
        "plan": "team", "seats": 5, "city": "Leeds",
        "marketingPreferences": {"channels": [
            {"channel": "email", "subscribed": True}, {"channel": "sms", "subscribed": False},
        ]},
    }


async def test_fifty_concurrent_calls_with_one_message_id_store_one_event(store: Store) -> None:
    same = replace(call("track", user_id="u"), message_id="m-1")
    answers = await asyncio.gather(*(store.append_calls(WS, [same]) for _ in range(50)))
    assert len({a[0].event_id for a in answers}) == 1
    assert sum(not a[0].duplicate for a in answers) == 1
    assert (await store.list_events(WS, EventQuery())).total == 1


async def test_a_retry_after_a_restart_is_still_recognised(db_url: str) -> None:
    first = make_store(db_url)
    await first.start()
    [accepted] = await first.append_calls(WS, [replace(call(user_id="u"), message_id="m-7")])
    await first.stop()
    again = make_store(db_url)
    await again.start()
    try:
        [retried] = await again.append_calls(WS, [replace(call(user_id="u"), message_id="m-7")])
        assert retried.event_id == accepted.event_id and retried.duplicate
        assert (await again.list_events(WS, EventQuery())).total == 1
    finally:
        await again.stop()


async def test_a_message_id_is_per_workspace(store: Store) -> None:
    one = replace(call(user_id="u"), message_id="m-1")
    [a] = await store.append_calls(WS, [one])
    [b] = await store.append_calls(Workspace("c1", "a1", "other"), [one])
    assert a.event_id != b.event_id and not b.duplicate


async def test_anonymous_history_moves_to_the_customer_on_identify(store: Store) -> None:
    await store.append_calls(WS, [call("page", anonymous_id="a1", at=T0)])
    await store.append_calls(WS, [call("identify", user_id="u", traits={"n": 1}, at=T0 + 5)])
    await store.append_calls(WS, [call("track", user_id="u", anonymous_id="a1", at=T0 + 9)])
    [profile] = await store.find_profiles(WS, ProfileRef("anonymousId", "a1"))
    assert profile.external_id == "u" and profile.anonymous_ids == ["a1"]
    events = await store.list_events(WS, EventQuery(profile=ProfileRef("userId", "u")))
    assert [e.event_action for e in events.events] == ["product_added", "identify", "page"]
    listed = await store.list_events(WS, EventQuery())
    assert {e.profile_id for e in listed.events} == {profile.id}


async def test_identified_profiles_are_not_merged_through_an_anonymous_id(store: Store) -> None:
    await store.append_calls(WS, [call("identify", user_id="u1", anonymous_id="a", traits={})])
    await store.append_calls(WS, [call("identify", user_id="u2", traits={})])
    await store.append_calls(WS, [call("track", user_id="u2", anonymous_id="a")])
    [first] = await store.find_profiles(WS, ProfileRef("userId", "u1"))
    [second] = await store.find_profiles(WS, ProfileRef("userId", "u2"))
    assert first.id != second.id
    assert first.anonymous_ids == ["a"] and second.anonymous_ids == []
    events = await store.list_events(WS, EventQuery(profile=ProfileRef("userId", "u2")))
    assert [e.event_action for e in events.events] == ["product_added", "identify"]


async def test_an_id_of_a_merged_profile_finds_the_profile_it_went_into(store: Store) -> None:
    """"a" belongs to "old"'s profile; the alias that merges it names only the user ids."""
    await store.append_calls(WS, [call("identify", user_id="old", anonymous_id="a", at=T0)])
    await store.append_calls(WS, [call("identify", user_id="new", at=T0 + 1)])
    await store.append_calls(WS, [call("alias", user_id="new", previous_id="old", at=T0 + 2)])
    await store.append_calls(WS, [call("page", anonymous_id="a", at=T0 + 3)])
    [by_new] = await store.find_profiles(WS, ProfileRef("userId", "new"))
    [by_anonymous] = await store.find_profiles(WS, ProfileRef("anonymousId", "a"))
    assert by_anonymous.id == by_new.id
    events = await store.list_events(WS, EventQuery(profile=ProfileRef("userId", "new")))
    assert [e.event_action for e in events.events] == ["page", "alias", "identify", "identify"]


async def test_alias_merges_two_identified_customers(store: Store) -> None:
    await store.append_calls(WS, [call("identify", user_id="old", traits={"a": 1}, at=T0)])
    await store.append_calls(WS, [call("identify", user_id="new", traits={"b": 2}, at=T0 + 1)])
    await store.append_calls(WS, [call("alias", user_id="new", previous_id="old", at=T0 + 2)])
    [by_old] = await store.find_profiles(WS, ProfileRef("userId", "old"))
    [by_new] = await store.find_profiles(WS, ProfileRef("userId", "new"))
    assert by_old.id == by_new.id and by_new.traits == {"a": 1, "b": 2}
    assert (await store.list_events(WS, EventQuery(profile=ProfileRef("userId", "new")))).total == 3
