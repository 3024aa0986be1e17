"""Settings: one frozen dataclass, built once from flags and ``OPENCDP_*`` variables.

This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

DEFAULT_DB = "sqlite:///./opencdp.db"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    db: str = DEFAULT_DB
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    rate: float = 100.0
    burst: int = 500
    redis_url: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    public_url: str | None = None  # scheme://host[:port] analytics.js is told to send to
    track_body_limit: int = 6 * MIB
    read_body_limit: int = 1 * MIB
    commit_batch_max: int = 2000
    write_queue_max: int = 20000
    log_level: str = "info"
    create_dirs: bool = False  # the CLI may create a SQLite file's missing directories
    read_timeout_ms: int = 2000
    workspace_reads: int = 2
    preauth_inflations: int = 1
    anonymous_rate: float = 10.0
    header_limit: int = 64 * 1024
    header_timeout: float = 10.0
    max_connections: int = 1000
    # Test-only: answer before the commit. Exists so the crash harness can prove it
    # detects loss; never set it in production.
    unsafe_ack_before_commit: bool = field(default=False, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``OPENCDP_<FIELD>`` variables, then ``overrides`` (flags) on top."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"OPENCDP_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw, cls.__dataclass_fields__[f.name].default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def __post_init__(self) -> None:
        if self.public_url is not None:
            object.__setattr__(self, "public_url", public_origin(self.public_url))


# host[:port]: a DNS name or IPv4 address, or an IPv6 one in brackets; nothing else.
_HOST = re.compile(r"(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?|\[[0-9A-Fa-f:.]{2,45}\]")
_PORT = re.compile(r"(?::[0-9]{1,5})?")


def is_host(value: str) -> bool:
    """Whether ``value`` is a ``host[:port]`` as a ``Host`` header or URL may carry it."""
    match = _HOST.match(value)
    port = None if match is None else _PORT.fullmatch(value, match.end())
    return port is not None and (not port[0] or int(port[0][1:]) <= 65535)


def public_origin(url: str) -> str:
    """``OPENCDP_PUBLIC_URL`` as ``scheme://host[:port]``; a path, query or user is refused."""
    parts = urlsplit(url.strip())
    try:
        parts.port  # noqa: B018 (reading it checks it)
    except ValueError as exc:
        raise ValueError(f"OPENCDP_PUBLIC_URL: {url!r}: {exc}") from None
    if parts.scheme not in {"http", "https"} or not is_host(parts.netloc):
        raise ValueError(f"OPENCDP_PUBLIC_URL: {url!r} is not an http(s)://host[:port] URL")
    if parts.path not in {"", "/"} or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"OPENCDP_PUBLIC_URL: {url!r} must be only scheme://host[:port]")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
    except ValueError as exc:
        raise ValueError(f"OPENCDP_{name.upper()}: cannot read {raw!r}: {exc}") from exc
    return raw
