"""Values a public write token can send that must neither break a read nor lose a batch.

Each test writes through the HTTP APIs (native and Segment-compatible) on both stores,
then reads the data back through every read route: refusals are 400s naming the field,
everything else is stored, and no read answers a 500.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import re
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from opencdp.calls import MAX_INDEXED_LENGTH
from opencdp.models import Call
from opencdp.store.base import Store
from tests.conftest import TRACK, MakeToken
from tests.read_fixtures import WS

pytestmark = pytest.mark.anyio

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
MAX_PAGES = 20  # a scroll in these tests ends well before this; more is a cursor bug
NOW = "2026-01-01T00:00:00Z"
LONG = "".join(hashlib.sha256(str(n).encode()).hexdigest() for n in range(160))  # 10,240


class Client:
    """A write token (native header and Segment's Basic auth) and a read token."""

    def __init__(self, http: httpx.AsyncClient, write: str, read: str) -> None:
        self.http, self.write, self.read = http, write, read

    async def native(self, action: str, body: Any) -> httpx.Response:
        headers = {"auth-token": self.write}
        return await self.http.post(f"{TRACK}/{action}", json=body, headers=headers)

    async def segment(self, kind: str, body: Any, **headers: str) -> httpx.Response:
        basic = base64.b64encode(f"{self.write}:".encode()).decode()
        all_headers = {"Authorization": f"Basic {basic}", **headers}
        if isinstance(body, bytes):
            return await self.http.post(f"/v1/{kind}", content=body, headers=all_headers)
        return await self.http.post(f"/v1/{kind}", json=body, headers=all_headers)

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        response = await self.http.get(
            f"{TRACK}/{path}", params=params, headers={"auth-token": self.read}
        )
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture
async def api(client: httpx.AsyncClient, make_token: MakeToken) -> Client:
    return Client(client, await make_token(), await make_token(scopes=("read",)))


def track(user_id: str = "u1", **fields: Any) -> dict[str, Any]:
    return {"userId": user_id, "event": "Viewed", "timestamp": NOW, **fields}


def as_segment(call: dict[str, Any]) -> dict[str, Any]:
    """The same call as a Segment SDK sends it: the time in ``originalTimestamp``."""
    message = {key: value for key, value in call.items() if key != "timestamp"}
    return {**message, "originalTimestamp": call["timestamp"]}


async def send_each_way(api: Client, call: dict[str, Any], good: dict[str, Any]) -> list[Any]:
    """``call`` through the four write paths (batches also carry ``good``): the answers."""
    batch_item = {"type": "track", **call}
    good_item = {"type": "track", **good}
    return [
        await api.native("track", call),
        await api.native("batch", {"batch": [good_item, batch_item]}),
        await api.segment("track", as_segment(call)),
        await api.segment("batch", {"batch": [as_segment(good_item), as_segment(batch_item)]}),
    ]


async def read_everything(api: Client, user_ids: list[str]) -> list[dict[str, Any]]:
    """Every read route and scroll: each must answer 200; the events they return."""
    events: list[dict[str, Any]] = []
    for sort in ("desc", "asc"):
        events += await scroll(api, "events", sort=sort, size="2")
    for sort in ("activity", "created"):
        profiles = await scroll(api, "profiles", sort=sort, size="2")
        for profile in profiles:
            assert TIME.fullmatch(profile["lastActivityTime"] or "0000-00-00T00:00:00.000Z")
    for user_id in user_ids:
        ref = "userId:" + quote(user_id, safe="")
        meta = await api.get(f"profiles/{ref}/meta")
        for stamped in (*meta["firstEvent"].values(), *meta["lastEvent"].values()):
            events.append(stamped)
        await api.get(f"profiles/{ref}/traits")
        events += await scroll(api, f"profiles/{ref}/events", size="2")
        events += await scroll(api, "events", userId=user_id)
    for event in events:
        assert TIME.fullmatch(event["eventTime"]), event["eventTime"]
        assert TIME.fullmatch(event["receivedTime"]), event["receivedTime"]
        await api.get(f"events/{event['eventId']}")
    return events


async def scroll(api: Client, path: str, **params: str) -> list[dict[str, Any]]:
    page = await api.get(path, **params)
    found: list[dict[str, Any]] = list(page["data"])
    for _ in range(MAX_PAGES):
        if not page["data"]:
            return found
        page = await api.get(path, scrollId=page["scrollId"])
        found += page["data"]
    raise AssertionError(f"{path}: the scroll did not end within {MAX_PAGES} pages")


def assert_refused(response: httpx.Response, field: str) -> None:
    """A single call refused (400 naming ``field``) or a batch item refused, the rest stored."""
    assert response.status_code in (200, 400), response.text
    body = response.json()
    if "eventIds" in body:
        assert body["eventIds"][0] is not None and body["eventIds"][1] is None, body
        [error] = body["errors"]
        assert error["index"] == 1 and error["code"] == "validation_error", error
        message = error["message"]
        assert message.startswith(f"batch[1].{field}:"), message
    else:
        assert response.status_code == 400, response.text
        assert body["error"]["code"] == "validation_error"
        assert body["error"]["message"].startswith(f"{field}:"), body


# -- finding: event times out of range ---------------------------------------------------


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_a_time_outside_years_1_to_9999_is_refused(api: Client, timestamp: str) -> None:
    for response in await send_each_way(api, track(timestamp=timestamp), track("good")):
        assert_refused(response, "timestamp")
    events = await read_everything(api, ["good"])
    assert {e["userId"] for e in events} == {"good"}


@pytest.mark.parametrize(
    ("sent_at", "expected"),
    [("9999-12-31T23:59:59Z", "0001-01-01T00:00:00.000Z"), ("0001-01-01T00:00:00Z", "received")],
)
async def test_skew_correction_stays_within_the_range(
    api: Client, sent_at: str, expected: str
) -> None:
    """A wild ``sentAt`` clamps eventTime to the first moment, or to receivedTime (SPEC §4)."""
    for response in await send_each_way(api, track(sentAt=sent_at), track("good")):
        assert response.status_code == 200, response.text
        assert not response.json().get("errors"), response.text
    events = await read_everything(api, ["u1", "good"])
    skewed = [e for e in events if e["userId"] == "u1"]
    assert len({e["eventId"] for e in skewed}) == 4
    for event in skewed:
        wanted = event["receivedTime"] if expected == "received" else expected
        assert event["eventTime"] == wanted, event


async def test_times_stored_out_of_range_still_read(api: Client, store: Store) -> None:
    """Events stored before the range was enforced read back at the range's ends."""
    now = time.time_ns() // 1_000_000
    for user_id, event_time in (("old", -62_135_647_200_000), ("late", 253_402_351_199_000)):
        raw = {"action": "track", "event": "Viewed", "userId": user_id}
        await store.append_calls(WS, [Call("track", "viewed", user_id, None, event_time, now, raw)])
    events = await read_everything(api, ["old", "late"])
    times = {e["userId"]: e["eventTime"] for e in events}
    assert times == {"old": "0001-01-01T00:00:00.000Z", "late": "9999-12-31T23:59:59.999Z"}


# -- finding: long indexed values ------------------------------------------------------------

LONG_VALUES = [
    ("userId", {"userId": LONG}),
    ("anonymousId", {"anonymousId": LONG}),
    ("messageId", {"messageId": LONG}),
    ("event", {"event": LONG}),
    ("traits.email", {"traits": {"email": LONG}}),
]


def identify(user_id: str, **fields: Any) -> dict[str, Any]:
    return {"userId": user_id, "traits": {"plan": "pro"}, "timestamp": NOW, **fields}


@pytest.mark.parametrize(("field", "change"), LONG_VALUES, ids=[f for f, _ in LONG_VALUES])
async def test_a_long_indexed_value_refuses_only_its_item(
    api: Client, field: str, change: dict[str, Any]
) -> None:
    kind = "identify" if field == "traits.email" else "track"
    make = identify if kind == "identify" else track
    call, good = {**make("long"), **change}, {"type": kind, **make("good")}
    answers = [
        await api.native(kind, call),
        await api.native("batch", {"batch": [good, {"type": kind, **call}]}),
        await api.segment(kind, call),
        await api.segment("batch", {"batch": [good, {"type": kind, **call}]}),
    ]
    for response in answers:
        assert_refused(response, field)
    await read_everything(api, ["good"])
    assert len(await scroll(api, "events", userId="good")) == 2


async def test_the_longest_accepted_values_are_stored_and_found(api: Client) -> None:
    """At the limit, in 4-byte characters, every indexed value fits both stores' indexes."""
    longest = "😀" * MAX_INDEXED_LENGTH
    call = identify(longest, anonymousId=longest[:-1] + "x", traits={"email": longest})
    assert (await api.native("identify", call)).status_code == 200
    event = track(longest, event="e" * MAX_INDEXED_LENGTH, messageId="m" * 200)
    assert (await api.native("track", event)).status_code == 200
    found = await api.get(f"profiles/email:{quote(longest)}/traits")
    assert [p["email"] for p in found["data"]] == [longest]
    events = await read_everything(api, [longest])
    assert {"e" * MAX_INDEXED_LENGTH, "identify"} <= {e.get("eventAction") for e in events}


async def test_concurrent_calls_in_one_commit_group_fail_alone(api: Client) -> None:
    """Long values among concurrent single calls: only those are refused, none is lost."""
    calls = [identify(f"u{n}", traits={"email": LONG if n % 3 == 0 else f"u{n}@x.io"})
             for n in range(30)]
    answers = await asyncio.gather(*(api.native("identify", call) for call in calls))
    for n, response in enumerate(answers):
        if n % 3 == 0:
            assert_refused(response, "traits.email")
        else:
            assert response.status_code == 200, response.text
    stored = await scroll(api, "profiles", size="100")
    assert sorted(p["externalId"] for p in stored) == sorted(f"u{n}" for n in range(30) if n % 3)


# -- finding: NUL in one batch item ------------------------------------------------------------

NUL_ITEMS = [
    ("userId", track("u\x00")),
    ("properties.note", track(properties={"note": "a\x00b"})),
    ("context.k\\u0000", track(context={"k\x00": 1})),
]


@pytest.mark.parametrize(("field", "call"), NUL_ITEMS, ids=[f for f, _ in NUL_ITEMS])
async def test_a_nul_refuses_only_its_item(api: Client, field: str, call: dict[str, Any]) -> None:
    for response in await send_each_way(api, call, track("good")):
        assert_refused(response, field)
        assert "NUL" in response.text
    assert len(await scroll(api, "events", userId="good")) == 2
    events = await read_everything(api, ["good"])
    assert {e["userId"] for e in events} == {"good"}


# -- finding: ids that the Profiles API could not reach ----------------------------------------


@pytest.mark.parametrize("user_id", ["line\nbreak", "tab\tcr\r", "esc\x1b[0m", "end\n", "a/\n/b"])
async def test_every_accepted_user_id_is_reachable(api: Client, user_id: str) -> None:
    assert (await api.native("identify", identify(user_id))).status_code == 200
    ref = "userId:" + quote(user_id, safe="")
    traits = await api.get(f"profiles/{ref}/traits")
    assert traits["externalId"] == user_id
    await read_everything(api, [user_id])


# -- the native group action: the same refusals and reads on every write path ----------------


def group(user_id: str = "u1", **fields: Any) -> dict[str, Any]:
    return {"userId": user_id, "groupId": "acme", "timestamp": NOW, **fields}


async def send_group_each_way(api: Client, call: dict[str, Any]) -> list[Any]:
    """``call`` as a group through the four write paths, batches led by a good group."""
    good, item = {"type": "group", **group("good")}, {"type": "group", **call}
    return [
        await api.native("group", call),
        await api.native("batch", {"batch": [good, item]}),
        await api.segment("group", as_segment(call)),
        await api.segment("batch", {"batch": [as_segment(good), as_segment(item)]}),
    ]


GROUP_REFUSALS = [
    ("groupId", group(groupId="a\x00b")),
    ("groupId", group(groupId=["acme"])),
    ("traits.name", group(traits={"name": "x\x00"})),
    ("userId", group(LONG)),
    ("anonymousId", group(anonymousId=LONG)),
    ("messageId", group(messageId=LONG)),
]


@pytest.mark.parametrize(("field", "call"), GROUP_REFUSALS, ids=[f for f, _ in GROUP_REFUSALS])
async def test_a_hostile_group_refuses_only_its_item(
    api: Client, field: str, call: dict[str, Any]
) -> None:
    for response in await send_group_each_way(api, call):
        assert_refused(response, field)
    assert len(await scroll(api, "events", userId="good")) == 2
    events = await read_everything(api, ["good"])
    assert {e["userId"] for e in events} == {"good"}


async def test_odd_but_valid_group_values_are_stored_and_read(api: Client) -> None:
    """No limit on groupId (not indexed); any text in it and in the ids reads back as sent."""
    user_id = "a/\n/b ü"
    traits = {"name": "Acme\tInc", "nested": {"deep": [None, {"x": LONG}]}}
    call = group(user_id, groupId=LONG + "\n😀", traits=traits)
    for response in await send_group_each_way(api, call):
        assert response.status_code == 200, response.text
        assert not response.json().get("errors"), response.text
    events = await read_everything(api, [user_id, "good"])
    stored = {e["eventId"]: e for e in events if e["userId"] == user_id}
    assert len(stored) == 4
    for event in stored.values():
        assert event["eventAction"] == "group"
        assert event["rawData"]["groupId"] == LONG + "\n😀"
        assert event["rawData"]["traits"] == traits


# -- finding: gzip members after the first ----------------------------------------------------


async def test_data_after_the_first_gzip_member_is_refused(api: Client) -> None:
    first = gzip.compress(json.dumps(track()).encode())
    for body in (first + gzip.compress(b'{"event": "Second"}'), first + b"junk"):
        response = await api.segment(
            "track", body, **{"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_request_error"
        assert "gzip" in response.json()["message"]
    assert (await api.get("events"))["data"] == []


# -- finding: property filters that differed between the stores ------------------------------

PROPERTIES: dict[str, Any] = {
    "text": "x", "digits": "3", "empty": "", "word_null": "null", "bracketed": "[1]",
    "int": 3, "float": 3.0, "half": 2.5, "zero": 0, "negative_zero": -0.0,
    "big_float": 1e16, "big_int": 10_000_000_000_000_000, "tiny": 1e-7, "huge_int": 2**70,
    "yes": True, "no": False, "nothing": None, "list": [1, "a"], "object": {"a": 1},
    "nested": {"deep": None, "n": 1},
}
#: (key, filter value, matches?): one rule on both stores, pinned case by case.
FILTERS = [
    ("text", "x", True), ("digits", "3", True), ("empty", "", True),
    ("word_null", "null", True), ("bracketed", "[1]", True),
    ("int", "3", True), ("int", "3.0", False), ("float", "3.0", True), ("float", "3", False),
    ("half", "2.5", True), ("half", "2.50", False), ("zero", "0", True), ("zero", "0.0", False),
    ("negative_zero", "0.0", True), ("negative_zero", "-0.0", True),
    ("big_float", "1e16", True), ("big_float", "10000000000000000", True),
    ("big_int", "1e16", True), ("big_int", "10000000000000000", True),
    ("big_float", "1e+16", True), ("tiny", "1e-7", True), ("tiny", "0.0000001", True),
    ("huge_int", str(2**70), True), ("yes", "true", True), ("yes", "1", False),
    ("no", "false", True), ("nothing", "null", False), ("nothing", "", False),
    ("list", '[1,"a"]', False), ("list", '[1, "a"]', False), ("list", "1", False),
    ("object", '{"a":1}', False), ("object", '{"a": 1}', False),
    ("nested.deep", "null", False), ("nested.n", "1", True), ("nested", '{"n":1}', False),
    ("missing", "null", False), ("missing", "", False),
]


@pytest.mark.parametrize("declared", [False, True], ids=["scan", "declared index"])
async def test_property_filters_give_one_answer_on_both_stores(
    api: Client, store: Store, declared: bool
) -> None:
    if declared:
        for path in ("big_float", "nothing", "list", "negative_zero", "text"):
            await store.index_property(path)
    call = {**track(), "properties": PROPERTIES}
    assert (await api.native("track", call)).status_code == 200
    wrong = []
    for key, value, matches in FILTERS:
        found = (await api.get("events", **{f"properties.{key}": value}))["data"]
        if bool(found) != matches:
            wrong.append((key, value, matches))
    assert wrong == []
