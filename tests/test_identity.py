"""Identity resolution and the merge guardrails, on the pure identity graph."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from opencdp.identity import (
    ANON,
    MAX_ANONYMOUS_IDS,
    USER,
    IdentityGraph,
    ProfileState,
    Refusal,
    is_placeholder,
)
from opencdp.models import Call


def new_graph() -> IdentityGraph:
    pks = itertools.count(1)
    ids = (f"profile-{n}" for n in itertools.count(1))
    return IdentityGraph({}, {}, lambda: next(pks), lambda: next(ids))


def call(
    action: str,
    user: str | None = None,
    anon: str | None = None,
    *,
    traits: dict[str, Any] | None = None,
    previous: str | None = None,
    at: int = 1000,
) -> Call:
    return Call(
        action=action, event_action=action, user_id=user, anonymous_id=anon,
        event_time=at, received_time=at, raw={"action": action}, traits=traits,
        previous_id=previous,
    )


def profile_of(graph: IdentityGraph, kind: str, value: str) -> ProfileState:
    return graph.profiles[graph.identities[(kind, value)]]


@pytest.mark.parametrize(
    "value", ["", "  ", "null", "NULL", "undefined", "None", "nil", "NaN", "0", "anonymous",
              "Guest", "[object Object]"],
)
def test_placeholders(value: str) -> None:
    assert is_placeholder(value)


@pytest.mark.parametrize("value", ["ABC/123", "00", "guest1", "a"])
def test_real_ids_are_not_placeholders(value: str) -> None:
    assert not is_placeholder(value)


def test_unknown_users_get_a_profile_created_by_the_event() -> None:
    graph = new_graph()
    pk = graph.apply(call("track", "u1"), "e1")
    profile = graph.profiles[pk]
    assert profile.external_id == "u1"
    assert profile.created_by["type"] == "event"
    assert graph.apply(call("identify", "u2", traits={}), "e2") != pk
    assert graph.profiles[graph.identities[(USER, "u2")]].created_by["type"] == "identify"


def test_anonymous_profile_becomes_the_users_when_the_user_has_none() -> None:
    graph = new_graph()
    anon_pk = graph.apply(call("page", anon="a1"), "e1")
    assert graph.apply(call("identify", "u1", "a1", traits={"x": 1}), "e2") == anon_pk
    profile = graph.profiles[anon_pk]
    assert profile.external_id == "u1"
    assert profile.anonymous_ids == ["a1"]
    assert graph.merges == []
    assert graph.identities[(USER, "u1")] == anon_pk
    assert graph.apply(call("track", "u1", at=2000), "e3") == anon_pk  # found by userId alone


def test_anonymous_profile_is_merged_into_an_existing_user_profile() -> None:
    graph = new_graph()
    user_pk = graph.apply(call("identify", "u1", traits={"name": "Ann"}, at=10), "e1")
    anon_pk = graph.apply(call("page", anon="a1", at=5), "e2")
    graph.profiles[anon_pk].traits["city"] = "Leeds"
    graph.profiles[anon_pk].audiences.append("vip")
    assert graph.apply(call("track", "u1", "a1", at=20), "e3") == user_pk
    target = graph.profiles[user_pk]
    assert graph.merges == [(anon_pk, user_pk)]
    assert graph.profiles[anon_pk].merged_into == user_pk
    assert target.traits == {"name": "Ann", "city": "Leeds"}
    assert target.anonymous_ids == ["a1"]
    assert target.audiences == ["vip"]
    assert target.first_events["page"][2] == "e2"
    assert target.last_activity == 20
    assert graph.identities[(ANON, "a1")] == user_pk


def test_guardrail_two_identified_profiles_are_never_merged_by_an_anonymous_id() -> None:
    graph = new_graph()
    first = graph.apply(call("identify", "u1", "a1", traits={}), "e1")
    second = graph.apply(call("identify", "u2", traits={}), "e2")
    assert graph.apply(call("track", "u2", "a1"), "e3") == second
    assert graph.identities[(ANON, "a1")] == first
    assert graph.merges == []
    assert graph.refusals == [Refusal("identified_conflict", "u2", "a1")]


def test_guardrail_new_user_with_an_identified_anonymous_id_gets_its_own_profile() -> None:
    graph = new_graph()
    first = graph.apply(call("identify", "u1", "a1", traits={}), "e1")
    pk = graph.apply(call("track", "u2", "a1"), "e2")
    assert pk != first
    assert graph.profiles[pk].external_id == "u2"
    assert graph.profiles[first].anonymous_ids == ["a1"]
    assert len(graph.refusals) == 1


def test_guardrail_anonymous_id_cap() -> None:
    graph = new_graph()
    pk = graph.apply(call("identify", "u1", traits={}), "e0")
    graph.profiles[pk].anonymous_ids.extend(f"old-{n}" for n in range(MAX_ANONYMOUS_IDS))
    assert graph.apply(call("track", "u1", "one-too-many"), "e1") == pk
    assert (ANON, "one-too-many") not in graph.identities
    assert graph.refusals == [Refusal("anonymous_id_cap", "u1", "one-too-many")]


def test_alias_merges_two_identified_profiles() -> None:
    graph = new_graph()
    old = graph.apply(call("identify", "old-id", traits={"a": 1}), "e1")
    new = graph.apply(call("identify", "new-id", traits={"b": 2}), "e2")
    assert graph.apply(call("alias", "new-id", previous="old-id"), "e3") == new
    assert graph.merges == [(old, new)]
    assert graph.profiles[new].traits == {"b": 2, "a": 1}
    assert graph.identities[(USER, "old-id")] == new


def test_alias_with_unknown_previous_id_records_it() -> None:
    graph = new_graph()
    pk = graph.apply(call("alias", "u1", previous="device-7"), "e1")
    assert profile_of(graph, USER, "device-7").pk == pk
    assert profile_of(graph, ANON, "device-7").pk == pk
    assert graph.profiles[pk].external_id == "u1"


def test_alias_of_an_anonymous_profile_to_a_new_user() -> None:
    graph = new_graph()
    anon = graph.apply(call("page", anon="a9"), "e1")
    pk = graph.apply(call("alias", "u9", previous="a9"), "e2")
    assert pk != anon
    assert graph.merges == [(anon, pk)]
    assert graph.profiles[pk].anonymous_ids == ["a9"]


def test_first_and_last_event_per_action_follow_event_time() -> None:
    graph = new_graph()
    graph.apply(call("track", "u1", at=50), "late")
    graph.apply(call("track", "u1", at=10), "early")
    pk = graph.apply(call("track", "u1", at=30), "middle")
    profile = graph.profiles[pk]
    assert profile.first_events["track"][2] == "early"
    assert profile.last_events["track"][2] == "late"
    assert profile.last_activity == 50


def test_a_merge_keeps_the_earliest_first_and_the_latest_last_event_of_both_profiles() -> None:
    graph = new_graph()
    for at, event_id in ((3, "user-first"), (7, "user-last")):
        user_pk = graph.apply(call("track", "u1", at=at), event_id)
    for at, event_id in ((1, "anon-first"), (9, "anon-last")):
        anon_pk = graph.apply(call("track", anon="a1", at=at), event_id)
    assert graph.apply(call("identify", "u1", "a1", traits={}, at=5), "link") == user_pk
    assert graph.merges == [(anon_pk, user_pk)]
    target = graph.profiles[user_pk]
    assert target.first_events["track"][2] == "anon-first"
    assert target.last_events["track"][2] == "anon-last"
    assert target.last_activity == 9
    assert graph.profiles[anon_pk].anonymous_ids == []  # moved to the profile merged into
