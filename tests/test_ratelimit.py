"""The in-memory token bucket, driven by a hand-moved clock."""

from __future__ import annotations

import asyncio

import pytest

from opencdp.ratelimit import Decision, MemoryRateLimiter, RateLimiter


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(rate: float, burst: int, clock: FakeClock) -> MemoryRateLimiter:
    return MemoryRateLimiter(rate=rate, burst=burst, clock=clock)


def take(limiter: RateLimiter, key: str = "t1") -> Decision:
    return asyncio.run(limiter.take(key))


def test_a_new_bucket_is_full_and_allows_the_whole_burst() -> None:
    bucket = limiter(rate=1, burst=5, clock=FakeClock())
    decisions = [bucket.take_now("t1") for _ in range(5)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert {d.limit for d in decisions} == {5}
    assert {d.retry_after for d in decisions} == {0}


def test_over_the_burst_is_refused_with_retry_after() -> None:
    bucket = limiter(rate=1, burst=2, clock=FakeClock())
    bucket.take_now("t1")
    bucket.take_now("t1")
    refused = bucket.take_now("t1")
    assert refused == Decision(allowed=False, limit=2, remaining=0, retry_after=1)


def test_tokens_refill_at_the_rate() -> None:
    clock = FakeClock()
    bucket = limiter(rate=2, burst=3, clock=clock)
    for _ in range(3):
        assert bucket.take_now("t1").allowed
    assert not bucket.take_now("t1").allowed
    clock.advance(0.25)
    assert not bucket.take_now("t1").allowed  # half a token
    clock.advance(0.25)
    assert bucket.take_now("t1") == Decision(True, 3, 0, 0)
    clock.advance(1.0)
    assert bucket.take_now("t1").remaining == 1


def test_refill_stops_at_the_burst() -> None:
    clock = FakeClock()
    bucket = limiter(rate=10, burst=4, clock=clock)
    bucket.take_now("t1")
    clock.advance(3600)
    assert bucket.take_now("t1").remaining == 3


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    clock = FakeClock()
    bucket = limiter(rate=0.25, burst=1, clock=clock)  # one request every 4 s
    assert bucket.take_now("t1").allowed
    assert bucket.take_now("t1").retry_after == 4
    clock.advance(1.5)
    assert bucket.take_now("t1").retry_after == 3  # 2.5 s left
    clock.advance(2.4)
    assert bucket.take_now("t1").retry_after == 1  # 0.1 s left


def test_retry_after_is_at_least_one_second_on_a_fast_bucket() -> None:
    bucket = limiter(rate=100, burst=1, clock=FakeClock())
    bucket.take_now("t1")
    assert bucket.take_now("t1").retry_after == 1


def test_refused_requests_do_not_consume_tokens() -> None:
    clock = FakeClock()
    bucket = limiter(rate=1, burst=1, clock=clock)
    bucket.take_now("t1")
    for _ in range(10):
        assert not bucket.take_now("t1").allowed
    clock.advance(1.0)
    assert bucket.take_now("t1").allowed


def test_keys_have_separate_buckets() -> None:
    bucket = limiter(rate=1, burst=1, clock=FakeClock())
    assert bucket.take_now("a").allowed
    assert not bucket.take_now("a").allowed
    assert bucket.take_now("b").allowed


def test_take_is_the_async_protocol_method() -> None:
    clock = FakeClock()
    shared: RateLimiter = limiter(rate=1, burst=2, clock=clock)
    assert take(shared) == Decision(True, 2, 1, 0)
    assert take(shared) == Decision(True, 2, 0, 0)
    assert not take(shared).allowed
    asyncio.run(shared.close())


def test_buckets_full_again_are_dropped() -> None:
    clock = FakeClock()
    bucket = limiter(rate=10, burst=10, clock=clock)  # full again after 1 s idle
    for n in range(1000):
        bucket.take_now(f"t{n}")
    assert len(bucket) == 1000
    clock.advance(0.5)
    bucket.take_now("busy")
    assert len(bucket) == 1001  # nothing is full yet
    clock.advance(0.6)
    bucket.take_now("busy")
    assert len(bucket) == 1  # only the recently used bucket is kept


def test_dropping_a_bucket_does_not_change_decisions() -> None:
    clock = FakeClock()
    bucket = limiter(rate=1, burst=3, clock=clock)
    bucket.take_now("t1")
    clock.advance(10)
    bucket.take_now("other")  # sweeps t1
    assert bucket.take_now("t1").remaining == 2


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (1, 0)])
def test_nonsense_settings_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        MemoryRateLimiter(rate=rate, burst=burst)
