"""The Events and Profiles APIs over HTTP: statuses, auth, isolation, the seeds' calls."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from opencdp.models import Workspace
from opencdp.store.base import Store
from tests.conftest import ACCOUNT, BRAND, CLIENT, TRACK, MakeToken
from tests.paging import pages
from tests.read_fixtures import (
    OTHER_ACCOUNT,
    OTHER_BRAND,
    T0,
    call,
    send,
)

pytestmark = pytest.mark.anyio

JSON_HEADERS = {"content-type": "application/json"}
EVENT_FIELDS = {
    "id", "customerId", "externalId", "userId", "anonymousId", "email", "eventId",
    "eventAction", "eventTime", "receivedTime", "clientId", "accountId", "brandId",
    "source", "rawData",
}  # fmt: skip
IDENTIFY = {
    "userId": "ABC/123",
    "traits": {"email": "email@example.com", "firstName": "Fred"},
    "anonymousId": "14834fb6-e82e-47f9",
    "timestamp": "2019-11-18T13:30:11.444Z",
}
TRACK_CALL = {
    "userId": "ABC/123",
    "event": "Product Added",
    "properties": {"name": "Simplygo", "price": "£11.99", "quantity": 1},
    "timestamp": "2019-11-28T14:31:58.596Z",
}
PAGE = {"anonymousId": "anon-2", "timestamp": "2019-11-28T14:50:16.519Z"}


def path_of(workspace: Workspace) -> str:
    return f"/track/{workspace.client_id}/{workspace.account_id}/{workspace.brand_id}/v1"


@pytest.fixture
async def reader(make_token: MakeToken) -> str:
    return await make_token(scopes=("read",))


@pytest.fixture
async def tracked(client: httpx.AsyncClient, make_token: MakeToken) -> list[str]:
    """The seeds' identify, track and an anonymous page, sent through the tracking API."""
    writer = await make_token(scopes=("write",))
    event_ids = []
    for action, body in (("identify", IDENTIFY), ("track", TRACK_CALL), ("page", PAGE)):
        answer = await client.post(f"{TRACK}/{action}", json=body, headers={"auth-token": writer})
        assert answer.status_code == 200, answer.text
        event_ids.append(answer.json()["eventId"])
    return event_ids


async def get(
    client: httpx.AsyncClient, url: str, token: str | None, **params: Any
) -> httpx.Response:
    headers = dict(JSON_HEADERS)
    if token is not None:
        headers["auth-token"] = token
    return await client.get(url, params=params, headers=headers)


def assert_error(answer: httpx.Response, status: int, code: str, message: str = "") -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert message in body["error"]["message"]


# -- Events API ---------------------------------------------------------------------------


async def test_seed_events_request(
    client: httpx.AsyncClient, reader: str, tracked: list[str]
) -> None:
    answer = await get(client, f"{TRACK}/events", reader)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"total", "scrollId", "data"} and body["total"] == 3
    assert [e["eventId"] for e in body["data"]] == [tracked[2], tracked[1], tracked[0]]
    product = body["data"][1]
    assert set(product) == EVENT_FIELDS
    assert product["eventAction"] == "product_added"
    assert product["eventTime"] == "2019-11-28T14:31:58.596Z"
    assert product["receivedTime"].endswith("Z")
    assert (product["userId"], product["externalId"], product["email"]) == (
        "ABC/123",
        "ABC/123",
        "email@example.com",
    )
    assert product["id"] == product["customerId"]
    assert (product["clientId"], product["accountId"], product["brandId"]) == (
        CLIENT,
        ACCOUNT,
        BRAND,
    )
    assert product["source"] == "API"
    assert product["rawData"] == {
        **TRACK_CALL,
        "action": "track",
        "context": {"ip": "127.0.0.1"},  # the call sent none: the client's address is added
    }
    assert "access-control-allow-origin" not in answer.headers


