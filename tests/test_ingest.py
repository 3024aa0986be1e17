"""Pure tests of tracking-call validation and normalisation (no HTTP)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from opencdp import calls, errors, ingest
from opencdp.identity import PLACEHOLDER_IDS
from opencdp.models import MAX_MILLIS, MIN_MILLIS, BatchItemError, Call, format_millis, to_millis

T0 = "2019-11-18T13:30:11.444Z"
T0_MS = to_millis(datetime(2019, 11, 18, 13, 30, 11, 444000, tzinfo=UTC))
NOW = T0_MS + 3_600_000  # the server clock: one hour after T0
HOUR = 3_600_000
DELETE = object()  # in a mutation: remove the field

VALID: dict[str, dict[str, Any]] = {
    "identify": {"userId": "ABC/123", "event": "identify", "traits": {"email": "a@b.c"}},
    "track": {"userId": "ABC/123", "event": "Product Added", "properties": {"sku": "x"}},
    "page": {"anonymousId": "anon-1", "event": "page", "name": "Home", "properties": {}},
    "screen": {"anonymousId": "anon-1", "event": "screen", "name": "Home"},
    "alias": {"userId": "ABC/123", "previousId": "anon-1"},
    "group": {"userId": "ABC/123", "groupId": "g1", "traits": {"plan": "pro"}},
}


def body_for(action: str, /, **changes: Any) -> dict[str, Any]:
    body = {**copy.deepcopy(VALID[action]), "timestamp": T0}
    for key, value in changes.items():
        if value is DELETE:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def parse(action: str, body: dict[str, Any], client_ip: str | None = "10.0.0.1") -> Call:
    return ingest.parse_call(action, body, received_time=NOW, client_ip=client_ip)


def rejection(action: str, body: dict[str, Any]) -> str:
    with pytest.raises(errors.ValidationFailed) as caught:
        parse(action, body)
    assert caught.value.status == 400 and caught.value.code == "validation_error"
    return caught.value.message


# --- valid calls ------------------------------------------------------------------------


@pytest.mark.parametrize("action", sorted(VALID))
def test_every_valid_call_is_accepted(action: str) -> None:
    call = parse(action, body_for(action))
    assert call.action == action
    assert call.event_time == T0_MS
    assert call.received_time == NOW
    assert call.raw["action"] == action


@pytest.mark.parametrize(
    ("action", "event_action"),
    [
        ("identify", "identify"),
        ("track", "product_added"),
        ("page", "page"),
        ("screen", "screen"),
        ("alias", "alias"),
        ("group", "group"),
    ],
)
def test_event_action_per_call_type(action: str, event_action: str) -> None:
    assert parse(action, body_for(action)).event_action == event_action


def test_identify_fields() -> None:
    body = body_for("identify", anonymousId="anon-9", messageId="m-1")
    call = parse("identify", body)
    assert (call.user_id, call.anonymous_id, call.message_id) == ("ABC/123", "anon-9", "m-1")
    assert call.traits == {"email": "a@b.c"}
    assert call.previous_id is None


def test_alias_sets_previous_id() -> None:
    call = parse("alias", body_for("alias"))
    assert (call.user_id, call.previous_id, call.traits) == ("ABC/123", "anon-1", None)


def test_group_traits_stay_on_the_event_only() -> None:
    call = parse("group", body_for("group"))
    assert call.traits is None
    assert call.raw["traits"] == {"plan": "pro"}


def test_event_optional_for_identify_page_screen() -> None:
    for action in ("identify", "page", "screen"):
        assert parse(action, body_for(action, event=DELETE)).event_action == action


@pytest.mark.parametrize("field", ["anonymousId", "messageId", "context", "properties", "name"])
def test_null_optional_field_counts_as_not_sent(field: str) -> None:
    call = parse("page", body_for("page", userId="u1", **{field: None}))
    assert call.user_id == "u1"


def test_user_id_may_hold_any_character() -> None:
    for user_id in ("ABC/123", "a b", "ü/ö?#%", "x" * calls.MAX_INDEXED_LENGTH):
        assert parse("track", body_for("track", userId=user_id)).user_id == user_id


@pytest.mark.parametrize(
    ("stamp", "millis"),
    [
        ("2019-11-18T13:30:11.444Z", T0_MS),
        ("2019-11-18T13:30:11Z", T0_MS - 444),
        ("2019-11-18T14:30:11.444+01:00", T0_MS),
        ("2019-11-18T13:30:11.4449Z", T0_MS),
        ("2019-11-18T08:30:11.444-05:00", T0_MS),
    ],
)
def test_timestamp_forms(stamp: str, millis: int) -> None:
    assert parse("track", body_for("track", timestamp=stamp)).event_time == millis


# --- every validation error names its field -------------------------------------------

LONG_ID = "x" * (calls.MAX_INDEXED_LENGTH + 1)
NOT_TIME = "timestamp: not an ISO-8601 time"

ERRORS: list[tuple[str, dict[str, Any], str]] = [
    # identify
    ("identify", {"userId": DELETE}, "userId: required"),
    ("identify", {"userId": None}, "userId: must be a string (got null)"),
    ("identify", {"userId": 123}, "userId: must be a string (got integer)"),
    ("identify", {"userId": LONG_ID}, "userId: must be at most 512 characters"),
    ("identify", {"traits": DELETE}, "traits: required"),
    ("identify", {"traits": []}, "traits: must be an object (got array)"),
    ("identify", {"traits": "x"}, "traits: must be an object (got string)"),
    ("identify", {"traits": None}, "traits: must be an object (got null)"),
    ("identify", {"timestamp": DELETE}, "timestamp: required"),
    ("identify", {"event": "track"}, 'event: must be "identify"'),
    ("identify", {"event": 1}, 'event: must be "identify"'),
    ("identify", {"event": "Identify"}, 'event: must be "identify"'),
    ("identify", {"anonymousId": 5}, "anonymousId: must be a string (got integer)"),
    ("identify", {"anonymousId": LONG_ID}, "anonymousId: must be at most 512 characters"),
    ("identify", {"context": []}, "context: must be an object (got array)"),
    ("identify", {"context": {"ip": 4}}, "context.ip: must be a string (got integer)"),
    ("identify", {"messageId": ""}, "messageId: must not be empty"),
    ("identify", {"messageId": 7}, "messageId: must be a string (got integer)"),
    ("identify", {"messageId": "m" * 201}, "messageId: must be at most 200 characters"),
    ("identify", {"sentAt": "yesterday"}, "sentAt: not an ISO-8601 time"),
    # track
    ("track", {"event": DELETE}, "event: required"),
    ("track", {"event": ""}, "event: must not be empty"),
    ("track", {"event": 3}, "event: must be a string (got integer)"),
    ("track", {"event": None}, "event: must be a string (got null)"),
    ("track", {"event": "!!!"}, "event: must contain a letter or digit"),
    ("track", {"properties": [1]}, "properties: must be an object (got array)"),
    ("track", {"properties": "p"}, "properties: must be an object (got string)"),
    ("track", {"userId": DELETE}, "userId or anonymousId: one is required"),
    ("track", {"userId": True}, "userId: must be a string (got boolean)"),
    ("track", {"timestamp": 1574083811444}, NOT_TIME),
    ("track", {"context": "ctx"}, "context: must be an object (got string)"),
    # page and screen
    ("page", {"anonymousId": DELETE}, "userId or anonymousId: one is required"),
    ("page", {"anonymousId": 1.5}, "anonymousId: must be a string (got number)"),
    ("page", {"event": "screen"}, 'event: must be "page"'),
    ("page", {"name": 5}, "name: must be a string (got integer)"),
    ("page", {"properties": 5}, "properties: must be an object (got integer)"),
    ("page", {"timestamp": DELETE}, "timestamp: required"),
    ("screen", {"event": "page"}, 'event: must be "screen"'),
    ("screen", {"anonymousId": DELETE}, "userId or anonymousId: one is required"),
    ("screen", {"name": []}, "name: must be a string (got array)"),
    # alias
    ("alias", {"userId": DELETE}, "userId: required"),
    ("alias", {"previousId": DELETE}, "previousId: required"),
    ("alias", {"previousId": 9}, "previousId: must be a string (got integer)"),
    ("alias", {"previousId": "null"}, "previousId: placeholder id not allowed"),
    ("alias", {"previousId": ""}, "previousId: placeholder id not allowed"),
    ("alias", {"timestamp": "nope"}, NOT_TIME),
    # group
    ("group", {"userId": DELETE}, "userId or anonymousId: one is required"),
    ("group", {"traits": []}, "traits: must be an object (got array)"),
    ("group", {"groupId": 5}, "groupId: must be a string (got integer)"),
    ("group", {"groupId": DELETE}, "groupId: required"),
    ("alias", {"event": "track"}, 'event: must be "alias"'),
    ("group", {"event": "identify"}, 'event: must be "group"'),
]


@pytest.mark.parametrize(("action", "changes", "message"), ERRORS)
def test_validation_error_names_the_field(
    action: str, changes: dict[str, Any], message: str
) -> None:
    assert rejection(action, body_for(action, **changes)) == message


@pytest.mark.parametrize(
    "stamp",
    [
        "2019-11-18T13:30:11.444",  # no zone
        "2019-11-18",
        "18/11/2019 13:30",
        "2019-11-18T25:30:11Z",
        "2019-13-18T13:30:11Z",
        "",
        "now",
        "1574083811444",
    ],
)
def test_timestamp_that_is_not_rfc3339_is_rejected(stamp: str) -> None:
    assert rejection("track", body_for("track", timestamp=stamp)) == NOT_TIME


@pytest.mark.parametrize(
    ("traits", "message"),
    [
        ({"marketingPreferences": []}, "must be an object (got array)"),
        ({"marketingPreferences": None}, "must be an object (got null)"),
        ({"marketingPreferences": {"channels": {}}}, ".channels: must be an array (got object)"),
        (
            {"marketingPreferences": {"channels": [{"channel": "sms"}, 5]}},
            ".channels[1]: must be an object (got integer)",
        ),
        (
            {"marketingPreferences": {"channels": [{"channel": "sms"}, {"channel": 1}]}},
            ".channels[1].channel: must be a string (got integer)",
        ),
        (
            {"marketingPreferences": {"channels": [{"subscribed": True}]}},
            ".channels[0].channel: required",
        ),
        (
            {"marketingPreferences": {"channels": [{"channel": "sms", "subscribed": "yes"}]}},
            ".channels[0].subscribed: must be a boolean (got string)",
        ),
    ],
)
def test_marketing_preferences_errors_name_the_path(traits: dict[str, Any], message: str) -> None:
    got = rejection("identify", body_for("identify", traits=traits))
    separator = "" if message.startswith(".") else ": "
    assert got == f"traits.marketingPreferences{separator}{message}"


def test_marketing_preferences_valid_forms() -> None:
    channels = [{"channel": "email", "subscribed": True}, {"channel": "sms", "extra": 1}]
    traits = {"marketingPreferences": {"channels": channels, "other": "kept"}}
    assert parse("identify", body_for("identify", traits=traits)).traits == traits


def test_marketing_preferences_are_only_checked_on_identify() -> None:
    traits = {"marketingPreferences": "anything"}
    assert parse("group", body_for("group", traits=traits)).raw["traits"] == traits


def test_unknown_action_is_not_found() -> None:
    for action in ("batch", "Track", "delete"):
        with pytest.raises(errors.NotFound):
            parse(action, body_for("track"))


# --- placeholders -------------------------------------------------------------------------

PLACEHOLDERS = sorted(PLACEHOLDER_IDS) + ["", "   ", "NULL", "Undefined", " None ", "GUEST"]


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
@pytest.mark.parametrize("action", ["identify", "track", "page", "alias", "group"])
def test_placeholder_user_id_is_rejected(action: str, placeholder: str) -> None:
    body = body_for(action, userId=placeholder, anonymousId="anon-1")
    assert rejection(action, body) == "userId: placeholder id not allowed"


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
def test_placeholder_anonymous_id_alone_is_rejected(placeholder: str) -> None:
    body = body_for("track", userId=DELETE, anonymousId=placeholder)
    assert rejection("track", body) == "anonymousId: placeholder id not allowed as the only id"


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
def test_placeholder_anonymous_id_beside_user_id_is_dropped(placeholder: str) -> None:
    call = parse("track", body_for("track", anonymousId=placeholder))
    assert call.user_id == "ABC/123"
    assert call.anonymous_id is None
    assert call.raw["anonymousId"] == placeholder


def test_ids_that_merely_contain_placeholder_words_are_fine() -> None:
    for value in ("guest-42", "null0", "00", "anonymous_user"):
        call = parse("track", body_for("track", userId=value, anonymousId=value))
        assert (call.user_id, call.anonymous_id) == (value, value)


# --- clock skew -------------------------------------------------------------------------


def iso(millis: int) -> str:
    moment = datetime.fromtimestamp(millis / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_without_sent_at_the_timestamp_is_the_event_time() -> None:
    future = iso(NOW + 48 * HOUR)
    assert parse("track", body_for("track", timestamp=future)).event_time == NOW + 48 * HOUR


def test_client_clock_behind_is_corrected() -> None:
    # the client's clock is 10 minutes slow: it sent at NOW - 10 min by its own clock
    body = body_for("track", sentAt=iso(NOW - 600_000))
    call = parse("track", body)
    assert call.event_time == T0_MS + 600_000
    assert call.raw["timestamp"] == T0 and call.raw["sentAt"] == iso(NOW - 600_000)


def test_client_clock_ahead_is_corrected() -> None:
    body = body_for("track", sentAt=iso(NOW + 5 * HOUR))
    assert parse("track", body).event_time == T0_MS - 5 * HOUR


def test_corrected_time_up_to_24h_ahead_is_kept() -> None:
    body = body_for("track", timestamp=iso(NOW + 24 * HOUR), sentAt=iso(NOW))
    assert parse("track", body).event_time == NOW + 24 * HOUR


def test_corrected_time_over_24h_ahead_is_clamped_to_received_time() -> None:
    body = body_for("track", timestamp=iso(NOW + 24 * HOUR + 1), sentAt=iso(NOW))
    assert parse("track", body).event_time == NOW


@pytest.mark.parametrize(
    ("stamp", "millis"),
    [("0001-01-01T00:00:00Z", MIN_MILLIS), ("0001-01-01T13:59:59.999+14:00", None),
     ("0001-01-01T14:00:00+14:00", MIN_MILLIS), ("0001-01-01T00:00:00+14:00", None),
     ("9999-12-31T23:59:59.999Z", MAX_MILLIS), ("9999-12-31T23:59:59-14:00", None),
     ("9999-12-31T10:00:00-14:00", None), ("9999-12-31T09:59:59.999-14:00", MAX_MILLIS)],
)
def test_event_times_stay_within_years_1_to_9999_in_utc(stamp: str, millis: int | None) -> None:
    body = body_for("track", timestamp=stamp)
    if millis is None:
        message = rejection("track", body)
        assert message == (
            "timestamp: must be from 0001-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z"
            " once in UTC"
        )
    else:
        assert parse("track", body).event_time == millis


def test_a_wild_sent_at_never_pushes_the_event_time_out_of_range() -> None:
    body = body_for("track", sentAt="9999-12-31T23:59:59Z")
    assert parse("track", body).event_time == MIN_MILLIS
    body = body_for("track", sentAt="0001-01-01T00:00:00+14:00")
    assert parse("track", body).event_time == NOW


@pytest.mark.parametrize(
    ("millis", "text"),
    [(MIN_MILLIS, "0001-01-01T00:00:00.000Z"), (MIN_MILLIS - 1, "0001-01-01T00:00:00.000Z"),
     (-(2**63), "0001-01-01T00:00:00.000Z"), (-1, "1969-12-31T23:59:59.999Z"),
     (T0_MS, T0), (MAX_MILLIS, "9999-12-31T23:59:59.999Z"),
     (2**63 - 1, "9999-12-31T23:59:59.999Z"), (-59_011_459_200_000, "0100-01-01T00:00:00.000Z")],
)
def test_every_stored_time_formats_with_a_four_digit_year(millis: int, text: str) -> None:
    assert format_millis(millis) == text


# --- event action names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Email Opened", "email_opened"),
        ("Product Added", "product_added"),
        ("product_added", "product_added"),
        ("  Order -- Completed!! ", "order_completed"),
        ("checkout.step_2", "checkout_step_2"),
        ("CamelCaseEvent", "camelcaseevent"),
        ("Café Visité", "caf_visit"),
        ("__x__", "x"),
        ("!!!", ""),
        ("", ""),
    ],
)
def test_event_action_name(name: str, expected: str) -> None:
    assert ingest.event_action_name(name) == expected


# --- rawData ----------------------------------------------------------------------------


def test_context_ip_is_filled_when_absent() -> None:
    body = body_for("track")
    call = parse("track", body, client_ip="203.0.113.9")
    assert call.raw["context"] == {"ip": "203.0.113.9"}
    assert "context" not in body  # the caller's dict is untouched


def test_context_ip_is_added_to_a_sent_context() -> None:
    body = body_for("track", context={"locale": "en-GB"})
    call = parse("track", body, client_ip="203.0.113.9")
    assert call.raw["context"] == {"locale": "en-GB", "ip": "203.0.113.9"}
    assert body["context"] == {"locale": "en-GB"}


def test_context_ip_sent_by_the_client_is_kept() -> None:
    body = body_for("track", context={"ip": "24.5.68.47"})
    assert parse("track", body, client_ip="203.0.113.9").raw["context"] == {"ip": "24.5.68.47"}


def test_null_context_or_ip_is_filled() -> None:
    for context in (None, {"ip": None}):
        call = parse("track", body_for("track", context=context), client_ip="203.0.113.9")
        assert call.raw["context"] == {"ip": "203.0.113.9"}


def test_no_client_ip_leaves_context_alone() -> None:
    assert "context" not in parse("track", body_for("track"), client_ip=None).raw


def test_raw_is_the_body_plus_action_and_keeps_unknown_fields() -> None:
    body = body_for("track", integrations={"All": False}, custom=[1, 2], action="spoofed")
    call = parse("track", body, client_ip=None)
    assert call.raw == {**body, "action": "track"}
    assert body["action"] == "spoofed"


# --- batch --------------------------------------------------------------------------------


def batch_item(action: str, /, **changes: Any) -> dict[str, Any]:
    return {"type": action, **body_for(action, **changes)}


def parse_batch(body: dict[str, Any]) -> tuple[list[Call | None], list[BatchItemError]]:
    return ingest.parse_batch(body, received_time=NOW, client_ip="10.0.0.1")


def batch_rejection(body: dict[str, Any]) -> str:
    with pytest.raises(errors.ValidationFailed) as caught:
        parse_batch(body)
    return caught.value.message


def test_batch_with_good_and_bad_items() -> None:
    items = [
        batch_item("identify"),
        batch_item("track", timestamp="soon"),
        "not an object",
        {"userId": "u"},
        batch_item("page"),
        {**batch_item("page"), "type": "merge"},
        batch_item("alias", previousId="undefined"),
    ]
    calls, problems = parse_batch({"batch": items})
    assert [call.action if call else None for call in calls] == [
        "identify",
        None,
        None,
        None,
        "page",
        None,
        None,
    ]
    assert problems == [
        BatchItemError(1, "validation_error", "batch[1].timestamp: not an ISO-8601 time"),
        BatchItemError(2, "validation_error", "batch[2]: must be an object (got string)"),
        BatchItemError(3, "validation_error", "batch[3].type: required"),
        BatchItemError(
            5,
            "validation_error",
            "batch[5].type: must be one of identify, track, page, screen, alias, group"
            ' (got "merge")',
        ),
        BatchItemError(6, "validation_error", "batch[6].previousId: placeholder id not allowed"),
    ]


def test_batch_item_raw_keeps_type_and_gets_action_and_ip() -> None:
    item = batch_item("screen", custom=1)
    calls, _ = parse_batch({"batch": [item]})
    assert calls[0] is not None
    assert calls[0].raw == {**item, "action": "screen", "context": {"ip": "10.0.0.1"}}


def test_batch_of_every_call_type() -> None:
    calls, problems = parse_batch({"batch": [batch_item(action) for action in sorted(VALID)]})
    assert problems == []
    assert [call.action for call in calls if call] == sorted(VALID)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "batch: required"),
        ({"batch": {}}, "batch: must be an array (got object)"),
        ({"batch": None}, "batch: must be an array (got null)"),
        ({"batch": []}, "batch: must hold 1 to 1000 calls (got 0)"),
        ({"batch": [{}] * 1001}, "batch: must hold 1 to 1000 calls (got 1001)"),
        ({"batch": [{}], "sentAt": "later"}, "sentAt: not an ISO-8601 time"),
    ],
)
def test_batch_level_errors(body: dict[str, Any], message: str) -> None:
    assert batch_rejection(body) == message


def test_batch_of_1000_is_accepted() -> None:
    calls, problems = parse_batch({"batch": [batch_item("track")] * 1000})
    assert len(calls) == 1000 and problems == []


def test_batch_sent_at_applies_to_items_without_their_own() -> None:
    own = batch_item("track", sentAt=iso(NOW - 2 * HOUR))
    inherited = batch_item("track")
    calls, _ = parse_batch({"batch": [own, inherited], "sentAt": iso(NOW - HOUR)})
    assert [call.event_time if call else None for call in calls] == [
        T0_MS + 2 * HOUR,
        T0_MS + HOUR,
    ]
    assert calls[1] is not None and "sentAt" not in calls[1].raw


def test_batch_context_is_not_inherited() -> None:
    calls, _ = parse_batch({"batch": [batch_item("track")], "context": {"locale": "fr"}})
    assert calls[0] is not None and calls[0].raw["context"] == {"ip": "10.0.0.1"}


# --- JSON bodies ------------------------------------------------------------------------


def test_decode_json_object() -> None:
    assert ingest.decode_json_object(b' {"a": [1, "\\u00e9\\ud83d\\ude00"]} ') == {"a": [1, "é😀"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "body: must be a JSON object (got an empty body)"),
        (b"  \n", "body: must be a JSON object (got an empty body)"),
        (b"[1]", "body: must be a JSON object (got array)"),
        (b'"text"', "body: must be a JSON object (got string)"),
        (b"null", "body: must be a JSON object (got null)"),
        (b'{"a": "\\ud800"}', "body: malformed JSON (invalid utf-16 surrogate pair)"),
        (b'{"a": "\\ud800\\u0041"}', "body: malformed JSON (invalid utf-16 surrogate pair)"),
        (b'{"a": "\\udc00"}', "body: malformed JSON (invalid utf-16 surrogate pair)"),
        (b'{"a": "\xff"}', "body: not valid UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "body: not valid UTF-8"),
        (b'{"\xc3": 1}', "body: not valid UTF-8"),
        (b"[" * 100_000, "body: JSON nested too deeply"),
    ],
)
def test_decode_json_object_rejects(body: bytes, message: str) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        ingest.decode_json_object(body)
    assert caught.value.message == message
    assert caught.value.code == "invalid_request_error"


@pytest.mark.parametrize(
    "body",
    [b'{"a": 1,', b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1e400}', b'{"a": 1} x', b"{'a': 1}"],
)
def test_malformed_json_is_named_whatever_the_decoder_says(body: bytes) -> None:
    """The detail in brackets is the decoder's own; the answer around it is ours."""
    with pytest.raises(errors.InvalidRequest) as caught:
        ingest.decode_json_object(body)
    assert caught.value.message.startswith("body: malformed JSON (")
    assert caught.value.message.endswith(")") and len(caught.value.message) > 24


