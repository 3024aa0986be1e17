"""Segment-compatible ingestion over HTTP (SPEC §8): auth, gzip, errors, CORS, settings."""

from __future__ import annotations

import base64
import gzip
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from starlette.applications import Starlette

from opencdp.app import create_app
from opencdp.config import Settings
from opencdp.store.base import Store
from tests.conftest import TRACK, MakeToken, client_for

pytestmark = pytest.mark.anyio

CALLS: dict[str, dict[str, Any]] = {
    "identify": {"userId": "u-1", "anonymousId": "a-1", "traits": {"plan": "pro"}},
    "track": {"userId": "u-1", "event": "Order Completed", "properties": {"total": 3}},
    "page": {"userId": "u-1", "name": "Home"},
    "screen": {"userId": "u-1", "name": "Dashboard"},
    "group": {"userId": "u-1", "groupId": "acme", "traits": {"name": "Acme"}},
    "alias": {"userId": "u-1", "previousId": "old-1"},
}


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def assert_sdk_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Errors here carry ``code`` and ``message`` at the top, as the SDKs read them."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == body["error"]["code"] == code
    assert body["message"] == body["error"]["message"] and body["message"]
    assert body.get("success", False) is False  # settings is not a tracking call
    return body


async def profile_events(
    client: httpx.AsyncClient, make_token: MakeToken, profile: str
) -> list[dict[str, Any]]:
    token = await make_token(scopes=("read",))
    response = await client.get(
        f"{TRACK}/profiles/{profile}/events", headers={"auth-token": token}
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events


async def test_every_call_type_with_basic_auth(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    key = await make_token()
    for kind, body in CALLS.items():
        response = await client.post(f"/v1/{kind}", json=body, headers=basic(key))
        assert response.status_code == 200, response.text
        assert response.json()["success"] is True
    events = await profile_events(client, make_token, "userId:u-1")
    assert sorted(e["eventAction"] for e in events) == sorted(
        ["identify", "order_completed", "page", "screen", "group", "alias"]
    )


async def test_write_key_in_the_body_is_not_stored(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    key = await make_token()
    response = await client.post("/v1/track", json={**CALLS["track"], "writeKey": key})
    assert response.status_code == 200, response.text
    (event,) = await profile_events(client, make_token, "userId:u-1")
    assert "writeKey" not in event["rawData"]
    assert key not in msgspec.json.encode(event).decode()


async def test_gzip_bodies(client: httpx.AsyncClient, make_token: MakeToken) -> None:
    key = await make_token()
    body = {"batch": [{"type": "track", **CALLS["track"]}], "writeKey": key}
    response = await client.post(
        "/v1/batch",
        content=gzip.compress(msgspec.json.encode(body)),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["eventIds"]) == 1


async def test_a_zip_bomb_is_413(client: httpx.AsyncClient, make_token: MakeToken) -> None:
    key = await make_token()
    bomb = gzip.compress(b'{"batch": [' + b" " * (7 * 1024 * 1024) + b"]}")
    assert len(bomb) < 100_000
    headers = {"content-type": "application/json", "content-encoding": "gzip", **basic(key)}
    response = await client.post("/v1/batch", content=bomb, headers=headers)
    assert_sdk_error(response, 413, "invalid_request_error")


async def test_an_unknown_content_encoding_is_415(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = {"content-type": "application/json", "content-encoding": "br"}
    response = await client.post(
        "/v1/track", content=b"{}", headers={**headers, **basic(await make_token())}
    )
    body = assert_sdk_error(response, 415, "invalid_request_error")
    assert body["message"].startswith("content-encoding:")


@pytest.mark.parametrize(
    "auth",
    [
        {"headers": basic("ocdp_000000000000_" + "x" * 32)},
        {"json": {**CALLS["track"], "writeKey": "wrong"}},
        {"json": CALLS["track"]},
    ],
    ids=["basic", "body", "none"],
)
async def test_a_wrong_or_missing_key_is_401(
    client: httpx.AsyncClient, auth: dict[str, Any]
) -> None:
    response = await client.post("/v1/track", **{"json": CALLS["track"], **auth})
    assert_sdk_error(response, 401, "authentication_error")


async def test_a_revoked_key_is_401(
    client: httpx.AsyncClient, make_token: MakeToken, store: Store
) -> None:
    key = await make_token()
    assert await store.revoke_token(key.split("_")[1], when=1)
    response = await client.post("/v1/track", json=CALLS["track"], headers=basic(key))
    assert_sdk_error(response, 401, "authentication_error")


@pytest.mark.parametrize(
    "token",
    [
        {"brands": None},
        {"accounts": ("a1", "a2")},
        {"scopes": ("read",)},
    ],
    ids=["all-brands", "two-accounts", "read-only"],
)
async def test_a_key_must_name_one_workspace_and_write(
    client: httpx.AsyncClient, make_token: MakeToken, token: dict[str, Any]
) -> None:
    key = await make_token(**token)
    response = await client.post("/v1/track", json=CALLS["track"], headers=basic(key))
    assert_sdk_error(response, 403, "authentication_error")


async def test_basic_auth_is_checked_before_the_body(client: httpx.AsyncClient) -> None:
    wrong = basic("ocdp_000000000000_" + "x" * 32)
    response = await client.post(
        "/v1/track", content=b"{not json", headers={"content-type": "application/json", **wrong}
    )
    assert_sdk_error(response, 401, "authentication_error")


async def test_without_basic_auth_the_body_is_read_first(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    """The body is read before the token check; it is parsed only once it names a live
    key, so a body without one is a 401 whatever else is wrong with it."""
    headers = {"content-type": "application/json"}
    too_big = b" " * (7 * 1024 * 1024)
    response = await client.post("/v1/track", content=too_big, headers=headers)
    assert_sdk_error(response, 413, "invalid_request_error")
    response = await client.post("/v1/track", content=b"{not json", headers=headers)
    assert_sdk_error(response, 401, "authentication_error")
    key = await make_token()
    broken = b'{"writeKey": "' + key.encode() + b'", not json'
    response = await client.post("/v1/track", content=broken, headers=headers)
    assert_sdk_error(response, 400, "invalid_request_error")


async def test_validation_errors_name_the_field(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    response = await client.post(
        "/v1/track", json={"userId": "u-1", "event": 3}, headers=basic(await make_token())
    )
    body = assert_sdk_error(response, 400, "validation_error")
    assert body["message"].startswith("event:")


async def test_a_batch_with_no_valid_item_is_400_with_errors(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    response = await client.post(
        "/v1/import", json={"batch": [{"event": "x"}]}, headers=basic(await make_token())
    )
    body = assert_sdk_error(response, 400, "validation_error")
    assert body["errors"] == [
        {"index": 0, "code": "validation_error", "message": "batch[0].type: required"}
    ]


async def test_wrong_method_is_405_with_code(client: httpx.AsyncClient) -> None:
    assert_sdk_error(await client.get("/v1/track"), 405, "invalid_request_error")


async def test_the_content_type_rule_holds_on_long_paths_only(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    key = await make_token()
    text = {"content-type": "text/plain"}
    content = msgspec.json.encode({**CALLS["track"], "writeKey": key})
    long = await client.post("/v1/track", content=content, headers=text)
    short = await client.post("/v1/t", content=content, headers=text)
    assert_sdk_error(long, 415, "invalid_request_error")
    assert short.status_code == 200, short.text


async def test_analytics_js_short_paths(client: httpx.AsyncClient, make_token: MakeToken) -> None:
    key = await make_token()
    headers = {"content-type": "text/plain", "origin": "https://shop.example"}
    for letter, kind in [("i", "identify"), ("t", "track"), ("p", "page"), ("s", "screen"),
                         ("g", "group"), ("a", "alias")]:
        body = msgspec.json.encode({**CALLS[kind], "writeKey": key})
        response = await client.post(f"/v1/{letter}", content=body, headers=headers)
        assert response.status_code == 200, (letter, response.text)
        assert response.headers["access-control-allow-origin"] == "https://shop.example"
    batch = {"batch": [{"type": "page", **CALLS["page"]}], "writeKey": key}
    response = await client.post("/v1/b", content=msgspec.json.encode(batch), headers=headers)
    assert response.status_code == 200, response.text
    events = await profile_events(client, make_token, "userId:u-1")
    assert len(events) == 7


async def test_cors_preflight_and_error_headers(client: httpx.AsyncClient) -> None:
    origin = "https://shop.example"
    preflight = await client.options(
        "/v1/t",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert preflight.headers["access-control-allow-headers"] == "authorization,content-type"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    denied = await client.post("/v1/t", json=CALLS["track"], headers={"origin": origin})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == origin


async def test_the_same_message_id_through_both_apis_is_one_event(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    key = await make_token()
    message_id = str(uuid.uuid4())
    call = {**CALLS["track"], "messageId": message_id, "timestamp": "2026-01-01T00:00:00Z"}
    first = await client.post("/v1/track", json=call, headers=basic(key))
    native = await client.post(f"{TRACK}/track", json=call, headers={"auth-token": key})
    again = await client.post(
        "/v1/batch", json={"batch": [{"type": "track", **call}]}, headers=basic(key)
    )
    event_id = first.json()["eventId"]
    assert native.json()["eventId"] == event_id
    assert again.json()["eventIds"] == [event_id]
    assert len(await profile_events(client, make_token, "userId:u-1")) == 1


async def test_settings_for_analytics_js(client: httpx.AsyncClient, make_token: MakeToken) -> None:
    key = await make_token()
    response = await client.get(
        f"/v1/projects/{key}/settings", headers={"origin": "https://shop.example"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["integrations"]["Segment.io"] == {
        "apiKey": key,
        "apiHost": "testserver/v1",
        "protocol": "http",
    }
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    unknown = await client.get("/v1/projects/ocdp_000000000000_xxxxxxxxxxxxxxxxxxxx/settings")
    assert_sdk_error(unknown, 401, "authentication_error")


@pytest.fixture
async def strict_client(
    anyio_backend: str, settings: Settings, store: Store
) -> AsyncIterator[httpx.AsyncClient]:
    app: Starlette = create_app(settings.with_(rate=0.001, burst=1), store)
    async with client_for(app) as client:
        yield client


async def test_over_the_rate_limit_is_429_with_retry_after(
    strict_client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    key = await make_token()
    first = await strict_client.post("/v1/track", json=CALLS["track"], headers=basic(key))
    second = await strict_client.post("/v1/track", json=CALLS["track"], headers=basic(key))
    assert first.status_code == 200
    assert_sdk_error(second, 429, "rate_limit_error")
    assert int(second.headers["retry-after"]) >= 1
    assert second.headers["x-ratelimit-remaining"] == "0"


async def test_openapi_lists_the_segment_paths(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/v1/track", "/v1/batch", "/v1/t", "/v1/b", "/v1/projects/{writeKey}/settings"):
        assert path in paths
