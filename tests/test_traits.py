"""Trait merge rules: key by key, by event time, independent of arrival order."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from opencdp.traits import fill_traits, merge_traits


def merged(calls: list[tuple[dict[str, Any], list[int]]]) -> dict[str, Any]:
    traits: dict[str, Any] = {}
    stamps: dict[str, list[int]] = {}
    for incoming, stamp in calls:
        merge_traits(traits, stamps, incoming, stamp)
    return traits


def test_newer_key_replaces_older_and_unsent_keys_are_kept() -> None:
    traits = merged([({"a": 1, "b": 1}, [10, 1]), ({"a": 2}, [20, 2])])
    assert traits == {"a": 2, "b": 1}


def test_older_identify_arriving_late_does_not_overwrite() -> None:
    traits = merged([({"a": "new"}, [20, 1]), ({"a": "old", "c": 3}, [10, 2])])
    assert traits == {"a": "new", "c": 3}


def test_equal_event_times_the_later_received_wins() -> None:
    assert merged([({"a": 1}, [10, 5]), ({"a": 2}, [10, 6])]) == {"a": 2}
    assert merged([({"a": 2}, [10, 6]), ({"a": 1}, [10, 5])]) == {"a": 2}


def test_marketing_channels_merge_channel_by_channel() -> None:
    first = {
        "marketingPreferences": {
            "channels": [
                {"channel": "email", "subscribed": True},
                {"channel": "sms", "subscribed": True},
                {"channel": "push", "subscribed": True},
            ]
        }
    }
    second = {"marketingPreferences": {"channels": [{"channel": "sms", "subscribed": False}]}}
    traits = merged([(first, [10, 1]), (second, [20, 2])])
    channels = {c["channel"]: c["subscribed"] for c in traits["marketingPreferences"]["channels"]}
    assert channels == {"email": True, "sms": False, "push": True}


def test_an_older_channel_update_loses_to_a_newer_one() -> None:
    new = {"marketingPreferences": {"channels": [{"channel": "sms", "subscribed": False}]}}
    old = {"marketingPreferences": {"channels": [{"channel": "sms", "subscribed": True}]}}
    traits = merged([(new, [20, 1]), (old, [10, 2])])
    assert traits["marketingPreferences"]["channels"] == [{"channel": "sms", "subscribed": False}]


def test_fill_gives_only_missing_keys() -> None:
    traits: dict[str, Any] = {"a": 1}
    stamps = {"a": [5, 5]}
    fill_traits(traits, stamps, {"a": 9, "b": 2}, {"a": [50, 50], "b": [7, 7]})
    assert traits == {"a": 1, "b": 2}
    assert stamps == {"a": [5, 5], "b": [7, 7]}


def test_fill_adds_missing_channels() -> None:
    traits: dict[str, Any] = {
        "marketingPreferences": {"channels": [{"channel": "sms", "subscribed": False}]}
    }
    donor = {
        "marketingPreferences": {
            "channels": [
                {"channel": "sms", "subscribed": True},
                {"channel": "email", "subscribed": True},
            ]
        }
    }
    fill_traits(traits, {}, donor, {})
    assert traits["marketingPreferences"]["channels"] == [
        {"channel": "email", "subscribed": True},
        {"channel": "sms", "subscribed": False},
    ]


keys = st.sampled_from(["a", "b", "c", "email"])
channel = st.fixed_dictionaries(
    {"channel": st.sampled_from(["email", "sms", "push"]), "subscribed": st.booleans()}
)
trait_values = st.one_of(st.integers(), st.text(max_size=3), st.none())
incoming = st.dictionaries(keys, trait_values, max_size=4) | st.builds(
    lambda chans, extra: {"marketingPreferences": {"channels": chans}, **extra},
    st.lists(channel, max_size=3, unique_by=lambda c: c["channel"]),
    st.dictionaries(keys, trait_values, max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(incoming, min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_every_arrival_order_gives_the_same_traits(calls: list[dict[str, Any]], rnd: Any) -> None:
    times = rnd.sample(range(1, 1000), len(calls))  # distinct event times
    stamped = [(call, [t, 0]) for call, t in zip(calls, times, strict=True)]
    results = {
        repr(sorted(merged(list(order)).items()))
        for order in itertools.permutations(stamped)
    }
    assert len(results) == 1
