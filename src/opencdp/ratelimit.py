"""Token-bucket rate limiting, one bucket per key (a token id).

A bucket holds at most ``burst`` tokens and refills at ``rate`` tokens a second;
every request takes one. Buckets start full. The clock is injected so tests can
drive time by hand.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from opencdp.config import Settings

Clock = Callable[[], float]
log = logging.getLogger("opencdp.ratelimit")
_EPSILON = 1e-9  # so float rounding never turns a refilled token into 0.999…


@dataclass(frozen=True, slots=True)
class Decision:
    """One request's answer: ``limit`` is the burst, ``remaining`` whole tokens left.

    ``retry_after`` is whole seconds (at least 1) when refused, 0 when allowed.
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after: int


class RateLimiter(Protocol):
    """Anything that decides whether the next request under ``key`` may proceed."""

    async def take(self, key: str) -> Decision: ...

    async def close(self) -> None: ...


class MemoryRateLimiter:
    """Buckets in this process's memory: right for a single server process.

    Memory stays bounded: a bucket left idle long enough to be full again is the
    same as no bucket, so such buckets are dropped, at most once per refill period.
    """

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or not math.isfinite(rate):
            raise ValueError(f"rate: must be a positive number of requests a second, not {rate}")
        if burst < 1:
            raise ValueError(f"burst: must be at least 1, not {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._refill_seconds = burst / rate
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, last time)
        self._last_sweep = clock()

    def __len__(self) -> int:
        return len(self._buckets)

    async def take(self, key: str) -> Decision:
        return self.take_now(key)

    async def close(self) -> None:
        self._buckets.clear()

    def take_now(self, key: str) -> Decision:
        """``take`` without the coroutine: the whole decision is synchronous here."""
        now = self._clock()
        self._sweep(now)
        tokens = self._tokens(key, now)
        if tokens >= 1.0 - _EPSILON:
            tokens = max(0.0, tokens - 1.0)
            self._buckets[key] = (tokens, now)
            return Decision(True, self.burst, math.floor(tokens + _EPSILON), 0)
        self._buckets[key] = (tokens, now)
        return Decision(False, self.burst, 0, self.retry_after(key))

    def has_token(self, key: str) -> bool:
        """True when ``take_now(key)`` would be allowed (nothing is taken)."""
        return self._tokens(key, self._clock()) >= 1.0 - _EPSILON

    def retry_after(self, key: str) -> int:
        """Whole seconds (at least 1) until ``key`` has a token again."""
        tokens = self._tokens(key, self._clock())
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def _tokens(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(self.burst)
        tokens, last = bucket
        return min(float(self.burst), tokens + max(0.0, now - last) * self.rate)

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < self._refill_seconds:
            return
        self._last_sweep = now
        full_since = now - self._refill_seconds
        idle = [key for key, (_, last) in self._buckets.items() if last <= full_since]
        for key in idle:
            del self._buckets[key]


# One atomic step on the Redis server: refill by the server's own clock (shared by every
# host), take a token if there is one, and expire the bucket once it would be full again.
_TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(stored[1])
local ts = tonumber(stored[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every server process and host of a deployment.

    If Redis cannot be reached the request is let through (fail open): an outage of
    the limiter must not become an outage of ingestion. Each failure is counted in
    ``failures`` and logged at most once a minute.
    """

    def __init__(
        self,
        url: str,
        rate: float,
        burst: int,
        *,
        prefix: str = "opencdp:bucket:",
        clock: Clock = time.monotonic,
    ) -> None:
        import redis.asyncio

        self.rate, self.burst = rate, burst
        self.failures = 0
        self._prefix = prefix
        self._clock = clock
        self._last_warning: float | None = None
        self._redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self._script = self._redis.register_script(_TAKE_SCRIPT)

    async def take(self, key: str) -> Decision:
        import redis.exceptions

        try:
            allowed, tokens = await self._script(
                keys=[self._prefix + key], args=[self.rate, self.burst]
            )
        except (redis.exceptions.RedisError, OSError):
            self._note_failure()
            return Decision(True, self.burst, self.burst, 0)
        left = float(tokens)
        if int(allowed) == 1:
            return Decision(True, self.burst, math.floor(left + _EPSILON), 0)
        return Decision(False, self.burst, 0, max(1, math.ceil((1.0 - left) / self.rate)))

    async def close(self) -> None:
        await self._redis.aclose()

    def _note_failure(self) -> None:
        self.failures += 1
        now = self._clock()
        if self._last_warning is None or now - self._last_warning >= 60:
            self._last_warning = now
            log.warning(
                "rate limiter: Redis unreachable, serving without a limit (fail open)",
                extra={"failures": self.failures},
            )


def limiter_for(settings: Settings) -> RateLimiter:
    """Redis-shared buckets when ``redis_url`` is set, else this process's memory."""
    if settings.redis_url:
        return RedisRateLimiter(settings.redis_url, settings.rate, settings.burst)
    return MemoryRateLimiter(settings.rate, settings.burst)