def test_no_message_depends_on_msgspec_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    """msgspec rewording its errors (as 0.23 did for bad UTF-8) changes none of ours."""
    decode, convert = msgspec.json.decode, msgspec.convert

    def reworded_decode(data: bytes) -> Any:
        try:
            return decode(data)
        except msgspec.DecodeError:
            raise msgspec.DecodeError("Quelque chose ne va pas") from None

    def reworded_convert(value: Any, target: Any) -> Any:
        try:
            return convert(value, target)
        except msgspec.ValidationError:
            raise msgspec.ValidationError("Ça ne convient pas - at `$.nowhere`") from None

    monkeypatch.setattr(msgspec.json, "decode", reworded_decode)
    monkeypatch.setattr(msgspec, "convert", reworded_convert)
    for body, message in [
        (b'{"a": "\xff"}', "body: not valid UTF-8"),
        (b'{"a": "\\ud800"}', "body: malformed JSON (invalid utf-16 surrogate pair)"),
    ]:
        with pytest.raises(errors.InvalidRequest) as caught:
            ingest.decode_json_object(body)
        assert caught.value.message == message
    traits = {"marketingPreferences": {"channels": [{"channel": "sms", "subscribed": "yes"}]}}
    assert rejection("identify", body_for("identify", traits=traits)) == (
        "traits.marketingPreferences.channels[0].subscribed: must be a boolean (got string)"
    )
    assert rejection("track", body_for("track", timestamp="2019-11-18T13:30:11")) == NOT_TIME
    assert rejection("alias", body_for("alias", previousId=DELETE)) == "previousId: required"


@pytest.mark.parametrize(
    ("action", "changes", "message"),
    [
        ("identify", {"traits": {"email": "e" * 513}}, "traits.email: must be at most 512"),
        ("track", {"event": "E" * 513}, "event: must be at most 512"),
        ("track", {"anonymousId": "a" * 513}, "anonymousId: must be at most 512"),
        ("alias", {"previousId": "p" * 513}, "previousId: must be at most 512"),
    ],
)
def test_indexed_values_are_at_most_512_characters(
    action: str, changes: dict[str, Any], message: str
) -> None:
    assert rejection(action, body_for(action, **changes)).startswith(message)
    at_limit = {k: (v if k != "traits" else {"email": "e" * 512}) for k, v in changes.items()}
    at_limit = {k: v[:512] if isinstance(v, str) else v for k, v in at_limit.items()}
    assert parse(action, body_for(action, **at_limit)).action == action


def test_a_long_email_of_another_type_is_not_indexed_so_not_limited() -> None:
    call = parse("identify", body_for("identify", traits={"email": ["e" * 600]}))
    assert call.traits == {"email": ["e" * 600]}
