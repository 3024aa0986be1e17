"""What every handler is given: the ``Services`` container, built once by ``create_app``."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import Scope

from opencdp.api.preauth import PreAuth
from opencdp.api.routing import header
from opencdp.auth import TokenVerifier
from opencdp.config import Settings
from opencdp.ratelimit import RateLimiter
from opencdp.store.base import Store


class ClientAddress:
    """The caller's IP: the peer, or the first ``X-Forwarded-For`` hop from a trusted proxy."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def of(self, scope: Scope) -> str | None:
        client = scope.get("client")
        peer: str | None = client[0] if client else None
        if peer is None or not self.trusts(scope):
            return peer
        forwarded = header(scope, b"x-forwarded-for") or ""
        first = forwarded.split(",", 1)[0].strip()
        return first or peer

    def trusts(self, scope: Scope) -> bool:
        """Whether the peer is a trusted proxy, whose ``X-Forwarded-*`` headers count."""
        client = scope.get("client")
        return bool(self._networks) and client is not None and self._is_trusted(client[0])

    def _is_trusted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._networks)


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a handler needs, built once by ``create_app``."""

    settings: Settings
    store: Store
    limiter: RateLimiter
    client_address: ClientAddress
    preauth: PreAuth
    tokens: TokenVerifier