async def test_filters_over_http(
    client: httpx.AsyncClient, reader: str, tracked: list[str]
) -> None:
    async def event_ids(**params: Any) -> list[str]:
        answer = await get(client, f"{TRACK}/events", reader, **params)
        assert answer.status_code == 200, answer.text
        return [e["eventId"] for e in answer.json()["data"]]

    assert await event_ids(include="Product Added,page") == [tracked[2], tracked[1]]
    assert await event_ids(exclude="page,identify") == [tracked[1]]
    assert await event_ids(start="2019-11-28", end="2019-11-28T14:50:16.519Z") == [tracked[1]]
    assert await event_ids(sort="asc", size=1, **{"from": 1}) == [tracked[1]]
    assert await event_ids(**{"properties.quantity": "1", "properties.name": "Simplygo"}) == [
        tracked[1]
    ]
    assert await event_ids(userId="ABC/123", sort="asc") == tracked[:2]
    assert await event_ids(userId="nobody") == []


async def test_scroll_over_http(client: httpx.AsyncClient, reader: str, store: Store) -> None:
    sent = await send(store, *[call(user_id=f"u{i % 3}", at=T0 + i) for i in range(25)])
    answer = await get(client, f"{TRACK}/events", reader, size=10, sort="asc")
    seen = [e["eventId"] for e in answer.json()["data"]]
    for _ in pages(25 - 10, 10):
        answer = await get(client, f"{TRACK}/events", reader, scrollId=answer.json()["scrollId"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["total"] == 25
        if not answer.json()["data"]:
            break
        seen += [e["eventId"] for e in answer.json()["data"]]
    assert seen == sent
    later = await send(store, call(user_id="u", at=T0 + 100))
    again = await get(client, f"{TRACK}/events", reader, scrollId=answer.json()["scrollId"])
    assert [e["eventId"] for e in again.json()["data"]] == later


async def test_bad_scroll_ids(
    client: httpx.AsyncClient, make_token: MakeToken, tracked: list[str]
) -> None:
    token = await make_token(scopes=("read",), brands=None, accounts=None)
    first = await get(client, f"{TRACK}/events", token, size=1)
    scroll_id = first.json()["scrollId"]
    tampered = scroll_id[:-2] + ("AA" if scroll_id[-2:] != "AA" else "BB")
    assert_error(
        await get(client, f"{TRACK}/events", token, scrollId=tampered),
        400,
        "validation_error",
        "scrollId",
    )
    for other in (OTHER_BRAND, OTHER_ACCOUNT):
        foreign = await get(client, f"{path_of(other)}/events", token, scrollId=scroll_id)
        assert_error(foreign, 400, "validation_error", "scrollId")
    mixed = await get(client, f"{TRACK}/events", token, scrollId=scroll_id, size=5)
    assert_error(mixed, 400, "validation_error", "scrollId: cannot be combined")
    profile_events = await get(
        client, f"{TRACK}/profiles/userId:ABC/123/events", token, scrollId=scroll_id
    )
    assert_error(profile_events, 400, "validation_error", "scrollId")
    listing = await get(client, f"{TRACK}/profiles", token, scrollId=scroll_id)
    assert_error(listing, 400, "validation_error", "scrollId")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "9950", "size": "100"}, "use scrollId"),
        ({"colour": "red"}, "colour: unknown parameter"),
        ({"size": "0"}, "size: "),
        ({"start": "last week"}, "start: "),
        ({"sort": "sideways"}, "sort: "),
    ],
)
async def test_bad_parameters(
    client: httpx.AsyncClient, reader: str, params: dict[str, str], message: str
) -> None:
    assert_error(
        await get(client, f"{TRACK}/events", reader, **params), 400, "validation_error", message
    )


async def test_event_by_id(client: httpx.AsyncClient, reader: str, tracked: list[str]) -> None:
    answer = await get(client, f"{TRACK}/events/{tracked[1]}", reader)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "processed"
    assert set(answer.json()) == EVENT_FIELDS | {"status"}
    assert_error(await get(client, f"{TRACK}/events/nope", reader), 404, "not_found")
    assert_error(
        await get(client, f"{TRACK}/events/{tracked[1]}", reader, x="1"),
        400,
        "validation_error",
        "x:",
    )


# -- Profiles API -------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["userId:ABC/123", "userId:ABC%2F123", "userId%3AABC%2F123"])
async def test_traits_by_user_id_with_a_slash(
    client: httpx.AsyncClient, reader: str, tracked: list[str], ref: str
) -> None:
    answer = await get(client, f"{TRACK}/profiles/{ref}/traits", reader)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["firstName"] == "Fred" and body["externalId"] == "ABC/123" and "id" in body


