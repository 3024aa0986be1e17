"""SPEC §3 over HTTP: statuses and their order, auth, rate limit, request ids, CORS, errors."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Scope

from opencdp.api.services import ClientAddress
from opencdp.app import create_app
from opencdp.calls import CALL_TYPES
from opencdp.config import Settings
from opencdp.models import Accepted, Call, Workspace
from opencdp.ratelimit import MemoryRateLimiter
from opencdp.store.base import Store
from opencdp.store.sqlite.store import SQLiteStore
from tests.conftest import ACCOUNT, BRAND, CLIENT, TRACK, MakeToken, client_for
from tests.server_process import cli, client_token

pytestmark = pytest.mark.anyio

CALL = {"userId": "u-1", "event": "Signed Up", "timestamp": "2024-05-01T10:00:00Z"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def assert_error(
    response: httpx.Response, status: int, code: str, *, tracking: bool = True
) -> dict[str, Any]:
    """The response is the SPEC's error body, with the tracking fields on tracking routes."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    if tracking:
        assert set(body) == {"error", "success", "message"}
        assert body["success"] is False
        assert body["message"] == body["error"]["message"]
    else:
        assert set(body) == {"error"}
    return body


# -- routes and methods -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/nowhere", f"{TRACK}/unknown", "/track/bad!id/a1/b1/v1/track", f"{TRACK}/track/", "/"],
)
async def test_unknown_routes_are_404(client: httpx.AsyncClient, path: str) -> None:
    assert_error(await client.post(path, json=CALL), 404, "not_found", tracking=False)


