"""Read-API query parameters → typed queries: pure, without HTTP."""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest

from opencdp.errors import ValidationFailed
from opencdp.models import EventQuery, ProfileQuery, ProfileRef
from opencdp.queries import (
    PROFILE_ID_FORMAT,
    ScrollRequest,
    parse_event_params,
    parse_no_params,
    parse_profile_list_params,
    parse_profile_ref,
    parse_time,
    property_path,
)

MS_2006 = 1136160000000  # 2006-01-02T00:00:00Z


def invalid(message_start: str) -> AbstractContextManager[pytest.ExceptionInfo[ValidationFailed]]:
    return pytest.raises(ValidationFailed, match=f"^{message_start}")


def test_defaults() -> None:
    assert parse_event_params([]) == EventQuery()
    assert EventQuery().sort == "desc" and EventQuery().size == 100


def test_every_parameter() -> None:
    query = parse_event_params(
        [
            ("include", "page, Product Added"),
            ("exclude", "identify"),
            ("start", "2006-01-02"),
            ("end", "2018-01-02T10:00:00.5+01:00"),
            ("sort", "asc"),
            ("from", "100"),
            ("size", "10"),
            ("properties.campaign_id", "TRIAL"),
            ("properties.a.b", "1"),
            ("userId", "ABC/123"),
        ]
    )
    assert query == EventQuery(
        include=("page", "product_added"),
        exclude=("identify",),
        start=MS_2006,
        end=1514883600500,
        sort="asc",
        offset=100,
        size=10,
        properties=(("a.b", "1"), ("campaign_id", "TRIAL")),
        user_id="ABC/123",
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([("size", "0")], "size: must be an integer from 1 to 100"),
        ([("size", "101")], "size: "),
        ([("size", "ten")], "size: "),
        ([("from", "-1")], "from: "),
        (
            [("from", "9950"), ("size", "100")],
            "from: from \\+ size must be at most 10000; use scrollId",
        ),
        ([("sort", "up")], "sort: must be one of asc, desc"),
        ([("start", "yesterday")], "start: not an ISO-8601"),
        ([("end", "2020-13-01")], "end: not an ISO-8601"),
        ([("start", "2020-01-02"), ("end", "2020-01-01")], "end: must be later than start"),
        ([("include", "page,,identify")], "include: "),
        ([("exclude", "")], "exclude: "),
        ([("properties.", "x")], "properties.: "),
        ([("properties.a..b", "x")], "properties.a..b: "),
        ([("userId", "")], "userId: must not be empty"),
        ([("colour", "red")], "colour: unknown parameter"),
        ([("size", "1"), ("size", "2")], "size: given more than once"),
        (
            [("scrollId", "abc"), ("size", "2")],
            "scrollId: cannot be combined with other parameters \\(size\\)",
        ),
        ([("scrollId", "")], "scrollId: must not be empty"),
    ],
)
def test_bad_parameters_name_themselves(params: list[tuple[str, str]], message: str) -> None:
    with invalid(message):
        parse_event_params(params)


def test_property_paths() -> None:
    assert property_path("properties.cart.coupon") == "cart.coupon"
    assert property_path("properties.it's 100%?") == "it's 100%?"
    for bad in ("properties.a..b", "properties.", 'properties.a"b', "currency"):
        with invalid(f"{bad}: expected properties.<key>"):
            property_path(bad)


def test_user_id_is_unknown_on_a_profiles_events() -> None:
    with invalid("userId: unknown parameter"):
        parse_event_params([("userId", "x")], user_id=False)


def test_scroll_id_alone() -> None:
    assert parse_event_params([("scrollId", "abc")]) == ScrollRequest("abc")
    assert parse_profile_list_params([("scrollId", "abc")]) == ScrollRequest("abc")


def test_from_plus_size_at_the_cap_is_fine() -> None:
    query = parse_event_params([("from", "9900"), ("size", "100")])
    assert isinstance(query, EventQuery) and query.offset == 9900


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2006-01-02", MS_2006),
        ("2006-01-02T00:00:00Z", MS_2006),
        ("2006-01-02T00:00:00.000Z", MS_2006),
        ("2006-01-02T01:00:00+01:00", MS_2006),
        ("2006-01-02T00:00:00", MS_2006),  # no zone: UTC
    ],
)
def test_times(text: str, ms: int) -> None:
    assert parse_time("start", text) == ms


def test_profile_list_params() -> None:
    assert parse_profile_list_params([]) == ProfileQuery()
    assert parse_profile_list_params([("sort", "created"), ("size", "5")]) == ProfileQuery(
        sort="created", size=5
    )
    with invalid("sort: must be one of activity, created"):
        parse_profile_list_params([("sort", "name")])
    with invalid("from: unknown parameter"):
        parse_profile_list_params([("from", "5")])


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("userId:ABC/123", ProfileRef("userId", "ABC/123")),
        ("email:a@example.com", ProfileRef("email", "a@example.com")),
        ("id:4c90b9cf", ProfileRef("id", "4c90b9cf")),
        ("anonymousId:x:y", ProfileRef("anonymousId", "x:y")),
    ],
)
def test_profile_refs(text: str, ref: ProfileRef) -> None:
    assert parse_profile_ref(text) == ref


@pytest.mark.parametrize("text", ["", "userId", "userId:", "phone:123", ":x", "USERID:x"])
def test_malformed_profile_refs(text: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_profile_ref(text)
    assert caught.value.message == PROFILE_ID_FORMAT


def test_no_params() -> None:
    parse_no_params([])
    with invalid("x: unknown parameter"):
        parse_no_params([("x", "1")])
