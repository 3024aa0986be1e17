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
