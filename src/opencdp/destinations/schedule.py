"""When a failed delivery is tried again: the retry schedule, its jitter, ``Retry-After``.

The schedule is a list of waits, one per retry (SPEC §13: 5 s, 30 s, 2 min, 10 min,
1 h, 3 h, 6 h, 12 h), set with ``OPENCDP_DESTINATION_RETRIES=5s,30s,2m,…``; after the
last one a delivery is dead. Each wait is spread by up to ±20% so that the deliveries
that failed together (a receiver outage) do not all come back at the same second. A
receiver that answers 429 or 503 with ``Retry-After`` is waited for as long as it asks,
but never longer than the schedule's longest wait (a hostile or broken receiver could
otherwise park a delivery for years).
"""

from __future__ import annotations

import email.utils
import random
import re

DEFAULT_RETRIES = "5s,30s,2m,10m,1h,3h,6h,12h"
JITTER = 0.2
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WAIT = re.compile(r"(\d{1,6})(s|m|h|d)")


def parse_schedule(text: str) -> tuple[float, ...]:
    """``"5s,30s,2m"`` → ``(5.0, 30.0, 120.0)``; ValueError naming the bad part."""
    waits = []
    for part in text.split(","):
        match = _WAIT.fullmatch(part.strip())
        if match is None:
            raise ValueError(
                f"retry wait {part.strip()!r} is not a number with s, m, h or d (e.g. 30s, 2m)"
            )
        waits.append(float(int(match[1]) * _UNITS[match[2]]))
    if not waits or any(w <= 0 for w in waits):
        raise ValueError("the retry schedule needs at least one wait above zero")
    return tuple(waits)


class RetrySchedule:
    def __init__(self, waits: tuple[float, ...], rng: random.Random | None = None) -> None:
        self.waits = waits
        self._rng = rng or random.Random()

    @property
    def attempts(self) -> int:
        """Attempts in all: the first and one per wait."""
        return len(self.waits) + 1

    def wait_after(self, attempts: int, retry_after: float | None = None) -> float | None:
        """Seconds before the next attempt after ``attempts`` failed ones; None when the
        delivery is dead. ``retry_after``: what the receiver asked (429/503 only)."""
        if attempts >= self.attempts:
            return None
        if retry_after is not None:
            return min(max(retry_after, 0.0), max(self.waits))
        wait = self.waits[attempts - 1]
        return wait * (1 + self._rng.uniform(-JITTER, JITTER))


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header in seconds from ``now`` (delta-seconds or an HTTP date);
    None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value[:9]))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - now, 0.0)
