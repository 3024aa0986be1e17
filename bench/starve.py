"""``python -m bench.starve [DB_URL]``: one tenant's expensive reads against another's.

Loads 200,000 events into one workspace (through ``Store.bulk_load``) and one profile
into another, then measures the second workspace's traits look-up (p50 and max, ms)
alone and while eight tasks loop a filter on an undeclared property over the first
(each a scan of its events). In-process against the store, with its default read
limits (``OPENCDP_READ_TIMEOUT_MS``, ``OPENCDP_WORKSPACE_READS``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Iterator

from opencdp.errors import OpenCDPError
from opencdp.ingest import event_action_name
from opencdp.models import (
    BulkEvent,
    BulkProfile,
    Call,
    EventQuery,
    ProfileRef,
    Workspace,
)
from opencdp.store import Store, open_store

BUSY = Workspace("starve", "web", "busy")
OTHER = Workspace("starve", "web", "other")
SCAN = EventQuery(properties=(("never.declared", "x"),), size=1)
T0 = 1_700_000_000_000


def customers(count: int = 2000, events_each: int = 100) -> Iterator[BulkProfile]:
    for n in range(count):
        events = [
            BulkEvent(
                event_action_name("Product Added"), T0 + n * events_each + i,
                T0 + n * events_each + i,
                {"action": "track", "event": "Product Added", "properties": {"i": i, "n": n}},
            )
            for i in range(events_each)
        ]
        yield BulkProfile(f"u{n}", {"email": f"u{n}@x.com"}, T0, [], events)


async def look_up_ms(store: Store) -> float:
    started = time.perf_counter()
    await store.find_profiles(OTHER, ProfileRef("userId", "other"))
    return (time.perf_counter() - started) * 1000


async def scans(store: Store, until: float) -> tuple[int, int]:
    """Scan until ``until``; how many scans ran and how many ended with an error answer."""
    ran = refused = 0
    while time.monotonic() < until:
        try:
            await store.list_events(BUSY, SCAN)
        except OpenCDPError:
            refused += 1
        ran += 1
    return ran, refused


async def measure(url: str, seconds: float) -> dict[str, object]:
    store = open_store(url)
    await store.bulk_load(BUSY, customers())
    await store.start()
    try:
        identify = Call(
            action="identify", event_action="identify", user_id="other", anonymous_id=None,
            event_time=T0, received_time=T0, raw={"action": "identify", "userId": "other"},
            traits={"plan": "pro"},
        )
        await store.append_calls(OTHER, [identify])
        alone = [await look_up_ms(store) for _ in range(50)]
        until = time.monotonic() + seconds
        hogs = [asyncio.create_task(scans(store, until)) for _ in range(8)]
        await asyncio.sleep(0.5)
        busy = []
        while time.monotonic() < until - 0.5:
            busy.append(await look_up_ms(store))
            await asyncio.sleep(0.01)
        scanned = await asyncio.gather(*hogs)
    finally:
        await store.stop()
    return {
        "alone_p50_ms": round(statistics.median(alone), 2),
        "beside_scans_p50_ms": round(statistics.median(busy), 2),
        "beside_scans_max_ms": round(max(busy), 1),
        "scans_run_and_refused": scanned,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db", nargs="?", help="database URL (default: a new SQLite file)")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        url = args.db or f"sqlite:///{work}/starve.db"
        print(json.dumps(asyncio.run(measure(url, args.seconds))))


if __name__ == "__main__":
    main()