async def test_every_id_type(client: httpx.AsyncClient, reader: str, tracked: list[str]) -> None:
    traits = (await get(client, f"{TRACK}/profiles/userId:ABC%2F123/traits", reader)).json()
    by_id = await get(client, f"{TRACK}/profiles/id:{traits['id']}/traits", reader)
    assert by_id.json() == traits
    by_anon = await get(client, f"{TRACK}/profiles/anonymousId:14834fb6-e82e-47f9/traits", reader)
    assert by_anon.json() == traits
    by_email = await get(client, f"{TRACK}/profiles/email:email@example.com/traits", reader)
    assert by_email.json() == {"data": [traits]}


async def test_email_naming_two_profiles(
    client: httpx.AsyncClient, reader: str, store: Store
) -> None:
    await send(
        store,
        call("identify", user_id="p1", traits={"email": "same@x.com"}, at=T0),
        call("identify", user_id="p2", traits={"email": "same@x.com"}, at=T0 + 1),
    )
    traits = await get(client, f"{TRACK}/profiles/email:same@x.com/traits", reader)
    assert [p["externalId"] for p in traits.json()["data"]] == ["p1", "p2"]
    events = await get(client, f"{TRACK}/profiles/email:same@x.com/events", reader)
    assert [e["externalId"] for e in events.json()["data"]] == ["p2", "p1"]
    meta = await get(client, f"{TRACK}/profiles/email:same@x.com/meta", reader)
    assert len(meta.json()["data"]) == 2
    audiences = await get(client, f"{TRACK}/profiles/email:same@x.com/audiences", reader)
    assert audiences.json() == {"data": []}


async def test_meta(client: httpx.AsyncClient, reader: str, tracked: list[str]) -> None:
    answer = await get(client, f"{TRACK}/profiles/userId:ABC%2F123/meta", reader)
    assert answer.status_code == 200, answer.text
    meta = answer.json()
    assert meta["firstName"] == "Fred" and meta["externalId"] == "ABC/123"
    assert meta["createdBy"]["type"] == "identify" and meta["createdBy"]["createdTime"].endswith(
        "Z"
    )
    product = meta["firstEvent"]["product_added"]
    assert product["eventId"] == tracked[1] and product["event"] == "Product Added"
    assert product["action"] == "track" and product["eventTime"] == "2019-11-28T14:31:58.596Z"
    assert product["properties"] == TRACK_CALL["properties"]
    assert meta["lastEvent"]["identify"]["eventId"] == tracked[0]
    assert meta["lastActivityTime"] == "2019-11-28T14:31:58.596Z"
    assert meta["anonymousIds"] == ["14834fb6-e82e-47f9"] and meta["audiencesStatic"] == []
    decoded = base64.b64decode(meta["_subscriptionId"]).decode()
    assert decoded == f"{CLIENT}:{ACCOUNT}:{meta['id']}"


async def test_profile_events_and_audiences(
    client: httpx.AsyncClient, reader: str, tracked: list[str]
) -> None:
    url = f"{TRACK}/profiles/userId:ABC/123/events"
    answer = await get(client, url, reader, include="product_added")
    body = answer.json()
    assert set(body) == {"scrollId", "total", "data"} and body["total"] == 1
    assert [e["eventId"] for e in body["data"]] == [tracked[1]]
    more = await get(client, url, reader, scrollId=body["scrollId"])
    assert more.json()["data"] == []
    assert_error(await get(client, url, reader, userId="x"), 400, "validation_error", "userId")
    audiences = await get(client, f"{TRACK}/profiles/userId:ABC/123/audiences", reader)
    assert audiences.json() == {"data": []}


@pytest.mark.parametrize("route", ["traits", "meta", "events", "audiences"])
async def test_profile_errors(
    client: httpx.AsyncClient, reader: str, tracked: list[str], route: str
) -> None:
    malformed = await get(client, f"{TRACK}/profiles/phone:123/{route}", reader)
    assert_error(malformed, 400, "validation_error", "ProfileID must be in format of id_type:id")
    missing = await get(client, f"{TRACK}/profiles/userId:nobody/{route}", reader)
    assert_error(missing, 404, "not_found", "Profile was not found.")


