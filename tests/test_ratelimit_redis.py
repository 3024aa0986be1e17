"""The Redis-shared token bucket, on the real Redis server: shared, atomic, fail-open."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from opencdp.config import Settings
from opencdp.ratelimit import MemoryRateLimiter, RedisRateLimiter, limiter_for
from tests.backends import redis_or_skip

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def prefix() -> str:
    return f"opencdp-test:{uuid.uuid4().hex}:"


async def test_two_limiters_share_one_bucket(prefix: str) -> None:
    url = redis_or_skip()
    first = RedisRateLimiter(url, rate=0.001, burst=6, prefix=prefix)
    second = RedisRateLimiter(url, rate=0.001, burst=6, prefix=prefix)
    try:
        decisions = [await (first if n % 2 else second).take("tok") for n in range(10)]
        assert [d.allowed for d in decisions] == [True] * 6 + [False] * 4
        assert [d.remaining for d in decisions[:6]] == [5, 4, 3, 2, 1, 0]
        assert all(d.retry_after >= 1 and d.limit == 6 for d in decisions[6:])
        assert (await first.take("another token")).allowed
    finally:
        await first.close()
        await second.close()


async def test_concurrent_takes_never_overdraw(prefix: str) -> None:
    url = redis_or_skip()
    limiters = [RedisRateLimiter(url, rate=0.001, burst=25, prefix=prefix) for _ in range(4)]
    try:
        decisions = await asyncio.gather(
            *(limiters[n % 4].take("tok") for n in range(100))
        )
        assert sum(d.allowed for d in decisions) == 25
    finally:
        for limiter in limiters:
            await limiter.close()


async def test_an_unreachable_redis_fails_open_counts_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limiter = RedisRateLimiter(
        "redis://127.0.0.1:1/0", rate=1, burst=2, clock=lambda: now[0]
    )
    try:
        with caplog.at_level(logging.WARNING, logger="opencdp.ratelimit"):
            decisions = [await limiter.take("tok") for _ in range(5)]
            now[0] = 61.0
            await limiter.take("tok")
        assert all(d.allowed for d in decisions)
        assert limiter.failures == 6
        warnings = [r for r in caplog.records if "fail open" in r.getMessage()]
        assert len(warnings) == 2  # the first failure, then once a minute
    finally:
        await limiter.close()


def test_the_limiter_follows_the_settings() -> None:
    assert isinstance(limiter_for(Settings()), MemoryRateLimiter)
    assert isinstance(limiter_for(Settings(redis_url="redis://127.0.0.1:6379/0")), RedisRateLimiter)
