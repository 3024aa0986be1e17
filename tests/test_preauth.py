"""What a client without a token can cost the server on ``/v1/*`` (``api/preauth.py``)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import os

import httpx
import msgspec
import pytest
from starlette.applications import Starlette

from opencdp.api.preauth import MAX_CANDIDATES, candidate_keys
from opencdp.app import create_app
from opencdp.config import Settings
from opencdp.store.base import Store
from tests.conftest import MakeToken

pytestmark = pytest.mark.anyio
JSON = {"content-type": "application/json"}
GZIP = {**JSON, "content-encoding": "gzip"}


def basic(key: str) -> dict[str, str]:
    return {**JSON, "authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def big_gzip_body(write_key: str | None) -> bytes:
    """Close to 6 MiB of JSON once inflated, hard to compress (inflating it takes a while)."""
    blob = os.urandom(3000).hex()
    message = {"type": "track", "userId": "u1", "event": "e", "properties": {"blob": blob}}
    body: dict[str, object] = {"batch": [message] * 950}
    if write_key is not None:
        body["writeKey"] = write_key
    return gzip.compress(msgspec.json.encode(body), compresslevel=1)


def client(app: Starlette, address: str = "198.51.100.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
def guarded_app(db_url: str, store: Store) -> Starlette:
    return create_app(Settings(db=db_url, preauth_inflations=1, anonymous_rate=10), store)


async def test_anonymous_gzip_floods_do_not_hold_up_an_authenticated_client(
    guarded_app: Starlette, make_token: MakeToken
) -> None:
    key = await make_token()
    preauth = guarded_app.state.services.preauth
    flood = big_gzip_body("ocdp_000000000000_" + "x" * 32)  # well-formed, unknown
    async with client(guarded_app) as anonymous, client(guarded_app, "203.0.113.9") as known:
        floods = [
            asyncio.create_task(anonymous.post("/v1/batch", content=flood, headers=GZIP))
            for _ in range(12)
        ]
        for _ in range(100_000):
            if preauth.in_flight:
                break
            await asyncio.sleep(0)
        else:
            pytest.fail("no anonymous inflation ever ran off the event loop")
        answer = await known.post(
            "/v1/track", json={"userId": "u1", "event": "Paid"}, headers=basic(key)
        )
        assert answer.status_code == 200, answer.text
        assert not all(task.done() for task in floods)  # inflations still in flight
        statuses = [response.status_code for response in await asyncio.gather(*floods)]
    # each refused: 401 (no live key) or 503 (the bounded queue of inflations was full)
    assert set(statuses) <= {401, 503} and 401 in statuses
    assert preauth.in_flight == 0


async def test_a_body_key_still_works_gzipped_or_not(
    guarded_app: Starlette, make_token: MakeToken
) -> None:
    key = await make_token()
    body = msgspec.json.encode({"writeKey": key, "userId": "u1", "event": "Paid"})
    async with client(guarded_app) as http:
        plain = await http.post("/v1/track", content=body, headers=JSON)
        zipped = await http.post("/v1/track", content=gzip.compress(body), headers=GZIP)
        big = await http.post("/v1/batch", content=big_gzip_body(key), headers=GZIP)
    assert [plain.status_code, zipped.status_code, big.status_code] == [200, 200, 200]


async def test_a_nested_key_does_not_stand_in_for_the_body_key(
    guarded_app: Starlette, make_token: MakeToken
) -> None:
    key = await make_token()
    nested = {"writeKey": "not-a-token", "userId": "u1", "properties": {"writeKey": key}}
    async with client(guarded_app) as http:
        answer = await http.post("/v1/track", json=nested, headers=JSON)
    assert answer.status_code == 401
    assert answer.json()["code"] == "authentication_error"


async def test_an_address_that_keeps_failing_is_refused_before_its_body_is_read(
    guarded_app: Starlette, make_token: MakeToken
) -> None:
    key = await make_token()
    async with client(guarded_app) as attacker, client(guarded_app, "192.0.2.50") as other:
        statuses = [
            (await attacker.post("/v1/track", content=b"{}", headers=JSON)).status_code
            for _ in range(25)
        ]
        assert statuses[:20] == [401] * 20  # the allowance: twice the rate at once
        assert set(statuses[20:]) == {429}
        refused = await attacker.post("/v1/track", content=b"{}", headers=JSON)
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["code"] == "rate_limit_error"
        # another address, and the same address with its token as Basic user, still pass
        assert (await other.post("/v1/track", content=b"{}", headers=JSON)).status_code == 401
        paid = {"userId": "u1", "event": "Paid"}
        authed = await attacker.post("/v1/track", json=paid, headers=basic(key))
        assert authed.status_code == 200


def test_candidate_keys_are_bounded_and_well_formed() -> None:
    keys = [f"ocdp_{n:012x}_{'k' * 20}" for n in range(10)]
    body = b"".join(b'{"writeKey": "%s"}' % k.encode() for k in keys)
    assert candidate_keys(body) == keys[:MAX_CANDIDATES]
    assert candidate_keys(b'{"writeKey": "ocdp_short"}') == []
    assert candidate_keys(b'{"writeKey":"' + keys[0].encode() + b'"}') == keys[:1]
