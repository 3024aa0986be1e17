"""The retry schedule: parsing OPENCDP_DESTINATION_RETRIES, jitter, Retry-After, death."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opencdp.destinations.schedule import (
    DEFAULT_RETRIES,
    JITTER,
    RetrySchedule,
    parse_schedule,
    retry_after_seconds,
)


def test_the_default_schedule_is_the_specs() -> None:
    assert parse_schedule(DEFAULT_RETRIES) == (5, 30, 120, 600, 3600, 10800, 21600, 43200)


@pytest.mark.parametrize(
    "text, error",
    [
        ("", "''"),
        ("5s,,30s", "''"),
        ("5x", "'5x'"),
        ("-5s", "'-5s'"),
        ("0s", "above zero"),
        ("1.5s", "'1.5s'"),
        ("9999999s", "'9999999s'"),
        ("5s;30s", "'5s;30s'"),
    ],
)
def test_a_bad_schedule_names_the_bad_part(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_schedule(text)


@given(st.integers(min_value=1, max_value=8), st.integers(min_value=0, max_value=2**32))
def test_each_wait_is_the_schedules_within_the_jitter(attempts: int, seed: int) -> None:
    schedule = RetrySchedule(parse_schedule(DEFAULT_RETRIES), random.Random(seed))
    wait = schedule.wait_after(attempts)
    base = schedule.waits[attempts - 1]
    assert wait is not None
    assert base * (1 - JITTER) <= wait <= base * (1 + JITTER)


def test_jitter_spreads_deliveries_that_failed_together() -> None:
    schedule = RetrySchedule((60.0,), random.Random(7))
    waits = {round(schedule.wait_after(1) or 0, 3) for _ in range(50)}
    assert len(waits) > 40


def test_after_the_last_wait_the_delivery_is_dead() -> None:
    schedule = RetrySchedule((5.0, 30.0))
    assert schedule.attempts == 3
    assert schedule.wait_after(2) is not None
    assert schedule.wait_after(3) is None
    assert schedule.wait_after(3, retry_after=1) is None


def test_retry_after_is_honoured_up_to_the_longest_wait() -> None:
    schedule = RetrySchedule((5.0, 30.0))
    assert schedule.wait_after(1, retry_after=12) == 12
    assert schedule.wait_after(1, retry_after=10**9) == 30
    assert schedule.wait_after(1, retry_after=-3) == 0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds(formatdate(now + 90, usegmt=True), now) == 90
    assert retry_after_seconds(formatdate(now - 90, usegmt=True), now) == 0
    for unreadable in (None, "", "soon", "1e9", "-5", "Mon, 99 Foo 2024"):
        assert retry_after_seconds(unreadable, now) is None
    assert retry_after_seconds("9" * 40, now) == 999_999_999
