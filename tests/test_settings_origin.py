"""analytics.js's settings name the address it should send to: behind a TLS proxy, https.

``OPENCDP_PUBLIC_URL`` fixes it; without it the answer follows ``Host`` (and, from a
trusted proxy, ``X-Forwarded-Proto``/``-Host``) and says so in ``Vary``, so a cache
never hands one client's ``Host`` to another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from opencdp.app import create_app
from opencdp.config import Settings
from opencdp.store.base import Store
from tests.conftest import MakeToken, client_for

pytestmark = pytest.mark.anyio
PROXIED = {"x-forwarded-proto": "https", "x-forwarded-host": "cdp.example.com"}


async def settings_answer(
    client: httpx.AsyncClient, make_token: MakeToken, headers: dict[str, str]
) -> tuple[httpx.Response, dict[str, Any]]:
    key = await make_token()
    response = await client.get(f"/v1/projects/{key}/settings", headers=headers)
    assert response.status_code == 200, response.text
    segment_io: dict[str, Any] = response.json()["integrations"]["Segment.io"]
    assert segment_io["apiKey"] == key
    return response, segment_io


@pytest.fixture
async def behind_proxy(
    anyio_backend: str, settings: Settings, store: Store
) -> AsyncIterator[httpx.AsyncClient]:
    """The test client's address (127.0.0.1) is a trusted proxy."""
    async with client_for(create_app(settings.with_(trusted_proxies=("127.0.0.0/8",)), store)) as c:
        yield c


@pytest.fixture
async def with_public_url(
    anyio_backend: str, settings: Settings, store: Store
) -> AsyncIterator[httpx.AsyncClient]:
    fixed = Settings.from_env({"OPENCDP_PUBLIC_URL": "https://Track.Example.org/"})
    app = create_app(settings.with_(public_url=fixed.public_url), store)
    async with client_for(app) as c:
        yield c


async def test_a_trusted_proxy_makes_it_https_and_its_host(
    behind_proxy: httpx.AsyncClient, make_token: MakeToken
) -> None:
    response, segment_io = await settings_answer(behind_proxy, make_token, PROXIED)
    assert segment_io["protocol"] == "https"
    assert segment_io["apiHost"] == "cdp.example.com/v1"
    assert "Host" in response.headers["vary"] and "X-Forwarded-Proto" in response.headers["vary"]


async def test_the_first_hop_counts_and_nonsense_protocols_do_not(
    behind_proxy: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = {"x-forwarded-proto": "HTTPS, http", "x-forwarded-host": "a.example:8443, b"}
    _, segment_io = await settings_answer(behind_proxy, make_token, headers)
    assert (segment_io["protocol"], segment_io["apiHost"]) == ("https", "a.example:8443/v1")
    _, segment_io = await settings_answer(
        behind_proxy, make_token, {"x-forwarded-proto": "javascript"}
    )
    assert (segment_io["protocol"], segment_io["apiHost"]) == ("http", "testserver/v1")


async def test_forwarded_headers_from_anyone_else_are_ignored(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    response, segment_io = await settings_answer(client, make_token, PROXIED)
    assert (segment_io["protocol"], segment_io["apiHost"]) == ("http", "testserver/v1")
    assert response.headers["cache-control"] == "max-age=300"
    assert [v.strip() for v in response.headers["vary"].split(",")] == [
        "Host",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
    ]


@pytest.mark.parametrize(
    "host",
    ["evil.example/x", "evil.example:99999", "a b", "ev\u00efl.example", '"><script>', "x:"],
)
async def test_a_hostile_host_is_refused_not_echoed(
    client: httpx.AsyncClient, behind_proxy: httpx.AsyncClient, make_token: MakeToken, host: str
) -> None:
    key = await make_token()
    path = f"/v1/projects/{key}/settings"
    for response in (
        await client.get(path, headers={b"host": host.encode()}),
        await behind_proxy.get(path, headers={b"x-forwarded-host": host.encode()}),
    ):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["message"].startswith("Host:")
        assert host not in response.text


async def test_the_public_url_wins_over_every_header(
    with_public_url: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = {**PROXIED, "host": "evil.example"}
    response, segment_io = await settings_answer(with_public_url, make_token, headers)
    assert (segment_io["protocol"], segment_io["apiHost"]) == ("https", "track.example.org/v1")
    assert response.headers["cache-control"] == "max-age=300"
    assert "Host" not in response.headers.get("vary", "")


@pytest.mark.parametrize(
    "url", ["track.example.org", "https://x.example/path", "ftp://x.example", "https://u@x.example"]
)
def test_a_public_url_that_is_not_an_origin_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="OPENCDP_PUBLIC_URL"):
        Settings.from_env({"OPENCDP_PUBLIC_URL": url})
