"""Destinations reach public addresses only: at creation and on every connection."""

from __future__ import annotations

import asyncio
import ipaddress

import aiohttp
import pytest
from aiohttp import web

from opencdp.destinations.addresses import (
    AddressRefused,
    Resolve,
    check_destination_url,
    is_public,
    public_socket,
    split_destination_url,
)

NOT_PUBLIC = [
    "127.0.0.1", "127.255.0.9", "0.0.0.0", "10.1.2.3", "172.16.0.1", "172.31.255.255",
    "192.168.1.1", "169.254.169.254", "100.64.0.1", "224.0.0.1", "239.255.255.250",
    "255.255.255.255", "198.18.0.1", "240.0.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::", "2002:a9fe:a9fe::",
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "2001:0:4136:e378:8000:63bf:80ff:fffe",
]
PUBLIC = ["93.184.215.14", "1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "::ffff:1.1.1.1"]


@pytest.mark.parametrize("text", NOT_PUBLIC)
def test_non_public_addresses(text: str) -> None:
    assert not is_public(ipaddress.ip_address(text))


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses(text: str) -> None:
    assert is_public(ipaddress.ip_address(text))


@pytest.mark.parametrize(
    "url, error",
    [
        ("ftp://example.com/x", "https://"),
        ("file:///etc/passwd", "https://"),
        ("https://", "no host"),
        ("https://user:pw@example.com/", "user name"),
        ("https://example.com:99999/", "valid URL"),
        ("https://exa mple.com/", "spaces"),
        ("https://example.com/\x00", "control"),
        ("https://example.com/" + "a" * 2100, "longer than"),
    ],
)
def test_malformed_urls_are_refused(url: str, error: str) -> None:
    with pytest.raises(AddressRefused, match=error):
        split_destination_url(url)


def test_default_ports() -> None:
    assert split_destination_url("https://example.com/hook") == ("example.com", 443)
    assert split_destination_url("http://example.com/hook") == ("example.com", 80)
    assert split_destination_url("http://[2606:4700::1]:8080/") == ("2606:4700::1", 8080)


def _answers(*addresses: str) -> Resolve:
    """A resolver that answers ``addresses`` for any name (the public internet is out of
    reach here)."""

    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/", "http://[::1]/", "http://169.254.169.254/latest/meta-data"]
)
def test_literal_private_hosts_are_refused_at_creation(url: str) -> None:
    with pytest.raises(AddressRefused, match="non-public"):
        asyncio.run(check_destination_url(url, allow_private=False))
    asyncio.run(check_destination_url(url, allow_private=True))


def test_names_resolving_inside_are_refused_at_creation() -> None:
    # The machine's own resolver: localhost is loopback everywhere.
    with pytest.raises(AddressRefused, match="non-public"):
        asyncio.run(check_destination_url("http://localhost:9/", allow_private=False))


def test_one_private_answer_among_public_ones_is_enough_to_refuse() -> None:
    async def run() -> None:
        resolve = _answers("1.1.1.1", "10.0.0.7")
        await check_destination_url("https://hooks.example/", allow_private=False, resolve=resolve)

    with pytest.raises(AddressRefused, match="10.0.0.7"):
        asyncio.run(run())


def test_a_public_name_is_accepted_and_an_unknown_one_refused() -> None:
    async def run() -> None:
        resolve = _answers("93.184.215.14")
        await check_destination_url("https://hooks.example/", allow_private=False, resolve=resolve)

    asyncio.run(run())

    async def failing(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(AddressRefused, match="does not resolve"):
        asyncio.run(
            check_destination_url("https://nope.example/", allow_private=False, resolve=failing)
        )


def test_every_connection_is_checked_whatever_dns_said_before() -> None:
    """A receiver on loopback, reached by name and by address: the guarded client refuses
    both at the socket; the same client without the guard reaches it (the control)."""

    async def run() -> tuple[list[str], int]:
        async def receive(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", receive)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        refused = []
        try:
            guarded = aiohttp.TCPConnector(socket_factory=public_socket)
            async with aiohttp.ClientSession(connector=guarded) as session:
                for host in ("127.0.0.1", "localhost"):
                    try:
                        await session.post(f"http://{host}:{port}/hook", data=b"{}")
                    except aiohttp.ClientConnectorError as exc:
                        refused.append(f"{host}: {exc.os_error}")
            async with aiohttp.ClientSession() as session:
                async with session.post(f"http://127.0.0.1:{port}/hook", data=b"{}") as answer:
                    status = answer.status
        finally:
            await runner.cleanup()
        return refused, status

    refused, control = asyncio.run(run())
    assert len(refused) == 2 and all("non-public" in r for r in refused), refused
    assert control == 200
