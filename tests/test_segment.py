"""Segment's message rules, without HTTP: translation, defaults, traits, gzip, Basic auth."""

from __future__ import annotations

import gzip
from typing import Any

import pytest

from opencdp import errors
from opencdp.api.segment import basic_user, inflate
from opencdp.models import format_millis
from opencdp.segment import parse_message, parse_messages, project_settings, to_native

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SENT = "2026-01-01T00:00:00Z"


def parse(kind: str, body: dict[str, Any]) -> Any:
    return parse_message(kind, body, received_time=NOW, client_ip=None)


def test_write_key_is_dropped_and_everything_else_kept() -> None:
    body = {"userId": "u", "event": "E", "writeKey": "secret", "integrations": {"All": True}}
    call = parse("track", body)
    assert "writeKey" not in call.raw
    assert call.raw["integrations"] == {"All": True}
    assert body["writeKey"] == "secret"  # the message itself is not changed


def test_without_a_timestamp_the_call_happened_when_received() -> None:
    call = parse("track", {"userId": "u", "event": "E"})
    assert call.event_time == NOW
    assert call.raw["timestamp"] == format_millis(NOW)


def test_without_a_timestamp_but_with_sent_at_the_client_clock_does_not_matter() -> None:
    late_clock = "2026-01-01T05:00:00Z"  # the client's clock is five hours ahead
    call = parse("track", {"userId": "u", "event": "E", "sentAt": late_clock})
    assert call.event_time == NOW
    assert call.raw["timestamp"] == late_clock


def test_original_timestamp_stands_in_for_timestamp_and_is_skew_corrected() -> None:
    body = {
        "userId": "u",
        "event": "E",
        "originalTimestamp": "2026-01-01T04:59:00Z",  # a minute before sending, client clock
        "sentAt": "2026-01-01T05:00:00Z",
    }
    assert parse("track", body).event_time == NOW - 60_000


def test_a_timestamp_is_used_as_sent() -> None:
    call = parse("track", {"userId": "u", "event": "E", "timestamp": "2025-06-01T10:00:00Z"})
    assert format_millis(call.event_time) == "2025-06-01T10:00:00.000Z"


def test_identify_traits_merge_context_traits_with_top_level_winning() -> None:
    body = {
        "userId": "u",
        "context": {"traits": {"email": "old@example.com", "plan": "free"}},
        "traits": {"email": "new@example.com"},
    }
    call = parse("identify", body)
    assert call.traits == {"email": "new@example.com", "plan": "free"}
    assert call.raw["context"]["traits"] == {"email": "old@example.com", "plan": "free"}


def test_identify_with_context_traits_only_as_rudderstack_sends() -> None:
    call = parse("identify", {"userId": "u", "context": {"traits": {"plan": "pro"}}})
    assert call.traits == {"plan": "pro"}


def test_identify_without_traits_is_accepted() -> None:
    assert parse("identify", {"userId": "u"}).traits == {}


def test_identify_traits_of_the_wrong_type_are_a_400() -> None:
    with pytest.raises(errors.ValidationFailed, match="^traits: must be an object"):
        parse("identify", {"userId": "u", "traits": ["x"]})


@pytest.mark.parametrize("user_id", ["absent", None])
def test_an_anonymous_identify_belongs_to_the_anonymous_id(user_id: str | None) -> None:
    body: dict[str, Any] = {"anonymousId": "anon-1", "traits": {"plan": "pro"}}
    if user_id != "absent":
        body["userId"] = user_id
    call = parse("identify", body)
    assert (call.user_id, call.anonymous_id) == (None, "anon-1")
    assert call.traits == {"plan": "pro"} and call.event_action == "identify"
    assert set(call.raw) == {"action", "timestamp", *body}
    assert call.raw.get("userId", "absent") == user_id


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"anonymousId": "undefined"}, "userId: required"),
        ({"traits": {}}, "userId: required"),
        ({"anonymousId": "a", "traits": 3}, "traits: must be an object"),
    ],
)
def test_an_identify_without_a_usable_id_is_a_400(body: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.ValidationFailed, match=message):
        parse("identify", body)


def test_group_is_an_event_with_its_traits() -> None:
    call = parse("group", {"userId": "u", "groupId": "g1", "traits": {"name": "Acme"}})
    assert call.event_action == "group" and call.traits is None
    assert call.raw["traits"] == {"name": "Acme"} and call.raw["groupId"] == "g1"


