"""Settings: one frozen dataclass, built once from flags and ``OPENCDP_*`` variables.

This is the only module that reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

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
    track_body_limit: int = 6 * MIB
    read_body_limit: int = 1 * MIB
    commit_batch_max: int = 2000
    write_queue_max: int = 20000
    log_level: str = "info"
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
