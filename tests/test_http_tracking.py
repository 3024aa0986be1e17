"""The tracking API over HTTP: the seeds' calls, batch, validation messages, idempotency."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import TRACK, MakeToken

pytestmark = pytest.mark.anyio

IDENTIFY: dict[str, Any] = {
    "userId": "ABC/123",
    "event": "identify",
    "traits": {
        "marketingPreferences": {
            "channels": [
                {"channel": "email", "subscribed": True},
                {"channel": "sms", "subscribed": True},
            ]
        },
        "clientReference": "ABC/123",
        "email": "email@example.com",
        "firstName": "Fred",
        "address": {"houseNumberOrName": "56", "postalCode": "CH1ABC"},
    },
    "context": {"ip": "24.5.68.47"},
    "timestamp": "2019-11-18T13:30:11.444Z",
}
TRACK_CALL: dict[str, Any] = {
    "userId": "ABC/123",
    "event": "Product Added",
    "context": {"page": {"path": "/p-19868604"}, "userAgent": "Mozilla/5.0"},
    "properties": {"name": "Simplygo", "price": "£11.99", "quantity": "1"},
    "timestamp": "2019-11-28T14:31:58.596Z",
}
PAGE: dict[str, Any] = {
    "event": "page",
    "userId": "ABC/123",
    "anonymousId": "14834fb6-e82e-47f9-a7e0-892c45064d89",
    "context": {"page": {"path": "/p-19868604", "title": "Fruugo"}},
    "properties": {"path": "/p-19868604"},
    "timestamp": "2019-11-28T14:50:16.519Z",
}


async def post(
    client: httpx.AsyncClient, action: str, body: Any, token: str, **headers: str
) -> httpx.Response:
    headers = {"auth-token": token, **headers}
    return await client.post(f"{TRACK}/{action}", json=body, headers=headers)


def assert_event_id(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    event_id: str = body["eventId"]
    uuid.UUID(event_id)
    return event_id


@pytest.mark.parametrize(
    ("action", "body"), [("identify", IDENTIFY), ("track", TRACK_CALL), ("page", PAGE)]
)
async def test_seed_calls_answer_an_event_id(
    client: httpx.AsyncClient, make_token: MakeToken, action: str, body: dict[str, Any]
) -> None:
    response = await post(client, action, body, await make_token())
    assert_event_id(response)
    assert response.headers["content-type"] == "application/json"


async def test_screen_and_alias(client: httpx.AsyncClient, make_token: MakeToken) -> None:
    token = await make_token()
    screen = {"anonymousId": "anon-1", "name": "Home", "timestamp": "2024-01-01T00:00:00Z"}
    alias = {"userId": "u-2", "previousId": "anon-1", "timestamp": "2024-01-01T00:00:01Z"}
    assert_event_id(await post(client, "screen", screen, token))
    assert_event_id(await post(client, "alias", alias, token))


async def test_every_call_gets_its_own_event_id(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    token = await make_token()
    ids = {assert_event_id(await post(client, "track", TRACK_CALL, token)) for _ in range(3)}
    assert len(ids) == 3


async def test_batch_stores_the_valid_calls_and_reports_the_rest(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    batch = [
        {**IDENTIFY, "type": "identify"},
        {**TRACK_CALL, "type": "track", "timestamp": "yesterday"},
        {**PAGE, "type": "page"},
    ]
    response = await post(client, "batch", {"batch": batch}, await make_token())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    first, rejected, third = body["eventIds"]
    assert rejected is None
    assert uuid.UUID(first) != uuid.UUID(third)
    [error] = body["errors"]
    assert error["index"] == 1
    assert error["code"] == "validation_error"
    assert "timestamp" in error["message"]


async def test_batch_with_no_valid_call_is_400_with_the_errors(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    batch = [{"type": "track", "userId": "u"}, {"type": "identify", "userId": "u"}]
    response = await post(client, "batch", {"batch": batch}, await make_token())
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "validation_error"
    assert body["message"] == body["error"]["message"]
    assert [e["index"] for e in body["errors"]] == [0, 1]


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("track", {**TRACK_CALL, "timestamp": "28/11/2019"}, "timestamp"),
        ("identify", {**IDENTIFY, "traits": ["not", "an", "object"]}, "traits"),
        ("track", {**TRACK_CALL, "event": 42}, "event"),
        ("track", {k: v for k, v in TRACK_CALL.items() if k != "userId"}, "userId"),
        ("identify", {**IDENTIFY, "userId": "null"}, "userId"),
    ],
)
async def test_validation_errors_name_the_field(
    client: httpx.AsyncClient, make_token: MakeToken, action: str, body: Any, field: str
) -> None:
    response = await post(client, action, body, await make_token())
    assert response.status_code == 400
    payload = response.json()
    assert payload["error"]["code"] == "validation_error"
    assert field in payload["error"]["message"]
    assert payload["success"] is False
    assert payload["message"] == payload["error"]["message"]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe"])
async def test_unusable_bodies_are_invalid_requests(
    client: httpx.AsyncClient, make_token: MakeToken, content: bytes
) -> None:
    response = await client.post(
        f"{TRACK}/track",
        content=content,
        headers={"auth-token": await make_token(), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request_error"


async def test_a_repeated_message_id_answers_the_first_event_id(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    token = await make_token()
    call = {**TRACK_CALL, "messageId": "m-1"}
    first = assert_event_id(await post(client, "track", call, token))
    again = assert_event_id(await post(client, "track", call, token))
    assert again == first


async def test_fifty_concurrent_calls_with_one_message_id_make_one_event(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    token = await make_token()
    call = {**TRACK_CALL, "messageId": "same-message"}
    responses = await asyncio.gather(*(post(client, "track", call, token) for _ in range(50)))
    assert len({assert_event_id(response) for response in responses}) == 1


async def test_message_ids_are_per_workspace(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    token = await make_token(brands=None)
    call = {**TRACK_CALL, "messageId": "m-2"}
    first = assert_event_id(await post(client, "track", call, token))
    other = await client.post(
        "/track/c1/a1/other-brand/v1/track", json=call, headers={"auth-token": token}
    )
    assert assert_event_id(other) != first


# -- group: the native action, a batch item and Segment's /v1/group are one call ----------

DELETE = object()  # in a change: remove the field
GROUP: dict[str, Any] = {
    "userId": "ABC/123",
    "groupId": "acme",
    "traits": {"name": "Acme Inc", "plan": "team"},
    "context": {"ip": "24.5.68.47"},
    "timestamp": "2019-11-28T14:31:58.596Z",
}


async def read_event(client: httpx.AsyncClient, token: str, event_id: str) -> dict[str, Any]:
    response = await client.get(f"{TRACK}/events/{event_id}", headers={"auth-token": token})
    assert response.status_code == 200, response.text
    event: dict[str, Any] = response.json()
    return event


async def test_group_is_stored_as_an_event_with_its_traits(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    token, reader = await make_token(), await make_token(scopes=("read",))
    event_id = assert_event_id(await post(client, "group", GROUP, token))
    event = await read_event(client, reader, event_id)
    assert event["eventAction"] == "group" and event["userId"] == "ABC/123"
    assert event["rawData"] == {"action": "group", **GROUP}
    profile = await client.get(
        f"{TRACK}/profiles/userId:ABC%2F123/traits", headers={"auth-token": reader}
    )
    assert profile.status_code == 200, profile.text
    assert "plan" not in profile.json()  # a group's traits stay on its event


async def test_group_is_the_same_call_natively_in_a_batch_and_from_segment(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    token, reader = await make_token(), await make_token(scopes=("read",))
    native = assert_event_id(await post(client, "group", GROUP, token))
    batch = await post(client, "batch", {"batch": [{"type": "group", **GROUP}]}, token)
    assert batch.status_code == 200, batch.text
    [in_batch] = batch.json()["eventIds"]
    segment = await client.post("/v1/group", json={**GROUP, "writeKey": token})
    from_segment = assert_event_id(segment)
    events = [await read_event(client, reader, i) for i in (native, in_batch, from_segment)]
    kept = ("eventAction", "userId", "anonymousId", "eventTime", "customerId")
    assert len({tuple(event[key] for key in kept) for event in events}) == 1
    assert events[0]["rawData"] == events[2]["rawData"]
    assert events[1]["rawData"] == {"type": "group", **events[0]["rawData"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"groupId": DELETE}, "groupId: required"),
        ({"groupId": None}, "groupId: must be a string (got null)"),
        ({"groupId": 7}, "groupId: must be a string (got integer)"),
        ({"traits": "gold"}, "traits: must be an object (got string)"),
        ({"userId": DELETE}, "userId or anonymousId: one is required"),
        ({"event": "track"}, 'event: must be "group"'),
        ({"timestamp": "today"}, "timestamp: not an ISO-8601 time"),
    ],
)
async def test_a_bad_group_is_a_400_naming_the_field_on_every_path(
    client: httpx.AsyncClient, make_token: MakeToken, change: dict[str, Any], message: str
) -> None:
    token = await make_token()
    call = {k: v for k, v in {**GROUP, **change}.items() if v is not DELETE}
    single = await post(client, "group", call, token)
    assert single.status_code == 400, single.text
    assert single.json()["error"] == {"code": "validation_error", "message": message}
    batch = await post(client, "batch", {"batch": [{"type": "group", **call}]}, token)
    assert batch.status_code == 400, batch.text
    assert batch.json()["errors"][0]["message"] == f"batch[0].{message}"
    segment = await client.post("/v1/group", json={**call, "writeKey": token})
    assert segment.status_code == 400, segment.text
    assert segment.json()["error"]["message"] == message

