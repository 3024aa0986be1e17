"""Where a destination may point: public addresses only, checked at every connection.

A write token's owner could otherwise aim webhooks at the machine's own services
(``http://127.0.0.1:5432``, a cloud metadata address, the office network). So a URL is
refused when its host is, or resolves to, any address that is not public (loopback,
private, link-local, shared, multicast, reserved, and IPv6 forms that embed such an
IPv4 address), both when the destination is created and on every connection: the
delivery client opens its sockets through ``public_socket``, which sees the address
actually dialled, so a DNS answer that changes after creation cannot point inside.
``OPENCDP_DESTINATIONS_ALLOW_PRIVATE=true`` lifts the rule (receivers on the same host
or network, tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], Awaitable[list[str]]]

#: Longest URL a destination may have.
MAX_URL = 2048
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class AddressRefused(ValueError):
    """The URL cannot be a destination; the message says why, for the API's answer."""


def is_public(address: IPAddress) -> bool:
    """True for an address on the public internet (and not multicast)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not address.is_multicast


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def split_destination_url(url: str) -> tuple[str, int]:
    """The host and port of an acceptable destination URL; AddressRefused otherwise."""
    if len(url) > MAX_URL:
        raise AddressRefused(f"url is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"url is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise AddressRefused("url must start with https:// or http://")
    if not parts.hostname:
        raise AddressRefused("url has no host")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("url may not carry a user name or password")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise AddressRefused("url may not contain spaces or control characters")
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname, port if port is not None else default


async def check_destination_url(
    url: str, *, allow_private: bool, resolve: Resolve | None = None
) -> None:
    """Refuse ``url`` unless every address its host resolves to is public (or private
    addresses are allowed). Run when a destination is created or its URL changes."""
    host, port = split_destination_url(url)
    if allow_private:
        return
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            found = await (resolve or _resolve)(host, port)
        except OSError as exc:
            raise AddressRefused(f"url's host {host!r} does not resolve ({exc})") from None
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
    if not addresses:
        raise AddressRefused(f"url's host {host!r} does not resolve")
    for address in addresses:
        if not is_public(address):
            raise AddressRefused(
                f"url's host {host!r} is a non-public address ({address}); set "
                "OPENCDP_DESTINATIONS_ALLOW_PRIVATE=true to allow it"
            )


def public_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """A socket for one address the client is about to dial, or OSError when that
    address is not public: every connection passes here, whatever DNS said before."""
    family, kind, proto, _, sockaddr = addr_info
    address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
    if not is_public(address):
        raise OSError(f"refused to connect to the non-public address {address}")
    return socket.socket(family=family, type=kind, proto=proto)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]