@pytest.mark.parametrize("kind", ["track", "page", "screen"])
def test_properties_are_optional(kind: str) -> None:
    body = {"anonymousId": "a1", "event": "E"} if kind == "track" else {"anonymousId": "a1"}
    assert parse(kind, body).event_action == ("e" if kind == "track" else kind)


def test_a_batch_applies_its_sent_at_and_item_rules() -> None:
    body = {
        "writeKey": "secret",
        "sentAt": "2026-01-01T00:10:00Z",  # the client's clock is ten minutes ahead
        "batch": [
            {"type": "track", "userId": "u", "event": "E", "timestamp": "2026-01-01T00:09:00Z"},
            {"type": "identify", "anonymousId": "a1", "context": {"traits": {"x": 1}}},
            {"type": "page", "userId": "u", "writeKey": "secret"},
            {"event": "no type"},
            "not an object",
        ],
    }
    calls, problems = parse_messages(body, received_time=NOW, client_ip="10.0.0.1")
    track, identify, page, untyped, text = calls
    assert track is not None and track.event_time == NOW - 60_000
    assert identify is not None and identify.user_id is None and identify.traits == {"x": 1}
    assert page is not None and page.event_time == NOW and "writeKey" not in page.raw
    assert untyped is None and text is None
    assert [(p.index, p.message) for p in problems] == [
        (3, "batch[3].type: required"),
        (4, "batch[4]: must be an object (got string)"),
    ]


def test_an_item_sent_at_wins_over_the_batch_one() -> None:
    body = {
        "sentAt": "2026-01-01T00:10:00Z",
        "batch": [{"type": "track", "userId": "u", "event": "E", "sentAt": SENT,
                   "timestamp": "2025-12-31T23:59:00Z"}],
    }
    calls, _ = parse_messages(body, received_time=NOW, client_ip=None)
    assert calls[0] is not None and calls[0].event_time == NOW - 60_000


def test_a_batch_that_is_not_a_list_is_a_400() -> None:
    with pytest.raises(errors.ValidationFailed, match="^batch: must be an array"):
        parse_messages({"batch": {}}, received_time=NOW, client_ip=None)


def test_to_native_does_not_touch_a_message_with_a_timestamp() -> None:
    message = {"userId": "u", "event": "E", "timestamp": SENT}
    assert to_native("track", message, received_time=NOW) == message


def test_project_settings_point_analytics_js_here() -> None:
    settings = project_settings("ocdp_key", "cdp.example:8000", "https")
    assert settings["integrations"] == {
        "Segment.io": {"apiKey": "ocdp_key", "apiHost": "cdp.example:8000/v1", "protocol": "https"}
    }
    assert settings["metrics"] == {"sampleRate": 0} and settings["remotePlugins"] == []


# -- gzip and HTTP Basic -------------------------------------------------------------------


def test_inflate_round_trips() -> None:
    assert inflate(gzip.compress(b'{"a": 1}'), 100) == b'{"a": 1}'


def test_inflate_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"0" * 10_000_000)  # ~10 KB that inflate to 10 MB
    assert len(bomb) < 20_000
    with pytest.raises(errors.PayloadTooLarge):
        inflate(bomb, 1_000_000)
    assert inflate(gzip.compress(b"0" * 1000), 1000) == b"0" * 1000


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"not gzip", "not valid gzip"), (gzip.compress(b"x" * 100, mtime=0)[:20], "truncated")],
    ids=["not-gzip", "truncated"],
)
def test_inflate_rejects_bad_data(data: bytes, message: str) -> None:
    with pytest.raises(errors.InvalidRequest, match=message):
        inflate(data, 1000)


@pytest.mark.parametrize(
    ("header", "user"),
    [
        (None, None),
        ("Basic b2NkcF9rZXk6", "ocdp_key"),  # "ocdp_key:"
        ("basic b2NkcF9rZXk=", "ocdp_key"),  # "ocdp_key", no colon
        ("Basic Og==", None),  # ":": no user name
        ("Bearer abc", None),
    ],
)
def test_basic_user(header: str | None, user: str | None) -> None:
    assert basic_user(header) == user


def test_basic_user_rejects_bad_base64() -> None:
    with pytest.raises(errors.AuthenticationFailed) as raised:
        basic_user("Basic %%%")
    assert raised.value.status == 401