async def test_a_workspace_id_over_64_characters_is_no_route(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/track/{'c' * 65}/a1/b1/v1/track", json=CALL)
    assert_error(response, 404, "not_found", tracking=False)


async def test_wrong_method_on_a_tracking_route_is_405_with_allow(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(f"{TRACK}/track")
    assert_error(response, 405, "invalid_request_error")
    assert set(response.headers["allow"].split(", ")) == {"POST", "OPTIONS"}


async def test_wrong_method_elsewhere_is_405_without_tracking_fields(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/healthz", json={})
    assert_error(response, 405, "invalid_request_error", tracking=False)
    assert "GET" in response.headers["allow"]


# -- check order: route, method, declared size, content-type, token, rate limit, body -----


async def test_too_large_and_unauthenticated_is_413(settings: Settings, store: Store) -> None:
    app = create_app(settings.with_(track_body_limit=100), store)
    async with client_for(app) as client:
        response = await client.post(f"{TRACK}/track", content=b"x" * 101)
    assert_error(response, 413, "invalid_request_error")


async def test_bad_content_type_and_no_token_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{TRACK}/track", content=b"{}", headers={"content-type": "text/plain"}
    )
    assert_error(response, 415, "invalid_request_error")


async def test_missing_content_type_is_415(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    response = await client.post(
        f"{TRACK}/track", content=b"{}", headers={"auth-token": await make_token()}
    )
    assert_error(response, 415, "invalid_request_error")


async def test_content_type_parameters_are_allowed(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = {"auth-token": await make_token(), "content-type": "Application/JSON; charset=utf-8"}
    response = await client.post(f"{TRACK}/track", json=CALL, headers=headers)
    assert response.status_code == 200, response.text


async def test_no_token_and_a_bad_body_is_403(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{TRACK}/track", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert_error(response, 403, "authentication_error")


async def test_rate_limit_comes_before_the_body(
    settings: Settings, store: Store, make_token: MakeToken
) -> None:
    limiter = MemoryRateLimiter(rate=1, burst=1, clock=lambda: 0.0)
    async with client_for(create_app(settings, store, limiter)) as client:
        headers = {"auth-token": await make_token(), "content-type": "application/json"}
        await client.post(f"{TRACK}/track", json=CALL, headers=headers)
        response = await client.post(f"{TRACK}/track", content=b"{oops", headers=headers)
    assert_error(response, 429, "rate_limit_error")


async def test_a_streamed_body_past_the_limit_is_413_without_reading_the_rest(
    settings: Settings, store: Store, make_token: MakeToken
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(100):
            sent += 1
            yield b" " * 64

    app = create_app(settings.with_(track_body_limit=1000), store)
    headers = {"auth-token": await make_token(), "content-type": "application/json"}
    async with client_for(app) as client:
        response = await client.post(f"{TRACK}/track", content=chunks(), headers=headers)
    assert_error(response, 413, "invalid_request_error")
    assert "content-length" not in response.request.headers
    assert sent < 20


# -- tokens ---------------------------------------------------------------------------


async def test_a_token_needs_to_be_sent(client: httpx.AsyncClient) -> None:
    assert_error(await client.post(f"{TRACK}/track", json=CALL), 403, "authentication_error")


@pytest.mark.parametrize(
    "token", ["nonsense", "ocdp_000000000000_" + "A" * 32, "ocdp_zz_short", ""]
)
async def test_unknown_tokens_are_403(client: httpx.AsyncClient, token: str) -> None:
    response = await client.post(f"{TRACK}/track", json=CALL, headers={"auth-token": token})
    body = assert_error(response, 403, "authentication_error")
    assert token not in response.text or not token
    assert "x-ratelimit-limit" not in response.headers
    assert body["error"]["message"].startswith("auth-token")


async def test_a_token_with_a_wrong_secret_is_403(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    token = await make_token()
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    response = await client.post(f"{TRACK}/track", json=CALL, headers={"auth-token": forged})
    assert_error(response, 403, "authentication_error")


async def test_a_revoked_token_stops_at_once(
    client: httpx.AsyncClient, store: Store, make_token: MakeToken
) -> None:
    token = await make_token()
    headers = {"auth-token": token}
    assert (await client.post(f"{TRACK}/track", json=CALL, headers=headers)).status_code == 200
    assert await store.revoke_token(token.split("_")[1], time.time_ns() // 10**6)
    response = await client.post(f"{TRACK}/track", json=CALL, headers=headers)
    assert_error(response, 403, "authentication_error")


async def test_a_revocation_through_another_path_to_the_file_stops_the_token_at_once(
    anyio_backend: str, tmp_path: Path
) -> None:
    real = tmp_path / "data" / "opencdp.db"
    real.parent.mkdir()
    (tmp_path / "link.db").symlink_to(real)
    (tmp_path / "linked").symlink_to(real.parent)
    store = SQLiteStore(str(real))
    app = create_app(Settings(db=f"sqlite:///{real}"), store)
    await store.start()
    try:
        async with client_for(app) as client:
            for other in (tmp_path / "link.db", tmp_path / "linked" / "opencdp.db"):
                token = client_token(f"sqlite:///{real}", CLIENT, "write")
                headers = {"auth-token": token}
                ok = await client.post(f"{TRACK}/track", json=CALL, headers=headers)
                assert ok.status_code == 200, ok.text  # the token is cached now
                cli("tokens", "revoke", token.split("_")[1], db=f"sqlite:///{other}")
                response = await client.post(f"{TRACK}/track", json=CALL, headers=headers)
                assert_error(response, 403, "authentication_error")
    finally:
        await store.stop()


@pytest.mark.parametrize(
    ("scopes", "accounts", "brands", "client_id"),
    [
        (("write",), (ACCOUNT,), (BRAND,), "other-client"),
        (("write",), ("other-account",), (BRAND,), CLIENT),
        (("write",), (ACCOUNT,), ("other-brand",), CLIENT),
        (("read",), (ACCOUNT,), (BRAND,), CLIENT),
    ],
    ids=["client", "account", "brand", "scope"],
)
async def test_tokens_without_access_are_403_with_rate_headers(
    client: httpx.AsyncClient,
    make_token: MakeToken,
    scopes: Sequence[str],
    accounts: Sequence[str],
    brands: Sequence[str],
    client_id: str,
) -> None:
    token = await make_token(scopes=scopes, accounts=accounts, brands=brands, client=client_id)
    response = await client.post(f"{TRACK}/track", json=CALL, headers={"auth-token": token})
    assert_error(response, 403, "authentication_error")


async def test_all_accounts_and_brands_tokens_reach_every_workspace_of_the_client(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    token = await make_token(accounts=None, brands=None)
    response = await client.post(
        f"/track/{CLIENT}/x.y/Z_9-/v1/track", json=CALL, headers={"auth-token": token}
    )
    assert response.status_code == 200, response.text


# -- rate limit -------------------------------------------------------------------------


async def test_over_the_burst_is_429_with_retry_after(
    settings: Settings, store: Store, make_token: MakeToken
) -> None:
    limiter = MemoryRateLimiter(rate=0.5, burst=2, clock=lambda: 0.0)
    headers = {"auth-token": await make_token()}
    async with client_for(create_app(settings, store, limiter)) as client:
        responses = [
            await client.post(f"{TRACK}/track", json=CALL, headers=headers) for _ in range(3)
        ]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["1", "0", "0"]
    assert {r.headers["x-ratelimit-limit"] for r in responses} == {"2"}
    assert_error(responses[2], 429, "rate_limit_error")
    assert responses[2].headers["retry-after"] == "2"


async def test_errors_after_the_token_check_carry_rate_headers(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    response = await client.post(
        f"{TRACK}/track", json={"userId": "u"}, headers={"auth-token": await make_token()}
    )
    assert_error(response, 400, "validation_error")
    assert response.headers["x-ratelimit-limit"] == "500"
    assert response.headers["x-ratelimit-remaining"] == "499"


async def test_the_burst_comes_from_settings(
    settings: Settings, store: Store, make_token: MakeToken
) -> None:
    app = create_app(settings.with_(burst=7), store)
    async with client_for(app) as client:
        response = await client.post(
            f"{TRACK}/track", json=CALL, headers={"auth-token": await make_token()}
        )
    assert response.headers["x-ratelimit-limit"] == "7"


# -- request ids ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/nowhere", f"{TRACK}/track"])
async def test_every_response_has_a_generated_request_id(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert UUID.fullmatch(response.headers["x-request-id"])
    assert response.headers["x-amzn-requestid"] == response.headers["x-request-id"]


async def test_a_client_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": "trace-42/abc"})
    assert response.headers["x-request-id"] == "trace-42/abc"
    assert response.headers["x-amzn-requestid"] == "trace-42/abc"


@pytest.mark.parametrize("sent", ["x" * 129, "tab\there", "caf\u00e9"])
async def test_an_insane_client_request_id_is_replaced(
    client: httpx.AsyncClient, sent: str
) -> None:
    response = await client.get("/healthz", headers=[(b"X-Request-Id", sent.encode())])
    assert UUID.fullmatch(response.headers["x-request-id"])


# -- CORS ------------------------------------------------------------------------------


async def test_tracking_routes_answer_cors_preflight(client: httpx.AsyncClient) -> None:
    response = await client.options(
        f"{TRACK}/track",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    assert response.headers["access-control-allow-methods"] == "POST, OPTIONS"
    allowed = response.headers["access-control-allow-headers"]
    assert {"content-type", "auth-token", "x-request-id"} <= set(allowed.split(", "))
    assert response.headers["access-control-max-age"] == "600"


async def test_preflight_without_origin_allows_any(client: httpx.AsyncClient) -> None:
    response = await client.options(f"{TRACK}/batch")
    assert response.headers["access-control-allow-origin"] == "*"


async def test_tracking_answers_carry_allow_origin_errors_too(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    origin = {"Origin": "https://shop.example"}
    ok = await client.post(
        f"{TRACK}/track", json=CALL, headers={"auth-token": await make_token(), **origin}
    )
    denied = await client.post(f"{TRACK}/track", json=CALL, headers=origin)
    assert ok.status_code == 200 and denied.status_code == 403
    assert ok.headers["access-control-allow-origin"] == "https://shop.example"
    assert denied.headers["access-control-allow-origin"] == "https://shop.example"


async def test_a_tracking_answer_carries_each_header_once(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = {"auth-token": await make_token(), "Origin": "https://shop.example"}
    response = await client.post(f"{TRACK}/track", json=CALL, headers=headers)
    assert response.status_code == 200, response.text
    names = [name for name, _ in response.headers.multi_items()]
    assert sorted(names) == [
        "access-control-allow-origin", "content-length", "content-type", "vary",
        "x-amzn-requestid", "x-ratelimit-limit", "x-ratelimit-remaining", "x-request-id",
    ]
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["vary"] == "Origin"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
async def test_no_cors_elsewhere(client: httpx.AsyncClient, path: str) -> None:
    origin = {"Origin": "https://shop.example"}
    preflight = await client.options(path, headers=origin)
    plain = await client.get(path, headers=origin)
    assert preflight.status_code == 405
    for response in (preflight, plain):
        assert not any(h.startswith("access-control-") for h in response.headers)


# -- 500 and 503 -------------------------------------------------------------------------


class FaultyStore(SQLiteStore):
    """A real store with one fault injected."""

    async def append_calls(self, workspace: Workspace, calls: Sequence[Call]) -> list[Accepted]:
        raise RuntimeError("secret detail")

    async def ping(self) -> bool:
        return False


@pytest.fixture
async def faulty_app(
    anyio_backend: str, settings: Settings, tmp_path: Any
) -> AsyncIterator[tuple[Starlette, Store]]:
    store = FaultyStore(str(tmp_path / "faulty.db"))
    await store.start()
    try:
        yield create_app(settings, store), store
    finally:
        await store.stop()


async def test_an_unexpected_error_is_a_plain_500(
    faulty_app: tuple[Starlette, Store], caplog: pytest.LogCaptureFixture
) -> None:
    from opencdp.auth import new_token

    app, store = faulty_app
    text, record = new_token(CLIENT, None, None, ["write"], now=0)
    await store.add_token(record)
    async with client_for(app) as client:
        response = await client.post(f"{TRACK}/track", json=CALL, headers={"auth-token": text})
    body = assert_error(response, 500, "internal_server_error")
    assert body["error"]["message"] == "internal error"
    assert "secret" not in response.text
    request_id = response.headers["x-request-id"]
    assert any(getattr(r, "request_id", None) == request_id for r in caplog.records)
    assert response.headers["x-ratelimit-limit"] == "500"


async def test_readyz_is_503_with_retry_after_when_the_store_does_not_answer(
    faulty_app: tuple[Starlette, Store],
) -> None:
    async with client_for(faulty_app[0]) as client:
        response = await client.get("/readyz")
    assert_error(response, 503, "internal_server_error", tracking=False)
    assert response.headers["retry-after"] == "1"


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


# -- client address ------------------------------------------------------------------------


def request_from(peer: str, forwarded: str | None) -> Scope:
    headers = [] if forwarded is None else [(b"x-forwarded-for", forwarded.encode())]
    return {"type": "http", "client": (peer, 5000), "headers": headers}


def test_forwarded_for_is_used_only_from_trusted_proxies() -> None:
    address = ClientAddress(["10.0.0.0/8", "192.168.1.1"])
    assert address.of(request_from("10.1.2.3", "203.0.113.9, 10.1.2.3")) == "203.0.113.9"
    assert address.of(request_from("192.168.1.1", "203.0.113.7")) == "203.0.113.7"
    assert address.of(request_from("198.51.100.1", "203.0.113.9")) == "198.51.100.1"
    assert address.of(request_from("10.1.2.3", None)) == "10.1.2.3"
    assert ClientAddress([]).of(request_from("10.1.2.3", "203.0.113.9")) == "10.1.2.3"


# -- the OpenAPI document ---------------------------------------------------------------------


async def test_openapi_covers_every_route(client: httpx.AsyncClient, app: Starlette) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    for action in ("identify", "track", "page", "screen", "alias", "group", "batch"):
        operation = document["paths"][f"/track/{{clientId}}/{{accountId}}/{{brandId}}/v1/{action}"]
        post = operation["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert {"200", "400", "403", "404", "413", "415", "429", "500"} <= set(post["responses"])
        assert "options" in operation
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert "get" in document["paths"][path]
    schemas = document["components"]["schemas"]
    for ref in _refs(document["paths"]):
        assert ref.removeprefix("#/components/schemas/") in schemas


async def test_openapi_shows_each_call_type_once_for_calls_and_batch_items(
    client: httpx.AsyncClient,
) -> None:
    """A batch item is its call type's own schema plus ``type``: the two cannot drift."""
    document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    items = _refs(schemas["BatchCall"]["properties"]["batch"])
    names = {ref.removeprefix("#/components/schemas/") for ref in items}
    assert names == {f"{kind.capitalize()}Item" for kind in CALL_TYPES}
    for kind in CALL_TYPES:
        post = document["paths"][f"/track/{{clientId}}/{{accountId}}/{{brandId}}/v1/{kind}"]["post"]
        call = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        single = schemas[call.removeprefix("#/components/schemas/")]
        item = schemas[f"{kind.capitalize()}Item"]
        assert item["properties"] == {"type": {"enum": [kind]}, **single["properties"]}
        assert set(item["required"]) == {"type", *single["required"]}
    group = schemas["GroupCall"]
    assert {"groupId", "timestamp"} <= set(group["required"]) and "traits" in group["properties"]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


async def test_docs_page_loads_swagger_ui(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
