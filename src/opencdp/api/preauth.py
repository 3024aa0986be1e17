"""What a request may cost the server before its token is known (SPEC §8's exception).

A ``/v1/*`` call with its write key only in the body must be read (and inflated)
before the token check. So that clients without a token cannot starve ingestion:

- an address whose unauthenticated bodies keep failing (no key, an unknown key, bad
  gzip) gets ``429`` before its body is read, once it has spent its allowance
  (``OPENCDP_ANONYMOUS_RATE`` failures a second per address, twice that at once);
- gzip bodies are inflated in a worker thread (zlib lets the event loop run
  meanwhile), at most ``OPENCDP_PREAUTH_INFLATIONS`` at once per process, with a
  bounded queue behind them (``503`` past it);
- the body is searched for a well-formed ``"writeKey"`` before it is parsed: without
  one that names a live token it is refused without any JSON parsing. (A key written
  with JSON escapes is not found: no SDK writes one.)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TypeVar

from opencdp.auth import TOKEN_PATTERN
from opencdp.errors import RateLimited, Unavailable
from opencdp.ratelimit import MemoryRateLimiter

T = TypeVar("T")

#: At most this many bodies wait for an inflation slot per slot; more answer 503.
_QUEUE_PER_SLOT = 8
#: Candidate keys tried per body (a body may hold several: nested, repeated).
MAX_CANDIDATES = 4
_WRITE_KEY = re.compile(rb'"writeKey"\s*:\s*"(' + TOKEN_PATTERN.encode() + rb')"')


def candidate_keys(body: bytes) -> list[str]:
    """Token texts that appear as a ``"writeKey"`` value anywhere in ``body``, deduplicated."""
    found: dict[str, None] = {}
    for match in _WRITE_KEY.finditer(body):
        found[match.group(1).decode("ascii")] = None
        if len(found) >= MAX_CANDIDATES:
            break
    return list(found)


class PreAuth:
    """This process's allowance for unauthenticated work: inflation slots, failure buckets."""

    def __init__(self, inflations: int, anonymous_rate: float) -> None:
        self.inflations = inflations
        self.in_flight = 0  # inflations running or waiting for a slot (tests read it)
        self._slots = asyncio.Semaphore(inflations)
        self._failures = MemoryRateLimiter(anonymous_rate, max(1, round(anonymous_rate * 2)))

    def admit(self, address: str | None) -> None:
        """429 when ``address`` has used up its failed unauthenticated attempts."""
        if address is not None and not self._failures.has_token(address):
            raise RateLimited(self._failures.retry_after(address))

    def failed(self, address: str | None) -> None:
        """Count one failed unauthenticated attempt against ``address``."""
        if address is not None:
            self._failures.take_now(address)

    async def offload(self, work: Callable[[], T]) -> T:
        """Run ``work`` (an inflation) in a worker thread, within the slots and queue."""
        if self.in_flight >= self.inflations * (1 + _QUEUE_PER_SLOT):
            raise Unavailable(
                "too many unauthenticated gzip bodies at once; "
                "send the write key as the HTTP Basic user name"
            )
        self.in_flight += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(work)
        finally:
            self.in_flight -= 1
