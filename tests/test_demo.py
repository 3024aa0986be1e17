"""``opencdp demo``: sample data in the past only, loaded once however often it runs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import fields

from click.testing import CliRunner, Result

from opencdp.cli import main
from opencdp.config import Settings
from opencdp.demo import DAY_MS, DEMO_WORKSPACE, demo_calls
from opencdp.models import EventQuery, ProfileQuery
from opencdp.store import open_store

CLEAN_ENV: dict[str, str | None] = {f"OPENCDP_{f.name.upper()}": None for f in fields(Settings)}
NOW = 1_764_547_200_000  # 2025-12-01T00:00:00Z


def demo(db: str, *args: str, **env: str) -> Result:
    result = CliRunner().invoke(main, ["demo", "--db", db, *args], env={**CLEAN_ENV, **env})
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result


def stored(db: str) -> tuple[int, int, int]:
    """Events, profiles and the latest eventTime in the demo workspace."""

    async def read() -> tuple[int, int, int]:
        store = open_store(db)
        await store.start()
        try:
            profiles = await store.list_profiles(DEMO_WORKSPACE, ProfileQuery(size=1000))
            page = await store.list_events(DEMO_WORKSPACE, EventQuery(size=1, sort="desc"))
            latest = page.events[0].event_time
            return page.total, len(profiles.profiles), latest
        finally:
            await store.stop()

    return asyncio.run(read())


def test_every_sample_event_lies_in_the_30_days_before_now() -> None:
    times = [call.event_time for _, call in demo_calls(500, now=NOW)]
    assert max(times) <= NOW
    assert min(times) >= NOW - 30 * DAY_MS


def test_the_sample_is_the_same_whenever_it_is_made() -> None:
    def ids(now: int) -> list[str | None]:
        return [call.message_id for _, call in demo_calls(50, now=now)]

    first = ids(NOW)
    assert first == ids(NOW + 3 * DAY_MS)
    assert None not in first and len(set(first)) == len(first)


def test_running_it_twice_stores_nothing_twice(db_url: str) -> None:
    first = demo(db_url, "--customers", "15")
    events, profiles, latest = stored(db_url)
    assert profiles == 15 and events >= 30
    assert latest <= time.time_ns() // 1_000_000  # nothing in the future
    assert f"{events} new events for 15 customers" in first.stderr
    again = demo(db_url, "--customers", "15")
    assert stored(db_url)[:2] == (events, profiles)
    assert f"0 new events for 15 customers in demo/web/shop ({events} were" in again.stderr
    assert again.stdout != first.stdout  # a token of its own each time


def test_it_prints_the_address_serve_would_use(tmp_path: object) -> None:
    db = f"sqlite:///{tmp_path}/demo.db"
    events = "/track/demo/web/shop/v1/events?size=5"
    result = demo(db, "--customers", "1", "--port", "9321")
    assert f"http://127.0.0.1:9321{events}" in result.stderr
    result = demo(db, "--customers", "1", OPENCDP_HOST="0.0.0.0", OPENCDP_PORT="8088")
    assert f"http://127.0.0.1:8088{events}" in result.stderr
    result = demo(db, "--customers", "1", OPENCDP_PUBLIC_URL="https://cdp.example.com")
    assert f"https://cdp.example.com{events}" in result.stderr