async def test_profile_listing(client: httpx.AsyncClient, reader: str, store: Store) -> None:
    await send(store, *[call(user_id=f"p{i}", at=T0 + 10 - i) for i in range(5)])
    by_activity = await get(client, f"{TRACK}/profiles", reader, size=2)
    assert [p["externalId"] for p in by_activity.json()["data"]] == ["p0", "p1"]
    assert by_activity.json()["data"][0]["lastActivityTime"].endswith("Z")
    answer = await get(client, f"{TRACK}/profiles", reader, sort="created", size=3)
    seen = [p["externalId"] for p in answer.json()["data"]]
    for _ in pages(5 - 3, 3):
        if not answer.json()["data"]:
            break
        answer = await get(client, f"{TRACK}/profiles", reader, scrollId=answer.json()["scrollId"])
        seen += [p["externalId"] for p in answer.json()["data"]]
    assert seen == [f"p{i}" for i in range(5)]
    await send(store, call(user_id="new"))
    later = await get(client, f"{TRACK}/profiles", reader, scrollId=answer.json()["scrollId"])
    assert [p["externalId"] for p in later.json()["data"]] == ["new"]
    assert_error(
        await get(client, f"{TRACK}/profiles", reader, sort="name"), 400, "validation_error", "sort"
    )


# -- rules for every read route -----------------------------------------------------------

READ_ROUTES = [
    "/events",
    "/events/{event}",
    "/profiles",
    "/profiles/userId:ABC/123/traits",
    "/profiles/userId:ABC/123/meta",
    "/profiles/userId:ABC/123/events",
    "/profiles/userId:ABC/123/audiences",
]


@pytest.mark.parametrize("route", READ_ROUTES)
async def test_auth(
    client: httpx.AsyncClient, make_token: MakeToken, tracked: list[str], route: str
) -> None:
    url = TRACK + route.format(event=tracked[1])
    assert_error(await get(client, url, None), 401, "authentication_error")
    assert_error(await get(client, url, "ocdp_unknown_token"), 401, "authentication_error")
    write_only = await make_token(scopes=("write",))
    assert_error(await get(client, url, write_only), 403, "authentication_error")
    other_brand = await make_token(scopes=("read",), brands=("b2",))
    assert_error(await get(client, url, other_brand), 403, "authentication_error")
    ok = await get(client, url, await make_token(scopes=("read",)), headers="x")
    assert_error(ok, 400, "validation_error", "headers: unknown parameter")


@pytest.mark.parametrize("route", READ_ROUTES)
@pytest.mark.parametrize("other", [OTHER_BRAND, OTHER_ACCOUNT], ids=["brand", "account"])
async def test_another_workspace_sees_nothing(
    client: httpx.AsyncClient,
    make_token: MakeToken,
    tracked: list[str],
    route: str,
    other: Workspace,
) -> None:
    token = await make_token(scopes=("read",), accounts=None, brands=None)
    answer = await get(client, path_of(other) + route.format(event=tracked[1]), token)
    if route in ("/events", "/profiles"):
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"] == []
    else:
        assert_error(answer, 404, "not_found")


@pytest.mark.parametrize("route", READ_ROUTES)
async def test_no_cors_and_request_ids(
    client: httpx.AsyncClient, reader: str, tracked: list[str], route: str
) -> None:
    url = TRACK + route.format(event=tracked[1])
    answer = await client.get(url, headers={"auth-token": reader, "origin": "https://shop.example"})
    assert answer.status_code == 200, answer.text
    assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
    assert answer.headers["x-amzn-requestid"] and answer.headers["x-request-id"]
    preflight = await client.options(url, headers={"origin": "https://shop.example"})
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers


async def test_request_over_one_mib_is_413(client: httpx.AsyncClient, reader: str) -> None:
    headers = {"auth-token": reader, "content-type": "application/json"}
    answer = await client.request(
        "GET", f"{TRACK}/events", content=b"x" * (1024 * 1024 + 1), headers=headers
    )
    assert_error(answer, 413, "invalid_request_error")
