"""Token-bucket rate limiting, one bucket per key (a token id).

A bucket holds at most ``burst`` tokens and refills at ``rate`` tokens a second;
every request takes one. Buckets start full. The clock is injected so tests can
drive time by hand.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]
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
        wait = max(1, math.ceil((1.0 - tokens) / self.rate))
        return Decision(False, self.burst, 0, wait)

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
